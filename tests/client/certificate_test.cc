#include "client/certificate.h"

#include <gtest/gtest.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "crypto/signing.h"

namespace lockstep {
namespace {

constexpr uint32_t kReplicas = 3;
constexpr uint32_t kQuorum = 2;  // t + 1 with t = 1
const ClientId kClient = client_id_of(5, 77);

class CertificateTest : public ::testing::Test {
 protected:
  CertificateTest() {
    crypto::KeyDirectory directory;
    for (uint32_t r = 0; r < kReplicas; ++r) {
      std::array<uint8_t, 32> seed{};
      seed[0] = static_cast<uint8_t>(r + 1);
      crypto::KeyPair keys = crypto::derive_key_pair(crypto::Scheme::kEd25519, seed);
      signers.push_back(crypto::make_signer(crypto::Scheme::kEd25519, keys));
      directory.replicas.push_back(keys.public_key);
    }
    verifier = crypto::make_verifier(crypto::Scheme::kEd25519, directory);
  }

  ClientReply output(uint32_t replica, const std::string& result = "value") const {
    return ClientReply{kClient, Sequence{9}, ReplicaId{replica}, ReplyStatus::kOk,
                       to_bytes(result)};
  }

  // What the client library builds from a SignedReplies frame: replica `replica` signs a batch in
  // which our reply sits at `position` among replies to other sessions.
  ReplyProof prove(uint32_t replica, uint32_t position, const std::string& result = "value") const {
    std::vector<ClientReply> batch;
    for (uint32_t i = 0; i < 3; ++i) {
      batch.push_back(ClientReply{client_id_of(5, 100 + i), Sequence{1}, ReplicaId{replica},
                                  ReplyStatus::kOk, to_bytes("other")});
    }
    batch.insert(batch.begin() + position, output(replica, result));
    SignedReplies signed_batch = crypto::sign_replies(*signers[replica], ReplicaId{replica}, batch);
    EXPECT_TRUE(crypto::verify_replies(*verifier, signed_batch));
    ReplyProof proof;
    proof.replica = ReplicaId{replica};
    for (const ClientReply& reply : signed_batch.replies)
      proof.batch_digests.push_back(crypto::reply_digest(reply));
    proof.index = position;
    proof.signature = signed_batch.signature;
    return proof;
  }

  ReplyCertificate valid_certificate() const {
    ReplyCertificate certificate;
    certificate.reply = output(2);
    certificate.proofs = {prove(2, 0), prove(0, 3)};
    return certificate;
  }

  bool verify(const ReplyCertificate& certificate, std::string* why = nullptr,
              uint32_t quorum = kQuorum) const {
    return verify_certificate(certificate, *verifier, quorum, why);
  }

