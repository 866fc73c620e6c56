#include "client/core/membership_learner.h"

#include <algorithm>
#include <utility>

namespace lockstep {
namespace {

// A change names at most every listed replica (ids as varints of at most 5 bytes), so a larger
// command cannot be one: it is refused before it takes memory.
size_t change_bytes_max(uint32_t listed) {
  return 32 + size_t{5} * listed;
}

}  // namespace

MembershipLearner::MembershipLearner(std::vector<ReplicaId> initial_members, uint32_t epoch0_faults,
                                     uint32_t listed, const crypto::Verifier* verifier)
    : schedule_(std::move(initial_members)),
      epoch0_faults_(epoch0_faults),
      listed_(listed),
      verifier_(verifier) {}

uint32_t MembershipLearner::faults_of(uint64_t epoch) const {
  // Epoch 0's t is the cluster file's, which the caller gives; later ones follow from the
  // members each change names.
  if (epoch == 0) return epoch0_faults_;
  return schedule_.configurations().at(epoch).t;
}

size_t MembershipLearner::candidate_count() const {
  size_t count = 0;
  for (const auto& [epoch, by_replica] : candidates_)
    count += by_replica.size();
  return count;
}

bool MembershipLearner::offer(ReplicaId from, const std::vector<ClientRequest>& changes) {
  const std::vector<ClientRequest>& known = schedule_.proofs();
  if (changes.size() <= known.size()) return false;  // nothing this learner lacks
  if (from.value >= listed_) return false;
  if (verifier_ == nullptr) {
    ++refused_;
    return false;
  }
  if (!std::equal(known.begin(), known.end(), changes.begin())) {
    // Its history contradicts one t+1 members vouched for: it is faulty.
    ++refused_;
    return false;
  }
  const size_t end = std::min(changes.size(), known.size() + kEpochsAhead);
  for (size_t i = known.size(); i < end; ++i) {
    const uint64_t epoch = i + 1;
    const ClientRequest& change = changes[i];
    // Cheap checks only (the signature waits for enough vouchers): the shape of a change for
    // this very epoch, so that nothing else is kept.
    const bool well_formed = from_administrator(change) &&
                             change.command.size() <= change_bytes_max(listed_) &&
                             change.signature.size() == sizeof(Signature) && [&] {
                               auto decoded = decode_configuration_change(change.command);
                               return decoded && decoded->epoch == epoch;
                             }();
    if (!well_formed) {
      ++refused_;
      break;
    }
    auto [kept, inserted] = candidates_[epoch].try_emplace(from.value, change);
    if (!inserted && kept->second != change) ++refused_;  // two for one epoch: the first stays
  }
  return adopt_vouched();
}

bool MembershipLearner::adopt_vouched() {
  bool grew = false;
  for (;;) {
    const Configuration& previous = schedule_.latest();
    auto next = candidates_.find(previous.epoch + 1);
    if (next == candidates_.end()) break;
    const uint64_t needed = uint64_t{faults_of(previous.epoch)} + 1;
    // The members of the previous epoch that showed each distinct change.
    const ClientRequest* vouched = nullptr;
    for (const auto& [replica, candidate] : next->second) {
      uint64_t vouchers = 0;
      for (const auto& [other, other_candidate] : next->second) {
        if (previous.contains(ReplicaId{other}) && other_candidate == candidate) ++vouchers;
      }
      if (vouchers >= needed) {
        vouched = &candidate;
        break;
      }
    }
    if (vouched == nullptr) break;
    std::vector<ClientRequest> proofs = schedule_.proofs();
    proofs.push_back(*vouched);
    std::optional<Schedule> extended = Schedule::from_proofs(
        schedule_.configurations().front().members, std::move(proofs), *verifier_, listed_);
    if (!extended) {
      // Vouched for by t+1 members but not signed by the administrator: more than t of them
      // lie. Dropping the epoch's candidates lets correct replicas' next offers start over.
      ++refused_;
      candidates_.erase(next);
      break;
    }
    schedule_ = std::move(*extended);
    candidates_.erase(candidates_.begin(), std::next(next));
    grew = true;
  }
  return grew;
}

bool MembershipLearner::adopt(const Schedule& schedule) {
  const std::vector<ClientRequest>& known = schedule_.proofs();
  const std::vector<ClientRequest>& offered = schedule.proofs();
  if (offered.size() <= known.size()) return false;
  if (!std::equal(known.begin(), known.end(), offered.begin()) ||
      schedule.configurations().front() != schedule_.configurations().front()) {
    ++refused_;
    return false;
  }
  schedule_ = schedule;
  candidates_.erase(candidates_.begin(), candidates_.upper_bound(schedule_.latest().epoch));
  // Candidates already held for later epochs may now have their vouchers.
  adopt_vouched();
  return true;
}

}  // namespace lockstep
