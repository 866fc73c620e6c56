// crypto/crypto.h on libsodium. Every entry point that reaches libsodium first makes sure
// sodium_init() has run (it picks the fastest BLAKE2b and Ed25519 code for this CPU and seeds the
// random source); a function-local static makes that once and thread-safe.
#include "crypto/crypto.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <utility>

namespace lockstep::crypto {
namespace {

void ensure_sodium() {
  static const bool initialized = sodium_init() >= 0;
  if (!initialized) {
    std::fputs("lockstep: libsodium failed to initialize\n", stderr);
    std::abort();
  }
}

static_assert(crypto_sign_PUBLICKEYBYTES == sizeof(PublicKey));
static_assert(crypto_sign_SECRETKEYBYTES == sizeof(SecretKey));
static_assert(crypto_sign_BYTES == sizeof(Signature));
static_assert(crypto_sign_SEEDBYTES == 32);

// ---- Ed25519 ----------------------------------------------------------------------------------

// Whether `keys` is a consistent Ed25519 pair: the secret key is libsodium's seed || public key,
// and the public key is the one the seed gives.
bool is_ed25519_pair(const KeyPair& keys) {
  KeyPair from_seed;
  crypto_sign_seed_keypair(from_seed.public_key.data(), from_seed.secret_key.data(),
                           keys.secret_key.data());
  const bool same = sodium_memcmp(from_seed.public_key.data(), keys.public_key.data(),
                                  keys.public_key.size()) == 0 &&
                    sodium_memcmp(from_seed.secret_key.data(), keys.secret_key.data(),
                                  keys.secret_key.size()) == 0;
  sodium_memzero(from_seed.secret_key.data(), from_seed.secret_key.size());
  return same;
}

class Ed25519Signer final : public Signer {
 public:
  explicit Ed25519Signer(const KeyPair& keys) : keys_(keys) {}
  ~Ed25519Signer() override { sodium_memzero(keys_.secret_key.data(), keys_.secret_key.size()); }

  Signature sign(std::span<const uint8_t> message) const override {
    Signature signature{};
    crypto_sign_detached(signature.data(), nullptr, message.data(), message.size(),
                         keys_.secret_key.data());
    return signature;
  }
  const PublicKey& public_key() const override { return keys_.public_key; }

 private:
  KeyPair keys_;
};

bool ed25519_verify(const PublicKey& key, std::span<const uint8_t> message,
                    const Signature& signature) {
  return crypto_sign_verify_detached(signature.data(), message.data(), message.size(),
                                     key.data()) == 0;
}

class Ed25519Verifier final : public Verifier {
 public:
  explicit Ed25519Verifier(KeyDirectory directory) : directory_(std::move(directory)) {}

  bool verify_replica(ReplicaId replica, std::span<const uint8_t> message,
                      const Signature& signature) const override {
    if (replica.value >= directory_.replicas.size()) return false;
    return ed25519_verify(directory_.replicas[replica.value], message, signature);
  }
  bool verify_client(uint32_t principal, std::span<const uint8_t> message,
                     const Signature& signature) const override {
    auto it = directory_.clients.find(principal);
    if (it == directory_.clients.end()) return false;
    return ed25519_verify(it->second, message, signature);
  }
  bool knows_client(uint32_t principal) const override {
    return directory_.clients.contains(principal);
  }
  uint32_t replica_count() const override {
    return static_cast<uint32_t>(directory_.replicas.size());
  }

 private:
  KeyDirectory directory_;
};

// ---- SimScheme --------------------------------------------------------------------------------

// The MAC key is the first half of the 64-byte secret.
using MacKey = std::array<uint8_t, 32>;

MacKey mac_key_of(const SecretKey& secret) {
  MacKey key{};
  std::copy(secret.begin(), secret.begin() + key.size(), key.begin());
  return key;
}

PublicKey sim_public_key_of(const SecretKey& secret) {
  PublicKey key{};
  crypto_generichash(key.data(), key.size(), secret.data(), secret.size(), nullptr, 0);
  return key;
}

Signature sim_sign(const MacKey& key, std::span<const uint8_t> message) {
  Signature signature{};  // the second half stays zero
  crypto_generichash(signature.data(), 32, message.data(), message.size(), key.data(), key.size());
  return signature;
}

bool sim_verify(const MacKey& key, std::span<const uint8_t> message, const Signature& signature) {
  const Signature expected = sim_sign(key, message);
  return sodium_memcmp(expected.data(), signature.data(), expected.size()) == 0;
}

class SimSigner final : public Signer {
 public:
  explicit SimSigner(const KeyPair& keys)
      : public_key_(keys.public_key), mac_key_(mac_key_of(keys.secret_key)) {}

