# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
BUILD      ?= build
BUILD_ASAN ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_GEN  := -G Ninja
SOAK_SEEDS ?= 1..20000

.PHONY: all deps build build-asan demo test test-fast test-asan soak fuzz format clean

all: build

deps:
	@bash scripts/install-deps.sh

$(BUILD)/build.ninja: | deps
	cmake -S . -B $(BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOCKSTEP_WERROR=ON

# The sanitizer tree only runs the tests: it leaves out what no test runs (benchmarks, the
# operators' subcommands); the release tree builds everything.
$(BUILD_ASAN)/build.ninja: | deps
	cmake -S . -B $(BUILD_ASAN) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Debug -DLOCKSTEP_WERROR=ON \
	  -DLOCKSTEP_SANITIZE=ON -DCMAKE_CXX_FLAGS=-O1 -DLOCKSTEP_BUILD_BENCHMARKS=OFF \
	  -DLOCKSTEP_BUILD_OPERATOR_COMMANDS=OFF

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

build-asan: deps $(BUILD_ASAN)/build.ninja
	cmake --build $(BUILD_ASAN) -j $(JOBS)

demo: build
	./$(BUILD)/lockstep demo

# Every test, in the normal build and again under AddressSanitizer + UBSan.
test: test-fast test-asan

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan: build-asan
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  LOCKSTEP_SIM_SEEDS_SCALE=0.1 ctest --output-on-failure -j $(JOBS) -LE style

soak: build
	./$(BUILD)/lockstep sim --mode failstop --seeds $(SOAK_SEEDS)

fuzz: deps
	cmake -S . -B build-fuzz $(CMAKE_GEN) -DCMAKE_CXX_COMPILER=clang++ -DLOCKSTEP_FUZZ=ON \
	  -DLOCKSTEP_TESTS=OFF -DLOCKSTEP_WERROR=OFF
	cmake --build build-fuzz -j $(JOBS)
	for f in build-fuzz/*_fuzz; do $$f -max_total_time=60 -max_len=4096 || exit 1; done

format:
	clang-format -i $$(git ls-files '*.h' '*.cc')

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) build-fuzz
