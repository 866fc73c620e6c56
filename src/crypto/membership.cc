#include "crypto/membership.h"

#include <algorithm>
#include <iterator>

#include "core/assert.h"
#include "core/codec.h"
#include "core/wire.h"
#include "crypto/signing.h"

namespace lockstep {
namespace {

constexpr uint8_t kChangeVersion = 1;
constexpr size_t kMembersMax = 1024;

bool strictly_ascending(const std::vector<ReplicaId>& members) {
  return std::adjacent_find(members.begin(), members.end(), [](ReplicaId a, ReplicaId b) {
           return !(a.value < b.value);
         }) == members.end();
}

}  // namespace

std::string describe(const ConfigurationChange& change) {
  std::string members;
  for (ReplicaId r : change.members)
    members += (members.empty() ? "" : ",") + std::to_string(r.value);
  return "epoch " + std::to_string(change.epoch) + ": members [" + members + "] from " +
         std::to_string(change.effective_us) + " us";
}

Bytes encode_configuration_change(const ConfigurationChange& change) {
  Bytes out;
  Writer w(out);
  w.u8(kChangeVersion);
  w.varint(change.epoch);
  w.varint(change.members.size());
  for (ReplicaId r : change.members)
    w.varint(r.value);
  w.varint(change.effective_us);
  return out;
}

std::optional<ConfigurationChange> decode_configuration_change(std::span<const uint8_t> bytes) {
  Reader r(bytes);
  if (r.u8() != kChangeVersion) return std::nullopt;
  ConfigurationChange change;
  change.epoch = r.varint();
  const uint64_t n = r.count(1);
  if (n > kMembersMax) return std::nullopt;
  for (uint64_t i = 0; i < n && r.ok(); ++i) {
    const uint64_t replica = r.varint();
    if (replica > UINT32_MAX) return std::nullopt;
    change.members.push_back(ReplicaId{static_cast<uint32_t>(replica)});
  }
  change.effective_us = r.varint();
  if (!r.ok() || !r.at_end() || !strictly_ascending(change.members)) return std::nullopt;
  return change;
}

bool Configuration::contains(ReplicaId replica) const {
  return std::binary_search(members.begin(), members.end(), replica,
                            [](ReplicaId a, ReplicaId b) { return a.value < b.value; });
}

Schedule::Schedule(std::vector<ReplicaId> initial_members) {
  std::sort(initial_members.begin(), initial_members.end(),
            [](ReplicaId a, ReplicaId b) { return a.value < b.value; });
  const uint32_t t = faults_tolerated(initial_members.size());
  configurations_.push_back(Configuration{0, 0, std::move(initial_members), t});
}

const Configuration& Schedule::at(uint64_t timestamp_us) const {
  LOCKSTEP_ASSERT(!configurations_.empty(), "a schedule starts with the cluster file's members");
  // Few configurations, newest most often asked for.
  for (auto it = configurations_.rbegin(); it != configurations_.rend(); ++it) {
    if (it->from_us <= timestamp_us) return *it;
  }
  return configurations_.front();
}

std::optional<std::string> Schedule::validate(const ConfigurationChange& change,
                                              uint64_t executed_us, uint32_t listed,
                                              uint64_t margin_us, uint64_t grid_us) const {
  const Configuration& current = latest();
  if (change.epoch != current.epoch + 1) {
    return "epoch " + std::to_string(change.epoch) + " does not follow the current epoch " +
           std::to_string(current.epoch);
  }
  if (change.members.size() < 3) return std::string("fewer than 3 members (t would be 0)");
  for (ReplicaId r : change.members) {
    if (r.value >= listed) return "replica " + std::to_string(r.value) + " is not listed";
  }
  // One replica in or out per change: a replica that holds the change on trust only (it cannot
  // decide it before it is a member) then counts no more faulty replicas in it than in the
  // configuration before (DESIGN §11.9).
  std::vector<ReplicaId> added;
  std::vector<ReplicaId> removed;
  std::set_difference(change.members.begin(), change.members.end(), current.members.begin(),
                      current.members.end(), std::back_inserter(added));
  std::set_difference(current.members.begin(), current.members.end(), change.members.begin(),
                      change.members.end(), std::back_inserter(removed));
  if (added.size() + removed.size() != 1) {
    return std::string("changes ") + std::to_string(added.size() + removed.size()) +
           " replicas: add or remove one at a time";
  }
  // A removed replica's key is retired (it may sign nothing more): it cannot come back.
  for (ReplicaId r : added) {
    for (const Configuration& earlier : configurations_) {
      if (earlier.contains(r)) {
        return "replica " + std::to_string(r.value) + " was removed earlier: it cannot return";
      }
    }
  }
  if (change.effective_us <= current.from_us) {
    return std::string("takes effect before the current configuration does");
  }
  if (change.effective_us < executed_us || change.effective_us - executed_us < margin_us) {
    return "takes effect too soon: at least " + std::to_string(margin_us) +
           " µs after it is ordered (it was ordered at " + std::to_string(executed_us) + ")";
  }
  if (grid_us != 0 && change.effective_us % grid_us != 0) {
    return "takes effect off the checkpoint grid (" + std::to_string(grid_us) + " µs)";
  }
  return std::nullopt;
}

void Schedule::adopt(const ConfigurationChange& change, ClientRequest proof) {
  LOCKSTEP_ASSERT(change.epoch == latest().epoch + 1 && change.effective_us > latest().from_us,
                  "configurations follow one another");
  configurations_.push_back(Configuration{change.epoch, change.effective_us, change.members,
                                          faults_tolerated(change.members.size())});
  proofs_.push_back(std::move(proof));
}

Schedule Schedule::truncated(uint64_t last_epoch) const {
  Schedule out = *this;
  while (out.configurations_.size() > 1 && out.configurations_.back().epoch > last_epoch) {
    out.configurations_.pop_back();
    out.proofs_.pop_back();
  }
  return out;
}

std::optional<Schedule> Schedule::from_proofs(std::vector<ReplicaId> initial_members,
                                              std::vector<ClientRequest> proofs,
                                              const crypto::Verifier& verifier, uint32_t listed) {
  Schedule schedule(std::move(initial_members));
  for (ClientRequest& proof : proofs) {
    if (!from_administrator(proof) || !crypto::verify_request(verifier, proof)) return std::nullopt;
    std::optional<ConfigurationChange> change = decode_configuration_change(proof.command);
    if (!change || change->epoch != schedule.latest().epoch + 1 ||
        change->effective_us <= schedule.latest().from_us || change->members.size() < 3) {
      return std::nullopt;
    }
    for (ReplicaId r : change->members) {
      if (r.value >= listed) return std::nullopt;
    }
    schedule.adopt(*change, std::move(proof));
  }
  return schedule;
}

Bytes Schedule::encode() const {
  // The proofs as one proposal's requests: the wire codec already encodes signed requests.
  Bytes out;
  encode_replica_message(SignedProposal{Proposal{ReplicaId{0}, 0, proofs_, {}}, {}}, out);
  return out;
}

Digest Schedule::digest() const {
  return crypto::digest(encode());
}

std::optional<Schedule> decode_schedule(std::span<const uint8_t> bytes,
                                        std::vector<ReplicaId> initial_members,
                                        const crypto::Verifier& verifier, uint32_t listed) {
  auto decoded = decode_replica_message(bytes);
  auto* message = std::get_if<ReplicaMessage>(&decoded);
  if (message == nullptr) return std::nullopt;
  auto* carrier = std::get_if<SignedProposal>(message);
  if (carrier == nullptr || !carrier->chain.empty() || !carrier->proposal.claim.empty() ||
      carrier->proposal.timestamp_us != 0 || carrier->proposal.origin.value != 0) {
    return std::nullopt;
  }
  return Schedule::from_proofs(std::move(initial_members), std::move(carrier->proposal.requests),
                               verifier, listed);
}

}  // namespace lockstep