  Signature sign(std::span<const uint8_t> message) const override {
    return sim_sign(mac_key_, message);
  }
  const PublicKey& public_key() const override { return public_key_; }

 private:
  PublicKey public_key_;
  MacKey mac_key_;
};

// Resolves every public key of the directory to its secret once, at construction, so that a
// verification costs one MAC and no lookup by key. A public key without a known secret verifies
// nothing.
class SimVerifier final : public Verifier {
 public:
  SimVerifier(const KeyDirectory& directory, const std::vector<KeyPair>& secrets) {
    std::map<PublicKey, MacKey> by_public_key;
    for (const KeyPair& keys : secrets)
      by_public_key.emplace(keys.public_key, mac_key_of(keys.secret_key));
    auto resolve = [&](const PublicKey& key) -> std::optional<MacKey> {
      auto it = by_public_key.find(key);
      if (it == by_public_key.end()) return std::nullopt;
      return it->second;
    };
    replicas_.reserve(directory.replicas.size());
    for (const PublicKey& key : directory.replicas)
      replicas_.push_back(resolve(key));
    for (const auto& [principal, key] : directory.clients)
      clients_.emplace(principal, resolve(key));
  }

  bool verify_replica(ReplicaId replica, std::span<const uint8_t> message,
                      const Signature& signature) const override {
    if (replica.value >= replicas_.size() || !replicas_[replica.value]) return false;
    return sim_verify(*replicas_[replica.value], message, signature);
  }
  bool verify_client(uint32_t principal, std::span<const uint8_t> message,
                     const Signature& signature) const override {
    auto it = clients_.find(principal);
    if (it == clients_.end() || !it->second) return false;
    return sim_verify(*it->second, message, signature);
  }
  bool knows_client(uint32_t principal) const override { return clients_.contains(principal); }
  uint32_t replica_count() const override { return static_cast<uint32_t>(replicas_.size()); }

 private:
  std::vector<std::optional<MacKey>> replicas_;
  std::map<uint32_t, std::optional<MacKey>> clients_;
};

// ---- hex ----------------------------------------------------------------------------------------

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// ---- key files ----------------------------------------------------------------------------------

[[noreturn]] void key_file_error(const std::string& path, const std::string& what) {
  throw std::runtime_error("key file " + path + ": " + what);
}

std::string errno_text() {
  return std::strerror(errno);
}

void write_all(int fd, const std::string& text, const std::string& path) {
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) key_file_error(path, "cannot write: " + errno_text());
    written += static_cast<size_t>(n);
  }
}

// Strips a trailing "\r" and spaces, so that a file edited on another system still reads.
std::string_view trim_right(std::string_view line) {
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
    line.remove_suffix(1);
  return line;
}

// Parses "<label> <hex>" on line `line_number`. Never echoes the line: it may hold a secret.
template <size_t N>
std::array<uint8_t, N> parse_key_line(const std::string& path, int line_number,
                                      std::string_view line, std::string_view label) {
  const std::string where = "line " + std::to_string(line_number) + ": ";
  const std::string expected =
      "expected `" + std::string(label) + " <" + std::to_string(2 * N) + " hex digits>`";
  line = trim_right(line);
  if (line.substr(0, label.size()) != label || line.size() <= label.size() ||
      line[label.size()] != ' ') {
    key_file_error(path, where + expected);
  }
  std::string_view hex = line.substr(label.size() + 1);
  while (!hex.empty() && hex.front() == ' ')
    hex.remove_prefix(1);
  if (hex.size() != 2 * N) {
    key_file_error(path, where + expected + ", got " + std::to_string(hex.size()) + " characters");
  }
  std::optional<std::array<uint8_t, N>> value = array_from_hex<N>(hex);
  if (!value) key_file_error(path, where + expected + ", got a character that is not hex");
  return *value;
}

}  // namespace

Digest digest(std::span<const uint8_t> bytes) {
  ensure_sodium();
  Digest out{};
  crypto_generichash(out.data(), out.size(), bytes.data(), bytes.size(), nullptr, 0);
  return out;
}

