#include "storage/memory_storage.h"

#include <algorithm>
#include <cstring>

#include "core/assert.h"

namespace lockstep::storage {

namespace {

// splitmix64 (Steele et al. 2014), written out so a seed means the same crash with any standard
// library; the simulator uses the same mixer (sim/random.h), which this layer cannot depend on.
uint64_t next_random(uint64_t& state) {
  state += 0x9e3779b97f4a7c15ULL;
  uint64_t z = state;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Uniform enough in [0, bound] for fault injection (bound is small next to 2^64).
uint64_t random_up_to(uint64_t& state, uint64_t bound) {
  return next_random(state) % (bound + 1);
}

}  // namespace

class MemoryStorage::MemoryFile final : public File {
 public:
  MemoryFile(MemoryStorage& storage, InodeId inode, std::string name)
      : storage_(storage), inode_(inode), name_(std::move(name)), epoch_(storage.epoch_) {
    storage_.inode_of(inode_).open_handles++;
  }
  ~MemoryFile() override {
    // After a crash the inode may be gone: the handle belonged to the dead process.
    if (epoch_ != storage_.epoch_) return;
    auto it = storage_.inodes_.find(inode_);
    if (it != storage_.inodes_.end()) it->second.open_handles--;
  }
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;

  uint64_t size() const override { return inode().current.size(); }

  size_t read(uint64_t offset, std::span<uint8_t> out) const override {
    const Bytes& bytes = inode().current;
    if (offset >= bytes.size()) return 0;
    size_t n = std::min<uint64_t>(out.size(), bytes.size() - offset);
    if (n > 0) std::memcpy(out.data(), bytes.data() + offset, n);  // out may be empty, data() null
    return n;
  }

  void write_at(uint64_t offset, std::span<const uint8_t> data) override {
    record(Operation{Operation::Kind::kWrite, offset, Bytes(data.begin(), data.end())});
    storage_.write_count_++;
  }

  void append(std::span<const uint8_t> data) override { write_at(size(), data); }

  void truncate(uint64_t new_size) override {
    record(Operation{Operation::Kind::kResize, new_size, {}});
  }

  void preallocate(uint64_t new_size) override {
    if (new_size > size()) record(Operation{Operation::Kind::kResize, new_size, {}});
  }

  void sync() override {
    Inode& node = inode();
    node.durable = node.current;
    node.unsynced.clear();
    storage_.data_sync_count_++;
  }

 private:
  Inode& inode() const {
    storage_.check_epoch(epoch_);
    return storage_.inode_of(inode_);
  }
  void record(Operation operation) {
    Inode& node = inode();
    apply(node.current, operation);
    node.unsynced.push_back(std::move(operation));
  }

  MemoryStorage& storage_;
  InodeId inode_;
  std::string name_;
  uint64_t epoch_;
};

MemoryStorage::Inode& MemoryStorage::inode_of(InodeId id) {
  auto it = inodes_.find(id);
  if (it == inodes_.end()) throw StorageError("memory: inode " + std::to_string(id) + " is gone");
  return it->second;
}

void MemoryStorage::check_epoch(uint64_t epoch) const {
  if (epoch != epoch_) throw StorageError("memory: file handle opened before a crash");
}

void MemoryStorage::apply(Bytes& bytes, const Operation& operation) {
  switch (operation.kind) {
    case Operation::Kind::kWrite:
      if (bytes.size() < operation.offset + operation.data.size()) {
        bytes.resize(operation.offset + operation.data.size(), 0);
      }
      std::copy(operation.data.begin(), operation.data.end(),
                bytes.begin() + static_cast<ptrdiff_t>(operation.offset));
      return;
    case Operation::Kind::kResize:
      bytes.resize(operation.offset, 0);
      return;
  }
}

std::unique_ptr<File> MemoryStorage::open(std::string_view name, OpenMode mode) {
  if (name.empty() || name.find('/') != std::string_view::npos) {
    throw StorageError("memory: invalid file name '" + std::string(name) + "'");
  }
  auto it = names_.find(name);
  if (mode == OpenMode::kExisting) {
    if (it == names_.end()) throw StorageError("memory: no file " + std::string(name));
    return std::make_unique<MemoryFile>(*this, it->second, std::string(name));
  }
  if (it != names_.end()) throw StorageError("memory: file exists " + std::string(name));
  InodeId id = next_inode_++;
  inodes_.emplace(id, Inode{});
  names_.emplace(std::string(name), id);
  return std::make_unique<MemoryFile>(*this, id, std::string(name));
}

std::vector<std::string> MemoryStorage::list() const {
  std::vector<std::string> names;
  for (const auto& [name, id] : names_)
    names.push_back(name);  // std::map: already sorted
  return names;
}

void MemoryStorage::remove(std::string_view name) {
  auto it = names_.find(name);
  if (it == names_.end()) throw StorageError("memory: no file " + std::string(name));
  names_.erase(it);
}

void MemoryStorage::sync_directory() {
  durable_names_ = names_;
  directory_sync_count_++;
  // An inode no name refers to, durably or not, and no handle holds is unreachable for good.
  std::erase_if(inodes_, [&](const auto& entry) {
    if (entry.second.open_handles > 0) return false;
    for (const auto& [name, id] : names_)
      if (id == entry.first) return false;
    return true;
  });
}

void MemoryStorage::crash(std::optional<uint64_t> torn_seed) {
  epoch_++;
  names_ = durable_names_;
  uint64_t random_state = torn_seed.value_or(0);
  std::map<InodeId, Inode> survivors;
  for (auto& [id, node] : inodes_) {
    bool named = false;
    for (const auto& [name, named_id] : names_)
      named = named || named_id == id;
    if (!named) continue;
    Bytes bytes = std::move(node.durable);
    if (torn_seed.has_value() && !node.unsynced.empty()) {
      // Keep `kept` whole operations, then maybe the first part of the next write.
      uint64_t kept = random_up_to(random_state, node.unsynced.size());
      for (uint64_t i = 0; i < kept; i++)
        apply(bytes, node.unsynced[i]);
      if (kept < node.unsynced.size() && node.unsynced[kept].kind == Operation::Kind::kWrite &&
          next_random(random_state) % 2) {
        Operation partial = node.unsynced[kept];
        partial.data.resize(random_up_to(random_state, partial.data.size()));
        apply(bytes, partial);
      }
    }
    Inode survivor;
    survivor.durable = bytes;
    survivor.current = std::move(bytes);
    survivors.emplace(id, std::move(survivor));
  }
  inodes_ = std::move(survivors);
}

void MemoryStorage::corrupt(std::string_view name, uint64_t offset, uint8_t mask) {
  auto it = names_.find(name);
  if (it == names_.end()) throw StorageError("memory: no file " + std::string(name));
  Inode& node = inode_of(it->second);
  LOCKSTEP_ASSERT(offset < node.current.size(), "corrupt: offset past the end of the file");
  node.current[offset] ^= mask;
  if (offset < node.durable.size()) node.durable[offset] ^= mask;
}

void MemoryStorage::put_durable_file(std::string_view name, Bytes contents) {
  InodeId id = next_inode_++;
  Inode node;
  node.durable = contents;
  node.current = std::move(contents);
  inodes_.emplace(id, std::move(node));
  names_[std::string(name)] = id;
  durable_names_[std::string(name)] = id;
}

Bytes MemoryStorage::contents(std::string_view name) const {
  auto it = names_.find(name);
  if (it == names_.end()) throw StorageError("memory: no file " + std::string(name));
  return inodes_.at(it->second).current;
}

}  // namespace lockstep::storage
