// The byzantine mode's adversary: a ByzantineHook whose behaviours are drawn from the seed, per
// faulty replica (swarm testing again: different seeds stress different mixes of lies). Every
// faulty replica runs a real, honest Replica underneath; what it sends passes through here.
//
// Behaviours (each behind the hook, each on for a share of the faulty replicas):
//   wrong_replies     alters the result bytes of replies (still decodable, validly signed by the
//                     liar), and now and then claims another replica's identity in a reply
//   equivocate        sends a differently-composed version of its own proposal (same origin and
//                     timestamp, other requests), validly signed, to some of its peers
//   late_equivocate   the Dolev–Strong attack: a second version of its own proposal, endorsed by
//                     the colluding faulty replicas, delivered to a few honest replicas just
//                     before the end of their acceptance window (τ + k·D for k signatures)
//   silence           drops everything (or a share of what it sends) to some peers and clients
//   replay            sends old SignedProposals again, later (outside their window by then)
//   forge_chain       claims another origin with a garbage signature, drops or repeats signers
//                     in relayed chains
//   break_signatures  flips bytes of endorsement signatures
//   shift_timestamps  re-signs its own proposals with a timestamp in the future or past
//   late_relay        holds relayed values back from some peers, releasing them near the end of
//                     the window
//   flood             many extra validly-signed proposals of duplicate or junk requests
//   forge_state       checkpoints (docs/DESIGN.md §11.7): votes for a forged snapshot's digest
//                     (validly signed by itself, per peer), answers StateRequests with a forged
//                     snapshot, and sends forged StateTransfers unasked: a replica catching up
//                     must never load one (drawn after the others, from draw_late_behaviours)
//
// Faulty replicas collude: the hook holds every faulty replica's Signer, never an honest one's.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/crypto.h"
#include "sim/hooks.h"

namespace lockstep::sim {

enum class Behaviour : uint8_t {
  kWrongReplies,
  kEquivocate,
  kLateEquivocate,
  kSilence,
  kReplay,
  kForgeChain,
  kBreakSignatures,
  kShiftTimestamps,
  kLateRelay,
  kFlood,
  kForgeState,
};
inline constexpr size_t kBehaviourCount = 11;
std::string_view behaviour_name(Behaviour behaviour);

// A valid service snapshot (a KV state with one key, "byz-forged", that no honest client writes)
// that no honest replica ever has: what forge_state serves for `boundary_us`, and what the
// simulator's planted `load_forged_state` feeds a joiner.
Bytes forged_snapshot(uint64_t boundary_us);
// A vote names the order's running hash below its boundary with the snapshot's digest
// (crypto::position_digest), and a StateTransfer carries that hash: the forgers claim one no
// honest order has, the same for every colluder.
Digest forged_order_hash(uint64_t boundary_us);
// What a forged vote for `boundary_us` signs: the forged order hash with the forged snapshot's.
Digest forged_position_digest(uint64_t boundary_us);
// A forged StateTransfer's protocol_state: the forged base at `boundary_us`, no batches after it.
Bytes forged_protocol_state(uint64_t boundary_us);

struct AdversarySetup {
  uint32_t t = 0;
  uint32_t replica_count = 0;
  uint64_t delta_us = 0;
  uint64_t epsilon_us = 0;
  uint64_t slot_us = 100;
  // The faulty replicas and their keys (the colluders).
  std::map<ReplicaId, const crypto::Signer*> faulty;
};

class DrawnByzantineHook final : public ByzantineHook {
 public:
  // Draws each faulty replica's behaviours (at least one each) from `draw`.
  DrawnByzantineHook(AdversarySetup setup, Random& draw);
  // Behaviours added after the others (forge_state), drawn from a stream of their own so that
  // adding them left the older draws of every seed as they were.
  void draw_late_behaviours(Random& draw);

  bool is_byzantine(ReplicaId replica) const override { return setup_.faulty.contains(replica); }
  bool on_peer_send(ReplicaId from, ReplicaId to, ReplicaMessage& message, Random& random) override;
  bool on_client_reply(ReplicaId from, ClientReply& reply, Random& random) override;
  std::vector<Injection> on_step(const Step& step, Random& random) override;

  // "r1:equivocate+flood r4:silence", for the run's summary line.
  std::string describe() const;
  bool has(ReplicaId replica, Behaviour behaviour) const;
  // Union of every faulty replica's behaviours, as a bit set (bit = Behaviour).
  uint32_t behaviour_mask() const;

 private:
  struct Faulty {
    std::array<bool, kBehaviourCount> on{};
    const crypto::Signer* signer = nullptr;
    std::set<ReplicaId> silenced;  // peers it sends nothing to (per share below)
    uint32_t silence_per_million = 0;
    uint32_t lie_per_million = 0;
    uint32_t mutate_per_million = 0;  // forge_chain / break_signatures on a relayed message
    uint32_t flood_per_million = 0;   // per step
    uint32_t replay_per_million = 0;  // per step
    int64_t shift_low_us = 0;         // shift_timestamps: range of the lie
    int64_t shift_high_us = 0;
    // What it has seen go out, for variants, replays and floods (bounded).
    std::deque<ClientRequest> seen_requests;
    std::deque<SignedProposal> seen_proposals;
    // Per own proposal (by original timestamp): the rewritten versions, so that every peer of one
    // group gets the same one.
    struct Rewrite {
      uint64_t timestamp_us = 0;
      SignedProposal shifted;  // the proposal after a timestamp lie (or unchanged)
      bool has_variant = false;
      SignedProposal variant;
      std::set<ReplicaId> variant_peers;
      bool late_planned = false;
    };
    std::deque<Rewrite> rewrites;
    // Held back or planned at send time, released at the next step: either at once, or (late)
    // timed to arrive just inside the receiver's window for the message's chain length.
    struct Planned {
      ReplicaId to;
      SignedProposal message;
      bool late = false;
      uint64_t margin_ns = 0;  // how far before the window's end it arrives
    };
    std::vector<Planned> outbox;
    uint64_t flood_slot_us = 0;  // last timestamp used by a flood, so floods never reuse one
    // forge_state: how often a vote names the forged digest (else it is honest, which makes this
    // replica one of the signers a joiner asks for the snapshot), and the latest boundary seen.
    uint32_t forge_vote_per_million = 0;
    uint32_t forge_inject_per_million = 0;  // per boundary and peer: an unasked forged snapshot
    uint64_t boundary_us = 0;
    std::vector<std::pair<ReplicaId, uint64_t>> forged_due;  // (peer, boundary), sent next step
  };

  Faulty& faulty(ReplicaId replica);
  bool forge_state(Faulty& f, ReplicaId from, ReplicaMessage& message, Random& random);
  Faulty::Rewrite& rewrite_for(Faulty& f, ReplicaId self, const SignedProposal& original,
                               Random& random);
  SignedProposal sign_as(ReplicaId origin, Proposal proposal,
                         const std::vector<ReplicaId>& endorsers) const;
  Proposal variant_of(const Faulty& f, const Proposal& proposal, Random& random) const;
  void plan_late_value(Faulty& f, ReplicaId self, const SignedProposal& original, Random& random);
  void remember(Faulty& f, const SignedProposal& message);
  std::vector<ReplicaId> honest_peers() const;
  uint64_t d_us() const { return setup_.delta_us + setup_.epsilon_us; }

  AdversarySetup setup_;
  std::map<ReplicaId, Faulty> faulty_;
};

}  // namespace lockstep::sim