KeyPair derive_key_pair(Scheme scheme, const std::array<uint8_t, 32>& seed) {
  ensure_sodium();
  KeyPair keys;
  switch (scheme) {
    case Scheme::kEd25519:
      crypto_sign_seed_keypair(keys.public_key.data(), keys.secret_key.data(), seed.data());
      return keys;
    case Scheme::kSim:
      crypto_generichash(keys.secret_key.data(), keys.secret_key.size(), seed.data(), seed.size(),
                         nullptr, 0);
      keys.public_key = sim_public_key_of(keys.secret_key);
      return keys;
  }
  throw std::invalid_argument("derive_key_pair: unknown scheme");
}

KeyPair generate_key_pair() {
  ensure_sodium();
  KeyPair keys;
  crypto_sign_keypair(keys.public_key.data(), keys.secret_key.data());
  return keys;
}

std::unique_ptr<Signer> make_signer(Scheme scheme, const KeyPair& keys) {
  ensure_sodium();
  // A mismatched pair would sign under a key nobody lists: fail here, not at every verifier.
  switch (scheme) {
    case Scheme::kEd25519:
      if (!is_ed25519_pair(keys)) {
        throw std::invalid_argument("make_signer: not a consistent Ed25519 key pair");
      }
      return std::make_unique<Ed25519Signer>(keys);
    case Scheme::kSim:
      if (sim_public_key_of(keys.secret_key) != keys.public_key) {
        throw std::invalid_argument("make_signer: not a consistent SimScheme key pair");
      }
      return std::make_unique<SimSigner>(keys);
  }
  throw std::invalid_argument("make_signer: unknown scheme");
}

std::unique_ptr<Verifier> make_verifier(Scheme scheme, KeyDirectory directory,
                                        std::vector<KeyPair> sim_secrets) {
  ensure_sodium();
  switch (scheme) {
    case Scheme::kEd25519:
      return std::make_unique<Ed25519Verifier>(std::move(directory));
    case Scheme::kSim:
      return std::make_unique<SimVerifier>(directory, sim_secrets);
  }
  throw std::invalid_argument("make_verifier: unknown scheme");
}

std::string to_hex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * bytes.size());
  for (uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0x0f]);
  }
  return out;
}

std::optional<Bytes> bytes_from_hex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  Bytes out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    const int high = hex_value(hex[2 * i]);
    const int low = hex_value(hex[2 * i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    out[i] = static_cast<uint8_t>((high << 4) | low);
  }
  return out;
}

// Written to a temporary file next to `path` and renamed over it, so that a crash leaves either
// the old file or the whole new one; the temporary is created 0600 (and fchmod'ed, in case a
// stale one with a wider mode was lying there) before the secret is written into it.
void write_key_file(const std::string& path, const KeyPair& keys) {
  const std::string temporary = path + ".tmp";
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) key_file_error(path, "cannot create " + temporary + ": " + errno_text());
  try {
    if (::fchmod(fd, 0600) != 0)
      key_file_error(path, "cannot chmod " + temporary + ": " + errno_text());
    std::string text =
        "public " + to_hex(keys.public_key) + "\nsecret " + to_hex(keys.secret_key) + "\n";
    write_all(fd, text, path);
    sodium_memzero(text.data(), text.size());
    if (::fsync(fd) != 0) key_file_error(path, "cannot sync " + temporary + ": " + errno_text());
  } catch (...) {
    ::close(fd);
    ::unlink(temporary.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    ::unlink(temporary.c_str());
    key_file_error(path, "cannot close " + temporary + ": " + errno_text());
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const std::string reason = errno_text();
    ::unlink(temporary.c_str());
    key_file_error(path, "cannot rename " + temporary + " to it: " + reason);
  }
}

KeyPair read_key_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) key_file_error(path, std::string("cannot open: ") + errno_text());
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line))
    lines.push_back(line);
  if (in.bad()) key_file_error(path, "read error");
  // Trailing blank lines are harmless; anything else past the two keys is not.
  while (!lines.empty() && trim_right(lines.back()).empty())
    lines.pop_back();
  if (lines.size() < 2) {
    key_file_error(path,
                   "expected 2 lines (`public <64 hex digits>`, `secret <128 hex digits>`)"
                   ", got " +
                       std::to_string(lines.size()));
  }
  if (lines.size() > 2) key_file_error(path, "line 3: unexpected content after the keys");
  KeyPair keys;
  keys.public_key = parse_key_line<32>(path, 1, lines[0], "public");
  keys.secret_key = parse_key_line<64>(path, 2, lines[1], "secret");
  sodium_memzero(lines[1].data(), lines[1].size());
  ensure_sodium();
  if (!is_ed25519_pair(keys)) {
    key_file_error(path, "the public key (line 1) is not the one of the secret key (line 2)");
  }
  return keys;
}

}  // namespace lockstep::crypto
