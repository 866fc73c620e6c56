#include "client/certificate.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <system_error>

#include "core/assert.h"
#include "crypto/membership.h"
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
                        uint32_t quorum, std::string* why,
                        std::span<const ReplicaId> initial_members) {
  if (quorum == 0) return fail(why, "a quorum of zero proves nothing");
  std::vector<ReplicaId> first_members(initial_members.begin(), initial_members.end());
  for (uint32_t r = 0; initial_members.empty() && r < verifier.replica_count(); ++r)
    first_members.push_back(ReplicaId{r});
  std::optional<Schedule> schedule = Schedule::from_proofs(
      std::move(first_members), certificate.membership_changes, verifier, verifier.replica_count());
  if (!schedule) {
    return fail(
        why,
        "membership_changes: not every change is signed by the administrator (is "
        "admin_public_key in the cluster file?), or their epochs do not follow one another");
  }
  // Epoch 0's t is the cluster file's (the quorum); later epochs' follow from their members.
  auto faults_of = [&](uint64_t epoch) {
    return epoch == 0 ? quorum - 1 : schedule->configurations()[epoch].t;
  };
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
    as_sent.epoch = proof.epoch;
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
  // As the client counts (client_session.h): t_e+1 signers that are members of one
  // configuration e, whatever epochs their replies state. Otherwise the configuration closest
  // to enough is named, the latest of equals.
  const Configuration* closest = nullptr;
  uint64_t closest_signers = 0;
  for (const Configuration& configuration : schedule->configurations()) {
    uint64_t signers = 0;
    for (uint32_t replica : replicas)
      signers += configuration.contains(ReplicaId{replica}) ? 1 : 0;
    const uint64_t needed = uint64_t{faults_of(configuration.epoch)} + 1;
    if (signers >= needed) return true;
    if (closest == nullptr ||
        needed - signers <= uint64_t{faults_of(closest->epoch)} + 1 - closest_signers) {
      closest = &configuration;
      closest_signers = signers;
    }
  }
  LOCKSTEP_ASSERT(closest != nullptr, "a schedule has at least epoch 0");
  const uint32_t faults = faults_of(closest->epoch);
  return fail(
      why, std::to_string(closest_signers) + " of the " + std::to_string(faults + 1) +
               " signatures needed (t+1 distinct members of one configuration; closest: "
               "epoch " +
               std::to_string(closest->epoch) + ", t = " + std::to_string(faults) +
               "; signers outside it: " + std::to_string(replicas.size() - closest_signers) + ")");
}

std::string certificate_to_json(const ReplyCertificate& certificate) {
  nlohmann::ordered_json proofs = nlohmann::ordered_json::array();
  for (const ReplyProof& proof : certificate.proofs) {
    nlohmann::ordered_json digests = nlohmann::ordered_json::array();
    for (const Digest& digest : proof.batch_digests)
      digests.push_back(crypto::to_hex(digest));
    nlohmann::ordered_json entry = {{"replica", proof.replica.value},
                                    {"index", proof.index},
                                    {"batch_digests", std::move(digests)},
                                    {"signature", crypto::to_hex(proof.signature)}};
    // Absent for epoch 0, so that certificates of clusters that never changed read as before.
    if (proof.epoch != 0) entry["epoch"] = proof.epoch;
    proofs.push_back(std::move(entry));
  }
  nlohmann::ordered_json changes = nlohmann::ordered_json::array();
  for (const ClientRequest& change : certificate.membership_changes) {
    changes.push_back({{"client", change.client.value},
                       {"sequence", change.sequence.value},
                       {"acked_below", change.acked_below.value},
                       {"command_hex", crypto::to_hex(change.command)},
                       {"signature", crypto::to_hex(change.signature)}});
  }
  nlohmann::ordered_json out;
  out["client"] = certificate.reply.client.value;
  out["sequence"] = certificate.reply.sequence.value;
  out["status"] = std::string(reply_status_name(certificate.reply.status));
  out["result_hex"] = crypto::to_hex(certificate.reply.result);
  out["proofs"] = std::move(proofs);
  if (!certificate.membership_changes.empty()) out["membership_changes"] = std::move(changes);
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
    if (entry.contains("epoch")) {
      proof.epoch = unsigned_member(entry, "epoch", UINT64_MAX, source, where);
    }
    certificate.proofs.push_back(std::move(proof));
  }
  if (in.contains("membership_changes")) {
    const nlohmann::json& changes = in["membership_changes"];
    if (!changes.is_array()) malformed(source, "membership_changes", "expected an array");
    if (changes.size() > kCertificateChangesMax) {
      malformed(source, "membership_changes",
                "more than " + std::to_string(kCertificateChangesMax));
    }
    for (size_t i = 0; i < changes.size(); ++i) {
      const std::string where = "membership_changes[" + std::to_string(i) + "].";
      const nlohmann::json& entry = changes[i];
      if (!entry.is_object()) malformed(source, where.substr(0, where.size() - 1), "not an object");
      ClientRequest change;
      change.client = ClientId{unsigned_member(entry, "client", UINT64_MAX, source, where)};
      change.sequence = Sequence{unsigned_member(entry, "sequence", UINT64_MAX, source, where)};
      change.acked_below =
          Sequence{unsigned_member(entry, "acked_below", UINT64_MAX, source, where)};
      auto command = crypto::bytes_from_hex(string_member(entry, "command_hex", source, where));
      if (!command) malformed(source, where + "command_hex", "expected hex digits");
      change.command = std::move(*command);
      const Signature signature = hex_array<sizeof(Signature)>(
          member(entry, "signature", source, where), source, where + "signature");
      change.signature.assign(signature.begin(), signature.end());
      certificate.membership_changes.push_back(std::move(change));
    }
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
