// libFuzzer target for everything in the key-value path that reads bytes a peer or a disk can
// forge: KvMachine::apply and decode_command (from clients), decode_result (from replicas),
// KvMachine::restore and Service::restore (from state transfer and snapshot files).
//
// Beyond "never crash", it checks the contracts that make those readers safe:
//  - apply always returns a decodable result, and an error result leaves the state unchanged;
//  - a decoded command or result survives encode + decode unchanged;
//  - a state that restore accepted round-trips through snapshot() and restore() unchanged (the
//    input itself need not be canonical: wire.h accepts over-long varints);
//  - a restore that throws leaves the machine or service as it was.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>

#include "apps/kv/kv_machine.h"
#include "core/types.h"
#include "statemachine/service.h"

namespace {

using namespace lockstep;

void check(bool condition) {
  if (!condition) std::abort();
}

// A machine with some state, so that restore failures have something to keep.
kv::KvMachine seeded_machine() {
  kv::KvMachine machine;
  kv::Command put;
  put.op = kv::Op::kPut;
  put.key = "seed";
  put.value = "42";
  machine.apply(kv::encode_command(put));
  return machine;
}

void fuzz_command(std::span<const uint8_t> input) {
  std::optional<kv::Command> command = kv::decode_command(input);
  if (command) check(kv::decode_command(kv::encode_command(*command)) == command);

  kv::KvMachine machine = seeded_machine();
  Bytes before = machine.snapshot();
  std::optional<kv::Result> result = kv::decode_result(machine.apply(input));
  check(result.has_value());
  if (!command || result->code == kv::ResultCode::kError) check(machine.snapshot() == before);

  std::optional<kv::Result> decoded = kv::decode_result(input);
  if (decoded) check(kv::decode_result(kv::encode_result(*decoded)) == decoded);
}

void fuzz_machine_restore(std::span<const uint8_t> input) {
  kv::KvMachine machine = seeded_machine();
  Bytes before = machine.snapshot();
  try {
    machine.restore(input);
    Bytes accepted = machine.snapshot();
    kv::KvMachine copy;
    copy.restore(accepted);
    check(copy.snapshot() == accepted && copy.data() == machine.data());
  } catch (const SnapshotError&) {
    check(machine.snapshot() == before);
  }
}

void fuzz_service_restore(std::span<const uint8_t> input) {
  Service service(std::make_unique<kv::KvMachine>(seeded_machine()));
  service.execute(ClientRequest{ClientId{1}, Sequence{1}, Sequence{1}, Bytes{}, {}});
  Bytes before = service.snapshot();
  try {
    service.restore(input);
    Bytes accepted = service.snapshot();
    Service copy(std::make_unique<kv::KvMachine>());
    copy.restore(accepted);
    check(copy.snapshot() == accepted);
    // A restored table must still be usable.
    service.execute(ClientRequest{ClientId{1}, Sequence{2}, Sequence{1}, Bytes{}, {}});
  } catch (const SnapshotError&) {
    check(service.snapshot() == before);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The first byte picks the target, so one corpus grows inputs for all of them; a service
  // snapshot's magic is unlikely to be hit by chance, so the selector also lets the fuzzer skip it
  // by prepending the magic itself.
  if (size == 0) return 0;
  std::span<const uint8_t> input(data + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      fuzz_command(input);
      break;
    case 1:
      fuzz_machine_restore(input);
      break;
    case 2:
      fuzz_service_restore(input);
      break;
    case 3: {
      static constexpr uint8_t kMagic[] = {'L', 'S', 'S', 'V', 1};
      Bytes with_header(std::begin(kMagic), std::end(kMagic));
      with_header.insert(with_header.end(), input.begin(), input.end());
      fuzz_service_restore(with_header);
      break;
    }
  }
  return 0;
}
