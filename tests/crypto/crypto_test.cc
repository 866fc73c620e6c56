#include "crypto/crypto.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace lockstep::crypto {
namespace {

std::array<uint8_t, 32> seed_of(uint8_t n) {
  std::array<uint8_t, 32> seed{};
  for (size_t i = 0; i < seed.size(); ++i)
    seed[i] = static_cast<uint8_t>(n * 7 + i);
  return seed;
}

Bytes message_of(std::string_view text) {
  return to_bytes(text);
}

constexpr Scheme kSchemes[] = {Scheme::kEd25519, Scheme::kSim};

std::string scheme_name(Scheme scheme) {
  return scheme == Scheme::kEd25519 ? "ed25519" : "sim";
}

// Two replicas (keys from seeds 0 and 1) and client principals 7 (seed 2) and 8 (seed 3).
struct Cluster {
  explicit Cluster(Scheme scheme) {
    for (uint8_t i = 0; i < 4; ++i)
      keys.push_back(derive_key_pair(scheme, seed_of(i)));
    KeyDirectory directory;
    directory.replicas = {keys[0].public_key, keys[1].public_key};
    directory.clients = {{7, keys[2].public_key}, {8, keys[3].public_key}};
    verifier = make_verifier(scheme, directory, keys);
    for (const KeyPair& k : keys)
      signers.push_back(make_signer(scheme, k));
  }
  std::vector<KeyPair> keys;
  std::vector<std::unique_ptr<Signer>> signers;
  std::unique_ptr<Verifier> verifier;
};

// ---- digest and known answers -----------------------------------------------------------------

TEST(CryptoDigest, IsBlake2b256) {
  const Bytes abc = message_of("abc");
  EXPECT_EQ(to_hex(digest(abc)),
            "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
  EXPECT_NE(digest(abc), digest(message_of("abd")));
  EXPECT_NE(digest(Bytes{}), digest(Bytes{0}));
}

// RFC 8032 §7.1, TEST 1: the Ed25519 scheme is the standard one, not a look-alike.
TEST(CryptoEd25519, Rfc8032TestVector1) {
  const auto seed =
      array_from_hex<32>("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
  ASSERT_TRUE(seed);
  const KeyPair keys = derive_key_pair(Scheme::kEd25519, *seed);
  EXPECT_EQ(to_hex(keys.public_key),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
  const Signature signature = make_signer(Scheme::kEd25519, keys)->sign({});
  EXPECT_EQ(to_hex(signature),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e"
            "39701cf9b46bd25bf5f0595bbe24655141438e7a100b");
}

// ---- key derivation ---------------------------------------------------------------------------

TEST(CryptoKeys, DerivationIsDeterministicAndSeedDependent) {
  for (Scheme scheme : kSchemes) {
    SCOPED_TRACE(scheme_name(scheme));
    const KeyPair a = derive_key_pair(scheme, seed_of(1));
    const KeyPair b = derive_key_pair(scheme, seed_of(1));
    const KeyPair c = derive_key_pair(scheme, seed_of(2));
    EXPECT_EQ(a.public_key, b.public_key);
    EXPECT_EQ(a.secret_key, b.secret_key);
    EXPECT_NE(a.public_key, c.public_key);
    EXPECT_NE(a.secret_key, c.secret_key);
  }
  // The two schemes give different keys for one seed.
  EXPECT_NE(derive_key_pair(Scheme::kEd25519, seed_of(1)).public_key,
            derive_key_pair(Scheme::kSim, seed_of(1)).public_key);
}

TEST(CryptoKeys, Ed25519SecretKeyIsSeedThenPublicKey) {
  const KeyPair keys = derive_key_pair(Scheme::kEd25519, seed_of(5));
  const auto seed = seed_of(5);
  EXPECT_TRUE(std::equal(seed.begin(), seed.end(), keys.secret_key.begin()));
  EXPECT_TRUE(
      std::equal(keys.public_key.begin(), keys.public_key.end(), keys.secret_key.begin() + 32));
}

TEST(CryptoKeys, GeneratedKeysAreFreshAndUsable) {
  const KeyPair a = generate_key_pair();
  const KeyPair b = generate_key_pair();
  EXPECT_NE(a.public_key, b.public_key);
  auto signer = make_signer(Scheme::kEd25519, a);
  KeyDirectory directory;
  directory.replicas = {a.public_key};
  auto verifier = make_verifier(Scheme::kEd25519, directory);
  const Bytes m = message_of("fresh");
  EXPECT_TRUE(verifier->verify_replica(ReplicaId{0}, m, signer->sign(m)));
}

TEST(CryptoKeys, MakeSignerRejectsAMismatchedPair) {
  for (Scheme scheme : kSchemes) {
    SCOPED_TRACE(scheme_name(scheme));
    KeyPair keys = derive_key_pair(scheme, seed_of(1));
    keys.public_key = derive_key_pair(scheme, seed_of(2)).public_key;
    EXPECT_THROW(make_signer(scheme, keys), std::invalid_argument);
  }
}

// ---- sign / verify ----------------------------------------------------------------------------

TEST(CryptoSign, RoundTripForBothSchemes) {
  for (Scheme scheme : kSchemes) {
    SCOPED_TRACE(scheme_name(scheme));
    Cluster cluster(scheme);
    const Bytes m = message_of("order request 17 at 1000");
    EXPECT_TRUE(cluster.verifier->verify_replica(ReplicaId{0}, m, cluster.signers[0]->sign(m)));
    EXPECT_TRUE(cluster.verifier->verify_replica(ReplicaId{1}, m, cluster.signers[1]->sign(m)));
    EXPECT_TRUE(cluster.verifier->verify_client(7, m, cluster.signers[2]->sign(m)));
    EXPECT_TRUE(cluster.verifier->verify_client(8, m, cluster.signers[3]->sign(m)));
    EXPECT_TRUE(cluster.verifier->verify_replica(ReplicaId{0}, {}, cluster.signers[0]->sign({})));
    // Deterministic: a signing core stays a pure function of its inputs.
    EXPECT_EQ(cluster.signers[0]->sign(m), cluster.signers[0]->sign(m));
    EXPECT_EQ(cluster.signers[0]->public_key(), cluster.keys[0].public_key);
    EXPECT_EQ(cluster.verifier->replica_count(), 2u);
  }
}

TEST(CryptoSign, AnyFlippedBitFails) {
  for (Scheme scheme : kSchemes) {
    SCOPED_TRACE(scheme_name(scheme));
    Cluster cluster(scheme);
    const Bytes m = message_of("a message of some length, to flip bits in");
    const Signature good = cluster.signers[1]->sign(m);
    for (size_t bit = 0; bit < m.size() * 8; ++bit) {
      Bytes flipped = m;
      flipped[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
      ASSERT_FALSE(cluster.verifier->verify_replica(ReplicaId{1}, flipped, good)) << bit;
    }
    for (size_t bit = 0; bit < good.size() * 8; ++bit) {
      Signature flipped = good;
      flipped[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
      ASSERT_FALSE(cluster.verifier->verify_replica(ReplicaId{1}, m, flipped)) << bit;
    }
    Bytes longer = m;
    longer.push_back(0);
    EXPECT_FALSE(cluster.verifier->verify_replica(ReplicaId{1}, longer, good));
    EXPECT_FALSE(cluster.verifier->verify_replica(ReplicaId{1}, m, Signature{}));
  }
}

TEST(CryptoSign, WrongOrUnknownSignerFails) {
  for (Scheme scheme : kSchemes) {
    SCOPED_TRACE(scheme_name(scheme));
    Cluster cluster(scheme);
    const Bytes m = message_of("hello");
    const Signature by_replica0 = cluster.signers[0]->sign(m);
    EXPECT_FALSE(cluster.verifier->verify_replica(ReplicaId{1}, m, by_replica0));
    EXPECT_FALSE(cluster.verifier->verify_replica(ReplicaId{2}, m, by_replica0));  // no replica 2
    EXPECT_FALSE(cluster.verifier->verify_replica(ReplicaId{UINT32_MAX}, m, by_replica0));
    EXPECT_FALSE(cluster.verifier->verify_client(7, m, by_replica0));
    const Signature by_client7 = cluster.signers[2]->sign(m);
    EXPECT_FALSE(cluster.verifier->verify_client(8, m, by_client7));
    EXPECT_FALSE(cluster.verifier->verify_client(9, m, by_client7));  // unknown principal
    EXPECT_FALSE(cluster.verifier->verify_replica(ReplicaId{0}, m, by_client7));
    EXPECT_TRUE(cluster.verifier->knows_client(7));
    EXPECT_TRUE(cluster.verifier->knows_client(8));
    EXPECT_FALSE(cluster.verifier->knows_client(9));
  }
}

TEST(CryptoSim, SignatureUnderOneKeyDoesNotVerifyUnderAnother) {
  const KeyPair a = derive_key_pair(Scheme::kSim, seed_of(1));
  const KeyPair b = derive_key_pair(Scheme::kSim, seed_of(2));
  const Bytes m = message_of("endorse");
  const Signature by_a = make_signer(Scheme::kSim, a)->sign(m);
  EXPECT_NE(by_a, make_signer(Scheme::kSim, b)->sign(m));
  // The second half of a sim signature is zero.
  EXPECT_TRUE(std::all_of(by_a.begin() + 32, by_a.end(), [](uint8_t x) { return x == 0; }));

  KeyDirectory directory;
  directory.replicas = {b.public_key, a.public_key};
  auto verifier = make_verifier(Scheme::kSim, directory, {a, b});
  EXPECT_FALSE(verifier->verify_replica(ReplicaId{0}, m, by_a));
  EXPECT_TRUE(verifier->verify_replica(ReplicaId{1}, m, by_a));
}

TEST(CryptoSim, APublicKeyWithoutItsSecretVerifiesNothing) {
  const KeyPair a = derive_key_pair(Scheme::kSim, seed_of(1));
  KeyDirectory directory;
  directory.replicas = {a.public_key};
  directory.clients = {{3, a.public_key}};
  auto verifier = make_verifier(Scheme::kSim, directory, {});
  const Bytes m = message_of("x");
  const Signature s = make_signer(Scheme::kSim, a)->sign(m);
  EXPECT_FALSE(verifier->verify_replica(ReplicaId{0}, m, s));
  EXPECT_FALSE(verifier->verify_client(3, m, s));
}

// An Ed25519 signature is no sim signature and vice versa, even over the same seed.
TEST(CryptoSign, SchemesDoNotCrossVerify) {
  const Bytes m = message_of("cross");
  Cluster ed(Scheme::kEd25519);
  Cluster sim(Scheme::kSim);
  EXPECT_FALSE(ed.verifier->verify_replica(ReplicaId{0}, m, sim.signers[0]->sign(m)));
  EXPECT_FALSE(sim.verifier->verify_replica(ReplicaId{0}, m, ed.signers[0]->sign(m)));
}

// ---- hex ----------------------------------------------------------------------------------------

TEST(CryptoHex, RoundTripAndStrictParsing) {
  const Bytes b = {0x00, 0x01, 0xab, 0xff, 0x7f};
  EXPECT_EQ(to_hex(b), "0001abff7f");
  EXPECT_EQ(bytes_from_hex("0001abff7f"), b);
  EXPECT_EQ(bytes_from_hex("0001ABFF7F"), b);
  EXPECT_EQ(bytes_from_hex(""), Bytes{});
  EXPECT_FALSE(bytes_from_hex("0"));
  EXPECT_FALSE(bytes_from_hex("0g"));
  EXPECT_FALSE(bytes_from_hex(" 00"));
  EXPECT_FALSE(bytes_from_hex("0x00"));
  EXPECT_EQ(array_from_hex<2>("beef"), (std::array<uint8_t, 2>{0xbe, 0xef}));
  EXPECT_FALSE(array_from_hex<2>("bee"));
  EXPECT_FALSE(array_from_hex<2>("beefbe"));
  EXPECT_FALSE(array_from_hex<2>("bexf"));
  const KeyPair keys = derive_key_pair(Scheme::kEd25519, seed_of(9));
  EXPECT_EQ(array_from_hex<32>(to_hex(keys.public_key)), keys.public_key);
  EXPECT_EQ(array_from_hex<64>(to_hex(keys.secret_key)), keys.secret_key);
}

// ---- key files ----------------------------------------------------------------------------------

class KeyFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("lockstep-keyfile-test-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  std::string write_text(const std::string& name, const std::string& text) const {
    std::ofstream(path(name)) << text;
    return path(name);
  }

  // The message read_key_file throws for `text`, or "" if it accepts it.
  std::string read_error(const std::string& text) const {
    const std::string p = write_text("bad.key", text);
    try {
      read_key_file(p);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  }

  std::filesystem::path dir_;
  KeyPair keys_ = derive_key_pair(Scheme::kEd25519, seed_of(4));
  std::string public_line_ = "public " + to_hex(keys_.public_key);
  std::string secret_line_ = "secret " + to_hex(keys_.secret_key);
};

TEST_F(KeyFileTest, RoundTripWithMode0600) {
  const std::string p = path("replica0.key");
  write_key_file(p, keys_);
  const KeyPair read = read_key_file(p);
  EXPECT_EQ(read.public_key, keys_.public_key);
  EXPECT_EQ(read.secret_key, keys_.secret_key);

  struct stat st {};
  ASSERT_EQ(::stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(std::filesystem::exists(p + ".tmp"));

  std::ifstream in(p);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, public_line_ + "\n" + secret_line_ + "\n");
}

TEST_F(KeyFileTest, OverwritesAndNarrowsTheMode) {
  const std::string p = write_text("old.key", "old content\n");
  ASSERT_EQ(::chmod(p.c_str(), 0644), 0);
  write_key_file(p, keys_);
  struct stat st {};
  ASSERT_EQ(::stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(read_key_file(p).public_key, keys_.public_key);
}

TEST_F(KeyFileTest, AcceptsUppercaseCrlfAndTrailingBlankLines) {
  std::string upper_secret = secret_line_;
  std::transform(upper_secret.begin() + 7, upper_secret.end(), upper_secret.begin() + 7,
                 [](char c) { return static_cast<char>(std::toupper(c)); });
  EXPECT_EQ(read_error(public_line_ + "\r\n" + upper_secret + "\r\n\n\n"), "");
  EXPECT_EQ(read_error(public_line_ + "\n" + secret_line_), "");  // no final newline
}

TEST_F(KeyFileTest, MalformedFilesNameTheFileAndTheLine) {
  const std::string p = path("bad.key");
  const std::string prefix = "key file " + p + ": ";
  EXPECT_EQ(read_error(""), prefix +
                                "expected 2 lines (`public <64 hex digits>`, `secret <128 hex "
                                "digits>`), got 0");
  EXPECT_EQ(read_error(public_line_ + "\n"),
            prefix +
                "expected 2 lines (`public <64 hex digits>`, `secret <128 hex digits>`), "
                "got 1");
  EXPECT_EQ(read_error(secret_line_ + "\n" + public_line_ + "\n"),
            prefix + "line 1: expected `public <64 hex digits>`");
  EXPECT_EQ(read_error("public\n" + secret_line_ + "\n"),
            prefix + "line 1: expected `public <64 hex digits>`");
  EXPECT_EQ(read_error(public_line_.substr(0, public_line_.size() - 1) + "\n" + secret_line_),
            prefix + "line 1: expected `public <64 hex digits>`, got 63 characters");
  std::string not_hex = secret_line_;
  not_hex[20] = 'z';
  EXPECT_EQ(read_error(public_line_ + "\n" + not_hex),
            prefix + "line 2: expected `secret <128 hex digits>`, got a character that is not hex");
  EXPECT_EQ(read_error(public_line_ + "\n" + secret_line_ + "\nextra\n"),
            prefix + "line 3: unexpected content after the keys");

  // A public key from another pair: caught, rather than signing under a key nobody lists.
  const KeyPair other = derive_key_pair(Scheme::kEd25519, seed_of(5));
  EXPECT_EQ(read_error("public " + to_hex(other.public_key) + "\n" + secret_line_),
            prefix + "the public key (line 1) is not the one of the secret key (line 2)");
}

TEST_F(KeyFileTest, ErrorsNeverEchoTheSecret) {
  std::string broken = secret_line_;
  broken[30] = 'q';
  const std::string error = read_error(public_line_ + "\n" + broken);
  ASSERT_FALSE(error.empty());
  EXPECT_EQ(error.find(secret_line_.substr(7, 20)), std::string::npos);
}

TEST_F(KeyFileTest, MissingFileAndUnwritableDirectory) {
  const std::string missing = path("missing.key");
  try {
    read_key_file(missing);
    FAIL() << "read a missing file";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()),
              "key file " + missing + ": cannot open: No such file or directory");
  }
  const std::string nowhere = path("no-such-dir/replica.key");
  try {
    write_key_file(nowhere, keys_);
    FAIL() << "wrote into a missing directory";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("key file " + nowhere + ": cannot create"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace lockstep::crypto