  std::vector<std::unique_ptr<crypto::Signer>> signers;
  std::unique_ptr<crypto::Verifier> verifier;
};

TEST_F(CertificateTest, AValidCertificateVerifies) {
  std::string why = "untouched";
  EXPECT_TRUE(verify(valid_certificate(), &why));
  EXPECT_EQ(why, "untouched");
  // More than a quorum is fine too, and the reply's own replica field does not matter.
  ReplyCertificate all = valid_certificate();
  all.proofs.push_back(prove(1, 1));
  all.reply.replica = ReplicaId{0};
  EXPECT_TRUE(verify(all, nullptr, 3));
}

TEST_F(CertificateTest, TSignaturesAreNotEnough) {
  ReplyCertificate certificate = valid_certificate();
  certificate.proofs.pop_back();
  std::string why;
  EXPECT_FALSE(verify(certificate, &why));
  EXPECT_NE(why.find("1 of the 2 signatures needed"), std::string::npos) << why;
  certificate.proofs.clear();
  EXPECT_FALSE(verify(certificate, &why));
  EXPECT_FALSE(verify(valid_certificate(), &why, 0)) << "a zero quorum is refused";
}

TEST_F(CertificateTest, ADuplicatedReplicaFails) {
  ReplyCertificate certificate = valid_certificate();
  certificate.proofs[1] = certificate.proofs[0];
  std::string why;
  EXPECT_FALSE(verify(certificate, &why));
  EXPECT_NE(why.find("same replica"), std::string::npos) << why;
  // Even when the second proof is a different valid batch of the same replica.
  certificate.proofs[1] = prove(2, 2);
  EXPECT_FALSE(verify(certificate, &why));
}

TEST_F(CertificateTest, ATamperedResultFails) {
  ReplyCertificate certificate = valid_certificate();
  certificate.reply.result = to_bytes("valuE");
  std::string why;
  EXPECT_FALSE(verify(certificate, &why));
  EXPECT_NE(why.find("not this reply's"), std::string::npos) << why;

  // Replacing the digest too breaks the signature.
  certificate = valid_certificate();
  certificate.reply.result = to_bytes("valuE");
  for (ReplyProof& proof : certificate.proofs) {
    ClientReply as_sent = certificate.reply;
    as_sent.replica = proof.replica;
    proof.batch_digests[proof.index] = crypto::reply_digest(as_sent);
  }
  EXPECT_FALSE(verify(certificate, &why));
  EXPECT_NE(why.find("signature does not verify"), std::string::npos) << why;

  // So do other fields of the reply, and a non-ok status.
  certificate = valid_certificate();
  certificate.reply.sequence = Sequence{10};
  EXPECT_FALSE(verify(certificate));
  certificate = valid_certificate();
  certificate.reply.client = client_id_of(5, 78);
  EXPECT_FALSE(verify(certificate));
  certificate = valid_certificate();
  certificate.reply.status = ReplyStatus::kBusy;
  EXPECT_FALSE(verify(certificate));
}

TEST_F(CertificateTest, SignaturesAreCheckedUnderTheNamedReplicasKey) {
  ReplyCertificate certificate = valid_certificate();
  certificate.proofs[1].signature[5] ^= 1;
  EXPECT_FALSE(verify(certificate));
  // Replica 0's proof relabelled as replica 1's: wrong key (and wrong reply digest).
  certificate = valid_certificate();
  certificate.proofs[1].replica = ReplicaId{1};
  EXPECT_FALSE(verify(certificate));
  certificate = valid_certificate();
  certificate.proofs[1].replica = ReplicaId{kReplicas};
  std::string why;
  EXPECT_FALSE(verify(certificate, &why));
  EXPECT_NE(why.find("no such replica"), std::string::npos) << why;
}

TEST_F(CertificateTest, AWrongIndexFails) {
  ReplyCertificate certificate = valid_certificate();
  certificate.proofs[1].index = 2;  // another client's reply in the same signed batch
  EXPECT_FALSE(verify(certificate));
  certificate.proofs[1].index = 4;  // past the end
  std::string why;
  EXPECT_FALSE(verify(certificate, &why));
  EXPECT_NE(why.find("outside its batch"), std::string::npos) << why;
}

TEST_F(CertificateTest, AProofForAnotherResultFails) {
  ReplyCertificate certificate = valid_certificate();
  certificate.proofs[1] = prove(0, 3, "lie");  // replica 0 really signed "lie"
  EXPECT_FALSE(verify(certificate));
}

TEST_F(CertificateTest, JsonRoundTrip) {
  ReplyCertificate certificate = valid_certificate();
  certificate.reply.result = {0x00, 0xff, 0x10};
  certificate.reply.replica = ReplicaId{};  // not stored: each proof names its replica
  const std::string text = certificate_to_json(certificate);
  EXPECT_NE(text.find("\"result_hex\": \"00ff10\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"status\": \"ok\""), std::string::npos) << text;
  EXPECT_EQ(certificate_from_json(text, "test"), certificate);
}

TEST_F(CertificateTest, FileRoundTripVerifies) {
  const std::filesystem::path path =
      std::filesystem::path(::testing::TempDir()) / "lockstep_certificate_test.json";
  ReplyCertificate certificate = valid_certificate();
  certificate.reply.replica = ReplicaId{};
  write_certificate_file(path.string(), certificate);
  ReplyCertificate read = read_certificate_file(path.string());
  EXPECT_EQ(read, certificate);
  EXPECT_TRUE(verify(read));
  std::filesystem::remove(path);
  EXPECT_THROW(read_certificate_file(path.string()), std::runtime_error);
}

TEST_F(CertificateTest, MalformedFilesAreRejectedNamingTheField) {
  auto error_of = [](const std::string& text) -> std::string {
    try {
      certificate_from_json(text, "cert.json");
    } catch (const std::runtime_error& error) {
      return error.what();
    }
    return "no error";
  };
  const std::string good = certificate_to_json(valid_certificate());
  EXPECT_EQ(error_of("{"), "cert.json: not valid JSON");
  EXPECT_EQ(error_of("[]"), "cert.json: expected a JSON object");
  auto replaced = [&](const std::string& from, const std::string& to) {
    std::string text = good;
    size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return text.replace(at, from.size(), to);
  };
  EXPECT_EQ(error_of(replaced("\"client\"", "\"klient\"")), "cert.json: client: missing");
  EXPECT_EQ(error_of(replaced("\"sequence\": 9", "\"sequence\": -9")),
            "cert.json: sequence: expected an unsigned integer");
  EXPECT_NE(error_of(replaced("\"ok\"", "\"fine\"")).find("cert.json: status: expected"),
            std::string::npos);
  EXPECT_EQ(error_of(replaced("\"result_hex\": \"", "\"result_hex\": \"0")),
            "cert.json: result_hex: expected an even number of hex digits");
  EXPECT_EQ(error_of(replaced("\"signature\": \"", "\"signature\": \"00")),
            "cert.json: proofs[0].signature: expected 128 hex digits");
  EXPECT_EQ(error_of(replaced("\"index\": 0", "\"index\": 4294967296")),
            "cert.json: proofs[0].index: exceeds 4294967295");
}

}  // namespace
}  // namespace lockstep
