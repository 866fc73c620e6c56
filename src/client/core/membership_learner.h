// How a client comes to trust the administrator's membership changes (byzantine mode,
// crypto/membership.h, docs/DESIGN.md §11.9).
//
// The administrator's signature proves a change was signed, not that the order adopted it: the
// administrator may sign two changes for one epoch (the replicas refuse one, say as too soon, and
// it is re-signed with a later boundary), and a faulty replica could show a client the refused
// one first. So a change for epoch k+1 is adopted only once t_k+1 distinct members of epoch k
// (the configuration this client knows for k) showed the very same signed change: at most t_k of
// them are faulty, so one correct member vouches that the order adopted it.
//
// Each replica's offer (SignedReplies::membership_changes, every epoch after 0 in order, the
// batch's replica signature already checked by the caller) leaves at most one candidate per
// replica and epoch, for the next kEpochsAhead epochs the learner does not know yet; a replica
// that shows a second, different change for an epoch keeps its first and is counted once.
// Candidates are kept until their epoch is decided, so the vouchers may arrive on different
// batches, connections or sessions' replies, at any time. Signatures are checked only when a
// candidate has enough vouchers (replicas repeat their changes on many batches).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "core/messages.h"
#include "crypto/crypto.h"
#include "crypto/membership.h"

namespace lockstep {

class MembershipLearner {
 public:
  // Candidates are kept for this many epochs beyond the latest known one: a client that is that
  // far behind learns the rest from later batches, as replicas repeat their changes.
  static constexpr size_t kEpochsAhead = 8;

  // `epoch0_faults`: t of the first configuration (`initial_members`); `listed`: replicas in the
  // cluster file; `verifier` knows the administrator's key as client principal kAdminPrincipal
  // (not owned; null: every change is refused).
  MembershipLearner(std::vector<ReplicaId> initial_members, uint32_t epoch0_faults, uint32_t listed,
                    const crypto::Verifier* verifier);

  // What replica `from` showed; true when the schedule grew (one or more epochs).
  bool offer(ReplicaId from, const std::vector<ClientRequest>& changes);
  // A schedule vouched for elsewhere (another learner's): taken when it extends this one's.
  bool adopt(const Schedule& schedule);

  const Schedule& schedule() const { return schedule_; }
  // t of `epoch`, which the schedule knows.
  uint32_t faults_of(uint64_t epoch) const;
  // Changes refused: malformed, contradicting a known epoch, a replica's second change for an
  // epoch, or (with enough vouchers) a bad administrator signature.
  uint64_t refused() const { return refused_; }
  // Candidates held, for tests of the bound.
  size_t candidate_count() const;

 private:
  bool adopt_vouched();

  Schedule schedule_;
  uint32_t epoch0_faults_;
  uint32_t listed_;
  const crypto::Verifier* verifier_;
  // epoch -> replica -> the change it showed for that epoch (its first one).
  std::map<uint64_t, std::map<uint32_t, ClientRequest>> candidates_;
  uint64_t refused_ = 0;
};

}  // namespace lockstep
