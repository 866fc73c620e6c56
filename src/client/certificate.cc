#include "client/certificate.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <system_error>

#include "crypto/signing.h"

namespace lockstep {
namespace {

bool fail(std::string* why, std::string reason) {
  if (why != nullptr) *why = std::move(reason);
  return false;
}

std::string proof_name(size_t index, const ReplyProof& proof) {
  return "proof " + std::to_string(index) + " (replica " + std::to_string(proof.replica.value) +
         ")";
}

[[noreturn]] void malformed(const std::string& source, const std::string& field,
                            const std::string& problem) {
  throw std::runtime_error(source + ": " + field + ": " + problem);
}

const nlohmann::json& member(const nlohmann::json& object, const char* key,
                             const std::string& source, const std::string& where) {
  auto it = object.find(key);
  if (it == object.end()) malformed(source, where + key, "missing");
  return *it;
}

uint64_t unsigned_member(const nlohmann::json& object, const char* key, uint64_t max,
                         const std::string& source, const std::string& where) {
  const nlohmann::json& value = member(object, key, source, where);
  if (!value.is_number_unsigned()) malformed(source, where + key, "expected an unsigned integer");
  const uint64_t number = value.get<uint64_t>();
  if (number > max) malformed(source, where + key, "exceeds " + std::to_string(max));
  return number;
}

std::string string_member(const nlohmann::json& object, const char* key, const std::string& source,
                          const std::string& where) {
  const nlohmann::json& value = member(object, key, source, where);
  if (!value.is_string()) malformed(source, where + key, "expected a string");
  return value.get<std::string>();
}

template <size_t N>
std::array<uint8_t, N> hex_array(const nlohmann::json& value, const std::string& source,
                                 const std::string& field) {
  if (!value.is_string()) malformed(source, field, "expected a hex string");
  auto bytes = crypto::array_from_hex<N>(value.get<std::string>());
  if (!bytes) malformed(source, field, "expected " + std::to_string(2 * N) + " hex digits");
  return *bytes;
}

ReplyStatus status_from_name(std::string_view name, const std::string& source) {
  for (ReplyStatus status : {ReplyStatus::kOk, ReplyStatus::kBusy, ReplyStatus::kNotServing}) {
    if (reply_status_name(status) == name) return status;
  }
  malformed(source, "status",
            "expected \"ok\", \"busy\" or \"not_serving\", got \"" + std::string(name) + "\"");
}

}  // namespace

std::string_view reply_status_name(ReplyStatus status) {
  switch (status) {
    case ReplyStatus::kOk:
      return "ok";
    case ReplyStatus::kBusy:
      return "busy";
    case ReplyStatus::kNotServing:
      return "not_serving";
  }
  return "unknown";
}

bool verify_certificate(const ReplyCertificate& certificate, const crypto::Verifier& verifier,
                        uint32_t quorum, std::string* why) {
  if (quorum == 0) return fail(why, "a quorum of zero proves nothing");
  if (certificate.reply.status != ReplyStatus::kOk) {
    return fail(why, "the reply's status is " +
                         std::string(reply_status_name(certificate.reply.status)) +
                         ", not ok: only outputs are certified");
  }
  std::set<uint32_t> replicas;
  for (size_t i = 0; i < certificate.proofs.size(); ++i) {
    const ReplyProof& proof = certificate.proofs[i];
    if (proof.replica.value >= verifier.replica_count()) {
      return fail(why, proof_name(i, proof) + ": no such replica in the cluster (it has " +
                           std::to_string(verifier.replica_count()) + ")");
    }
    if (!replicas.insert(proof.replica.value).second) {
      return fail(why, proof_name(i, proof) + ": a second proof from the same replica");
    }
    if (proof.index >= proof.batch_digests.size()) {
      return fail(why, proof_name(i, proof) + ": index " + std::to_string(proof.index) +
                           " is outside its batch of " +
                           std::to_string(proof.batch_digests.size()) + " replies");
    }
    // The reply as this replica sent it: a reply's digest names its sender.
    ClientReply as_sent = certificate.reply;
    as_sent.replica = proof.replica;
    if (proof.batch_digests[proof.index] != crypto::reply_digest(as_sent)) {
      return fail(why, proof_name(i, proof) + ": the digest at index " +
                           std::to_string(proof.index) +
                           " is not this reply's (a different result, client or sequence)");
    }
    if (!verifier.verify_replica(
            proof.replica, crypto::reply_batch_signing_bytes(proof.replica, proof.batch_digests),
            proof.signature)) {
      return fail(why, proof_name(i, proof) + ": the signature does not verify");
    }
  }
  if (replicas.size() < quorum) {
    return fail(why, std::to_string(replicas.size()) + " of the " + std::to_string(quorum) +
                         " signatures needed (t+1 distinct replicas)");
  }
  return true;
}

std::string certificate_to_json(const ReplyCertificate& certificate) {
  nlohmann::ordered_json proofs = nlohmann::ordered_json::array();
  for (const ReplyProof& proof : certificate.proofs) {
    nlohmann::ordered_json digests = nlohmann::ordered_json::array();
    for (const Digest& digest : proof.batch_digests)
      digests.push_back(crypto::to_hex(digest));
    proofs.push_back({{"replica", proof.replica.value},
                      {"index", proof.index},
                      {"batch_digests", std::move(digests)},
                      {"signature", crypto::to_hex(proof.signature)}});
  }
  nlohmann::ordered_json out;
  out["client"] = certificate.reply.client.value;
  out["sequence"] = certificate.reply.sequence.value;
  out["status"] = std::string(reply_status_name(certificate.reply.status));
  out["result_hex"] = crypto::to_hex(certificate.reply.result);
  out["proofs"] = std::move(proofs);
  return out.dump(2) + "\n";
}

ReplyCertificate certificate_from_json(std::string_view text, const std::string& source) {
  nlohmann::json in = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (in.is_discarded()) throw std::runtime_error(source + ": not valid JSON");
  if (!in.is_object()) throw std::runtime_error(source + ": expected a JSON object");

  ReplyCertificate certificate;
  ClientReply& reply = certificate.reply;
  reply.client = ClientId{unsigned_member(in, "client", UINT64_MAX, source, "")};
  reply.sequence = Sequence{unsigned_member(in, "sequence", UINT64_MAX, source, "")};
  reply.status = status_from_name(string_member(in, "status", source, ""), source);
  auto result = crypto::bytes_from_hex(string_member(in, "result_hex", source, ""));
  if (!result) malformed(source, "result_hex", "expected an even number of hex digits");
  reply.result = std::move(*result);

  const nlohmann::json& proofs = member(in, "proofs", source, "");
  if (!proofs.is_array()) malformed(source, "proofs", "expected an array");
  if (proofs.size() > kCertificateProofsMax) {
    malformed(source, "proofs", "more than " + std::to_string(kCertificateProofsMax));
  }
  for (size_t i = 0; i < proofs.size(); ++i) {
    const std::string where = "proofs[" + std::to_string(i) + "].";
    const nlohmann::json& entry = proofs[i];
    if (!entry.is_object()) malformed(source, where.substr(0, where.size() - 1), "not an object");
    ReplyProof proof;
    proof.replica = ReplicaId{
        static_cast<uint32_t>(unsigned_member(entry, "replica", UINT32_MAX, source, where))};
    proof.index = static_cast<uint32_t>(unsigned_member(entry, "index", UINT32_MAX, source, where));
    const nlohmann::json& digests = member(entry, "batch_digests", source, where);
    if (!digests.is_array()) malformed(source, where + "batch_digests", "expected an array");
    if (digests.size() > kCertificateBatchDigestsMax) {
      malformed(source, where + "batch_digests",
                "more than " + std::to_string(kCertificateBatchDigestsMax));
    }
    proof.batch_digests.reserve(digests.size());
    for (size_t d = 0; d < digests.size(); ++d) {
      proof.batch_digests.push_back(hex_array<sizeof(Digest)>(
          digests[d], source, where + "batch_digests[" + std::to_string(d) + "]"));
    }
    proof.signature = hex_array<sizeof(Signature)>(member(entry, "signature", source, where),
                                                   source, where + "signature");
    certificate.proofs.push_back(std::move(proof));
  }
  return certificate;
}

void write_certificate_file(const std::string& path, const ReplyCertificate& certificate) {
  const std::string text = certificate_to_json(certificate);
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error(temporary + ": cannot write: " + std::strerror(errno));
    out << text;
    out.flush();
    if (!out) throw std::runtime_error(temporary + ": write failed");
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error)
    throw std::runtime_error(path + ": cannot rename " + temporary + ": " + error.message());
}

ReplyCertificate read_certificate_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot read: " + std::strerror(errno));
  std::string text;
  char buffer[1 << 16];
  while (in.read(buffer, sizeof(buffer)) || in.gcount() > 0) {
    text.append(buffer, static_cast<size_t>(in.gcount()));
    if (text.size() > kCertificateFileBytesMax) {
      throw std::runtime_error(path + ": larger than " + std::to_string(kCertificateFileBytesMax) +
                               " bytes; not a certificate");
    }
  }
  if (in.bad()) throw std::runtime_error(path + ": read failed");
  return certificate_from_json(text, path);
}

}  // namespace lockstep
