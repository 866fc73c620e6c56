#include "sim/byzantine.h"

#include <algorithm>
#include <span>
#include <string>
#include <utility>

#include "apps/kv/kv_machine.h"
#include "core/assert.h"
#include "crypto/signing.h"
#include "protocol/byzantine/durability.h"
#include "statemachine/service.h"

namespace lockstep::sim {
namespace {

constexpr size_t kSeenRequestsMax = 64;
constexpr size_t kSeenProposalsMax = 64;
constexpr size_t kRewritesMax = 32;
constexpr uint32_t kJunkPrincipal = 0x7fffffff;  // no key: requests from it never verify

template <typename T>
void push_bounded(std::deque<T>& queue, T value, size_t max) {
  queue.push_back(std::move(value));
  if (queue.size() > max) queue.pop_front();
}

Signature garbage_signature(Random& random) {
  Signature signature{};
  for (auto& byte : signature)
    byte = static_cast<uint8_t>(random.below(256));
  return signature;
}

// A request nobody signed: an unknown principal, or a known one's id with a garbage signature.
ClientRequest junk_request(Random& random) {
  ClientRequest request;
  request.client = client_id_of(kJunkPrincipal, static_cast<uint32_t>(random.below(4)));
  request.sequence = Sequence{random.between(1, 1000)};
  kv::Command command{kv::Op::kPut, "byz-junk", "junk" + std::to_string(random.below(1000)), "", 0};
  request.command = kv::encode_command(command);
  const Signature signature = garbage_signature(random);
  request.signature.assign(signature.begin(), signature.end());
  return request;
}

}  // namespace

Bytes forged_snapshot(uint64_t boundary_us) {
  Service service(std::make_unique<kv::KvMachine>());
  ClientRequest request;
  request.client = client_id_of(kJunkPrincipal, 0);
  request.sequence = Sequence{1};
  request.command = kv::encode_command(
      kv::Command{kv::Op::kPut, "byz-forged", "at" + std::to_string(boundary_us), "", 0});
  service.execute(request, boundary_us);
  return service.snapshot();
}

Digest forged_order_hash(uint64_t boundary_us) {
  const std::string text = "byz-forged-order-below-" + std::to_string(boundary_us);
  return crypto::digest(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

Digest forged_position_digest(uint64_t boundary_us) {
  return crypto::position_digest(forged_order_hash(boundary_us),
                                 crypto::digest(forged_snapshot(boundary_us)));
}

Bytes forged_protocol_state(uint64_t boundary_us) {
  // As a donor sends it to a replica catching up: with the (first) membership schedule.
  return byzantine::encode_catch_up_state(
      byzantine::encode_base_and_batches(
          byzantine::Certificate{boundary_us, forged_order_hash(boundary_us), {}, {}}, {}),
      Schedule{}.encode());
}

std::string_view behaviour_name(Behaviour behaviour) {
  switch (behaviour) {
    case Behaviour::kWrongReplies:
      return "wrong_replies";
    case Behaviour::kEquivocate:
      return "equivocate";
    case Behaviour::kLateEquivocate:
      return "late_equivocate";
    case Behaviour::kSilence:
      return "silence";
    case Behaviour::kReplay:
      return "replay";
    case Behaviour::kForgeChain:
      return "forge_chain";
    case Behaviour::kBreakSignatures:
      return "break_signatures";
    case Behaviour::kShiftTimestamps:
      return "shift_timestamps";
    case Behaviour::kLateRelay:
      return "late_relay";
    case Behaviour::kFlood:
      return "flood";
    case Behaviour::kForgeState:
      return "forge_state";
  }
  return "unknown";
}

DrawnByzantineHook::DrawnByzantineHook(AdversarySetup setup, Random& draw)
    : setup_(std::move(setup)) {
  LOCKSTEP_ASSERT(setup_.slot_us > 0, "proposal slots are positive");
  const int64_t d = static_cast<int64_t>(d_us());
  const auto slot = static_cast<int64_t>(setup_.slot_us);
  for (const auto& [replica, signer] : setup_.faulty) {
    LOCKSTEP_ASSERT(signer != nullptr, "a faulty replica signs with its own key");
    Faulty f;
    f.signer = signer;
    bool any = false;
    // The behaviours before forge_state, drawn as they were before it existed.
    constexpr size_t kOriginalBehaviours = static_cast<size_t>(Behaviour::kForgeState);
    for (size_t b = 0; b < kOriginalBehaviours; ++b) {
      f.on[b] = draw.chance(350'000);
      any |= f.on[b];
    }
    if (!any) f.on[draw.below(kOriginalBehaviours)] = true;
    // Silence: towards all peers or a few, always or now and then.
    const bool all_peers = draw.chance(300'000);
    for (uint32_t r = 0; r < setup_.replica_count; ++r) {
      if (r != replica.value && (all_peers || draw.chance(500'000)))
        f.silenced.insert(ReplicaId{r});
    }
    f.silence_per_million =
        draw.chance(500'000) ? 1'000'000 : static_cast<uint32_t>(draw.between(100'000, 900'000));
    f.lie_per_million = static_cast<uint32_t>(draw.between(200'000, 1'000'000));
    f.mutate_per_million = static_cast<uint32_t>(draw.between(50'000, 500'000));
    f.flood_per_million = static_cast<uint32_t>(draw.between(2'000, 50'000));
    f.replay_per_million = static_cast<uint32_t>(draw.between(2'000, 50'000));
    // A lie about time: a little (inside the windows, where it shifts the order), or a lot
    // (outside them, where it must be rejected), into the past or the future.
    const int64_t reach = draw.chance(500'000) ? d : 3 * d * (setup_.t + 1);
    if (draw.chance(500'000)) {
      f.shift_low_us = slot;
      f.shift_high_us = std::max(slot, reach);
    } else {
      f.shift_low_us = -std::max(slot, reach);
      f.shift_high_us = -slot;
    }
    faulty_.emplace(replica, std::move(f));
  }
}

void DrawnByzantineHook::draw_late_behaviours(Random& draw) {
  for (auto& [replica, f] : faulty_) {
    f.on[static_cast<size_t>(Behaviour::kForgeState)] = draw.chance(350'000);
    f.forge_vote_per_million = static_cast<uint32_t>(draw.between(200'000, 1'000'000));
    f.forge_inject_per_million = static_cast<uint32_t>(draw.between(200'000, 1'000'000));
  }
}

DrawnByzantineHook::Faulty& DrawnByzantineHook::faulty(ReplicaId replica) {
  auto it = faulty_.find(replica);
  LOCKSTEP_ASSERT(it != faulty_.end(), "the hook is asked only about its faulty replicas");
  return it->second;
}

bool DrawnByzantineHook::has(ReplicaId replica, Behaviour behaviour) const {
  auto it = faulty_.find(replica);
  return it != faulty_.end() && it->second.on[static_cast<size_t>(behaviour)];
}

uint32_t DrawnByzantineHook::behaviour_mask() const {
  uint32_t mask = 0;
  for (const auto& [replica, f] : faulty_) {
    for (size_t b = 0; b < kBehaviourCount; ++b) {
      if (f.on[b]) mask |= 1u << b;
    }
  }
  return mask;
}

std::string DrawnByzantineHook::describe() const {
  std::string text;
  for (const auto& [replica, f] : faulty_) {
    if (!text.empty()) text += " ";
    text += "r" + std::to_string(replica.value) + ":";
    bool first = true;
    for (size_t b = 0; b < kBehaviourCount; ++b) {
      if (!f.on[b]) continue;
      if (!first) text += "+";
      first = false;
      text += behaviour_name(static_cast<Behaviour>(b));
    }
  }
  return text;
}

std::vector<ReplicaId> DrawnByzantineHook::honest_peers() const {
  std::vector<ReplicaId> peers;
  for (uint32_t r = 0; r < setup_.replica_count; ++r) {
    if (!setup_.faulty.contains(ReplicaId{r})) peers.push_back(ReplicaId{r});
  }
  return peers;
}

SignedProposal DrawnByzantineHook::sign_as(ReplicaId origin, Proposal proposal,
                                           const std::vector<ReplicaId>& endorsers) const {
  const Digest digest = crypto::proposal_digest(proposal);
  const Bytes signed_bytes = crypto::endorsement_signing_bytes(digest);
  SignedProposal message{std::move(proposal), {}};
  message.chain.push_back(Endorsement{origin, setup_.faulty.at(origin)->sign(signed_bytes)});
  for (ReplicaId endorser : endorsers) {
    message.chain.push_back(Endorsement{endorser, setup_.faulty.at(endorser)->sign(signed_bytes)});
  }
  return message;
}

Proposal DrawnByzantineHook::variant_of(const Faulty& f, const Proposal& proposal,
                                        Random& random) const {
  Proposal variant = proposal;
  switch (random.below(3)) {
    case 0:
      if (variant.requests.size() >= 2) {
        variant.requests.erase(variant.requests.begin() +
                               static_cast<ptrdiff_t>(random.below(variant.requests.size())));
        break;
      }
      [[fallthrough]];
    case 1:
      if (!f.seen_requests.empty()) {
        variant.requests.push_back(f.seen_requests[random.below(f.seen_requests.size())]);
        break;
      }
      [[fallthrough]];
    default:
      if (variant.requests.size() >= 2) {
        std::reverse(variant.requests.begin(), variant.requests.end());
      } else {
        variant.requests.clear();
      }
      break;
  }
  if (variant == proposal) variant.requests.push_back(junk_request(random));
  return variant;
}

void DrawnByzantineHook::remember(Faulty& f, const SignedProposal& message) {
  // The core sends one message to each peer in a row: remember it once.
  if (!f.seen_proposals.empty()) {
    const SignedProposal& last = f.seen_proposals.back();
    if (last.proposal.origin == message.proposal.origin &&
        last.proposal.timestamp_us == message.proposal.timestamp_us &&
        last.chain.size() == message.chain.size()) {
      return;
    }
  }
  push_bounded(f.seen_proposals, message, kSeenProposalsMax);
  for (const ClientRequest& request : message.proposal.requests)
    push_bounded(f.seen_requests, request, kSeenRequestsMax);
}

DrawnByzantineHook::Faulty::Rewrite& DrawnByzantineHook::rewrite_for(Faulty& f, ReplicaId self,
                                                                     const SignedProposal& original,
                                                                     Random& random) {
  for (Faulty::Rewrite& rewrite : f.rewrites) {
    if (rewrite.timestamp_us == original.proposal.timestamp_us) return rewrite;
  }
  Faulty::Rewrite rewrite;
  rewrite.timestamp_us = original.proposal.timestamp_us;
  rewrite.shifted = original;
  if (f.on[static_cast<size_t>(Behaviour::kShiftTimestamps)] && random.chance(500'000)) {
    const auto span = static_cast<uint64_t>(f.shift_high_us - f.shift_low_us);
    int64_t shift = f.shift_low_us + static_cast<int64_t>(random.between(0, span));
    // Mostly on a slot boundary (an off-slot timestamp is rejected outright, which is the
    // less interesting lie).
    if (random.chance(900'000)) shift -= shift % static_cast<int64_t>(setup_.slot_us);
    Proposal shifted = original.proposal;
    const auto timestamp = static_cast<int64_t>(shifted.timestamp_us) + shift;
    shifted.timestamp_us = static_cast<uint64_t>(std::max<int64_t>(timestamp, 0));
    rewrite.shifted = sign_as(self, std::move(shifted), {});
  }
  if (f.on[static_cast<size_t>(Behaviour::kEquivocate)] && random.chance(600'000)) {
    rewrite.has_variant = true;
    rewrite.variant = sign_as(self, variant_of(f, rewrite.shifted.proposal, random), {});
    for (uint32_t r = 0; r < setup_.replica_count; ++r) {
      if (r != self.value && random.chance(500'000)) rewrite.variant_peers.insert(ReplicaId{r});
    }
  }
  if (f.on[static_cast<size_t>(Behaviour::kLateEquivocate)] && random.chance(600'000)) {
    rewrite.late_planned = true;
    plan_late_value(f, self, rewrite.shifted, random);
  }
  f.rewrites.push_back(std::move(rewrite));
  if (f.rewrites.size() > kRewritesMax) f.rewrites.pop_front();
  return f.rewrites.back();
}

void DrawnByzantineHook::plan_late_value(Faulty& f, ReplicaId self, const SignedProposal& base,
                                         Random& random) {
  // The colluders endorse a second value; k signatures make it acceptable until τ + k·D at an
  // honest replica, which then relays it with k+1. With k = t the relay reaches the others
  // just before τ + (t+1)·D: a core that decides one round early has decided already.
  std::vector<ReplicaId> colluders;
  for (const auto& [replica, signer] : setup_.faulty) {
    if (replica != self) colluders.push_back(replica);
  }
  for (size_t i = colluders.size(); i > 1; --i)
    std::swap(colluders[i - 1], colluders[random.below(i)]);
  const size_t used =
      random.chance(600'000) ? colluders.size() : random.below(colluders.size() + 1);
  colluders.resize(used);
  const SignedProposal late = sign_as(self, variant_of(f, base.proposal, random), colluders);
  std::vector<ReplicaId> targets = honest_peers();
  for (size_t i = targets.size(); i > 1; --i)
    std::swap(targets[i - 1], targets[random.below(i)]);
  targets.resize(random.between(1, targets.size()));
  const uint64_t margin_ns = random.between(1'000, std::max<uint64_t>(1'000, d_us() * 1000 / 2));
  for (ReplicaId to : targets)
    f.outbox.push_back(Faulty::Planned{to, late, true, margin_ns});
}

bool DrawnByzantineHook::on_peer_send(ReplicaId from, ReplicaId to, ReplicaMessage& message,
                                      Random& random) {
  Faulty& f = faulty(from);
  if (f.on[static_cast<size_t>(Behaviour::kSilence)] && f.silenced.contains(to) &&
      random.chance(f.silence_per_million)) {
    return false;
  }
  if (f.on[static_cast<size_t>(Behaviour::kForgeState)] && forge_state(f, from, message, random)) {
    return true;
  }
  auto* signed_proposal = std::get_if<SignedProposal>(&message);
  if (signed_proposal == nullptr) return true;
  remember(f, *signed_proposal);
  const bool own = signed_proposal->proposal.origin == from && signed_proposal->chain.size() == 1;
  if (own) {
    if (f.on[static_cast<size_t>(Behaviour::kShiftTimestamps)] ||
        f.on[static_cast<size_t>(Behaviour::kEquivocate)] ||
        f.on[static_cast<size_t>(Behaviour::kLateEquivocate)]) {
      const Faulty::Rewrite& rewrite = rewrite_for(f, from, *signed_proposal, random);
      *signed_proposal = rewrite.has_variant && rewrite.variant_peers.contains(to)
                             ? rewrite.variant
                             : rewrite.shifted;
    }
  } else {
    if (f.on[static_cast<size_t>(Behaviour::kLateRelay)] && random.chance(500'000)) {
      const uint64_t margin_ns =
          random.between(1'000, std::max<uint64_t>(1'000, d_us() * 1000 / 2));
      f.outbox.push_back(Faulty::Planned{to, *signed_proposal, true, margin_ns});
      return false;
    }
    auto& chain = signed_proposal->chain;
    if (f.on[static_cast<size_t>(Behaviour::kForgeChain)] && chain.size() >= 2 &&
        random.chance(f.mutate_per_million)) {
      if (random.chance(500'000)) {
        chain.erase(chain.begin() + static_cast<ptrdiff_t>(random.between(1, chain.size() - 1)));
      } else {
        chain.push_back(chain[random.below(chain.size())]);
      }
    }
  }
  if (f.on[static_cast<size_t>(Behaviour::kBreakSignatures)] &&
      random.chance(f.mutate_per_million) && !signed_proposal->chain.empty()) {
    Endorsement& endorsement = signed_proposal->chain[random.below(signed_proposal->chain.size())];
    endorsement.signature[random.below(32)] ^= static_cast<uint8_t>(random.between(1, 255));
  }
  return true;
}

bool DrawnByzantineHook::forge_state(Faulty& f, ReplicaId from, ReplicaMessage& message,
                                     Random& random) {
  if (auto* vote = std::get_if<CheckpointVote>(&message)) {
    if (vote->boundary_us > f.boundary_us) {
      // Unasked snapshots for this boundary, timed to reach a joiner while it waits for one.
      f.boundary_us = vote->boundary_us;
      for (uint32_t r = 0; r < setup_.replica_count; ++r) {
        if (r != from.value && random.chance(f.forge_inject_per_million))
          f.forged_due.emplace_back(ReplicaId{r}, vote->boundary_us);
      }
    }
    // The colluders forge the same snapshot for a boundary, so their votes add up (to t at most:
    // a joiner needs t+1). An honest vote now and then makes this replica a signer that joiners
    // ask for the snapshot, which it then forges.
    if (random.chance(f.forge_vote_per_million)) {
      vote->digest = forged_position_digest(vote->boundary_us);
      vote->signature = f.signer->sign(
          crypto::checkpoint_vote_signing_bytes(from, vote->boundary_us, vote->digest));
    }
    return true;
  }
  if (auto* transfer = std::get_if<StateTransfer>(&message)) {
    // Either the state its votes named (the forged order hash with the forged snapshot), the
    // real snapshot under the forged order hash, or the real one with a byte flipped (which may
    // not even decode).
    if (random.chance(500'000) || transfer->service_snapshot.empty()) {
      transfer->protocol_state = forged_protocol_state(transfer->view.value);
      transfer->service_snapshot = forged_snapshot(transfer->view.value);
    } else if (random.chance(333'333)) {
      transfer->protocol_state = forged_protocol_state(transfer->view.value);
    } else {
      transfer->service_snapshot[random.below(transfer->service_snapshot.size())] ^=
          static_cast<uint8_t>(random.between(1, 255));
    }
    return true;
  }
  return false;
}

bool DrawnByzantineHook::on_client_reply(ReplicaId from, ClientReply& reply, Random& random) {
  Faulty& f = faulty(from);
  if (f.on[static_cast<size_t>(Behaviour::kSilence)] && random.chance(f.silence_per_million / 2)) {
    return false;
  }
  if (!f.on[static_cast<size_t>(Behaviour::kWrongReplies)] || !random.chance(f.lie_per_million)) {
    return true;
  }
  // A lie a client can decode: a value nobody wrote, "not found" for what exists, or the
  // reverse. Only a quorum of matching replies keeps it out.
  std::optional<kv::Result> result = kv::decode_result(reply.result);
  if (!result) {
    reply.result.push_back(0x5a);
  } else {
    if (result->code == kv::ResultCode::kNotFound) {
      result->code = kv::ResultCode::kOk;
      result->value = "lie" + std::to_string(random.below(1000)) + ";";
    } else if (result->value.empty()) {
      result->code = kv::ResultCode::kNotFound;
    } else {
      result->value = "lie" + std::to_string(random.below(1000)) + ";";
    }
    reply.result = kv::encode_result(*result);
  }
  // Now and then, claim to be another replica (so the lie would count twice): the signature
  // check of the batch must throw it out.
  if (random.chance(100'000)) {
    reply.replica = ReplicaId{(reply.replica.value + 1) % setup_.replica_count};
  }
  return true;
}

std::vector<ByzantineHook::Injection> DrawnByzantineHook::on_step(const Step& step,
                                                                  Random& random) {
  Faulty& f = faulty(step.replica);
  std::vector<Injection> out;
  const uint64_t d_ns = d_us() * 1000;
  // Held and planned values: timed to arrive `margin` before the end of the window an honest
  // receiver gives their chain, [τ - m·ε, τ + m·D] on its clock (within ε/2 of true time).
  for (Faulty::Planned& planned : f.outbox) {
    std::optional<uint64_t> at;
    if (planned.late) {
      const uint64_t m = std::min<uint64_t>(planned.message.chain.size(), setup_.t + 1);
      const auto end =
          static_cast<int64_t>(planned.message.proposal.timestamp_us * 1000 + m * d_ns -
                               setup_.epsilon_us * 500 - planned.margin_ns) -
          step.wall_epoch_ns;
      at = std::max<uint64_t>(step.sim_ns, static_cast<uint64_t>(std::max<int64_t>(end, 0)));
    }
    out.push_back(Injection{planned.to, std::move(planned.message), at});
  }
  f.outbox.clear();

  std::vector<ReplicaId> peers;
  for (uint32_t r = 0; r < setup_.replica_count; ++r) {
    if (r != step.replica.value) peers.push_back(ReplicaId{r});
  }
  auto send_to_some = [&](const SignedProposal& message) {
    const bool all = random.chance(500'000);
    for (ReplicaId to : peers) {
      if (all || random.chance(500'000)) out.push_back(Injection{to, message, std::nullopt});
    }
  };

  if (f.on[static_cast<size_t>(Behaviour::kReplay)] && !f.seen_proposals.empty() &&
      random.chance(f.replay_per_million)) {
    send_to_some(f.seen_proposals[random.below(f.seen_proposals.size())]);
  }

  if (f.on[static_cast<size_t>(Behaviour::kForgeChain)] && !f.seen_proposals.empty() &&
      random.chance(f.mutate_per_million / 20)) {
    // Claim another origin: someone else's (or our own) proposal under an honest replica's name,
    // with a signature that is garbage, endorsed by ourselves for good measure.
    SignedProposal forged = f.seen_proposals[random.below(f.seen_proposals.size())];
    forged.proposal.origin = ReplicaId{static_cast<uint32_t>(random.below(setup_.replica_count))};
    if (forged.proposal.origin == step.replica) {
      forged.proposal.origin = ReplicaId{(step.replica.value + 1) % setup_.replica_count};
    }
    if (random.chance(500'000)) {
      forged.proposal.timestamp_us = step.now.wall_us - step.now.wall_us % setup_.slot_us;
    }
    const Digest digest = crypto::proposal_digest(forged.proposal);
    forged.chain = {Endorsement{forged.proposal.origin, garbage_signature(random)}};
    if (random.chance(500'000)) {
      forged.chain.push_back(
          Endorsement{step.replica, f.signer->sign(crypto::endorsement_signing_bytes(digest))});
    }
    send_to_some(forged);
  }

  // Unasked forged snapshots: a joiner takes t+1 votes for a boundary within about Δ of the
  // votes going out, and asks for the snapshot then; these arrive around that time.
  for (const auto& [to, boundary] : f.forged_due) {
    out.push_back(
        Injection{to,
                  StateTransfer{step.replica, ViewNumber{boundary}, forged_protocol_state(boundary),
                                forged_snapshot(boundary)},
                  step.sim_ns + random.between(0, 3 * d_ns)});
  }
  f.forged_due.clear();

  if (f.on[static_cast<size_t>(Behaviour::kFlood)] && random.chance(f.flood_per_million)) {
    // Proposals of our own in recent slots (inside the window for one signature, so honest
    // replicas accept, relay and decide them), full of duplicates and junk.
    const uint64_t slot = setup_.slot_us;
    const uint64_t now_slot = step.now.wall_us - step.now.wall_us % slot;
    const uint64_t count = random.between(1, 6);
    std::vector<ReplicaId> endorsers;
    if (random.chance(300'000)) {
      for (const auto& [replica, signer] : setup_.faulty) {
        if (replica != step.replica) endorsers.push_back(replica);
      }
    }
    for (uint64_t i = 0; i < count; ++i) {
      uint64_t timestamp =
          now_slot - slot * random.between(1, std::max<uint64_t>(1, d_us() / slot));
      if (timestamp <= f.flood_slot_us) timestamp = f.flood_slot_us + slot;
      f.flood_slot_us = timestamp;
      Proposal proposal{step.replica, timestamp, {}, {}};
      const uint64_t requests = random.between(1, 8);
      for (uint64_t k = 0; k < requests; ++k) {
        if (!f.seen_requests.empty() && random.chance(600'000)) {
          ClientRequest request = f.seen_requests[random.below(f.seen_requests.size())];
          // A copy with its command altered keeps the client's (now wrong) signature.
          if (random.chance(200'000)) request.command.push_back(0x21);
          proposal.requests.push_back(std::move(request));
        } else {
          proposal.requests.push_back(junk_request(random));
        }
      }
      const SignedProposal message = sign_as(step.replica, std::move(proposal), endorsers);
      for (ReplicaId to : peers)
        out.push_back(Injection{to, message, std::nullopt});
    }
  }
  return out;
}

}  // namespace lockstep::sim
