#include "sim/trace.h"

#include <cstdio>
#include <span>
#include <string_view>
#include <type_traits>
#include <variant>

#include "apps/kv/kv_machine.h"
#include "core/hlc.h"

namespace lockstep::sim {
namespace {

void hash_timestamp(EventHash& hash, const Timestamp& timestamp) {
  hash.add(timestamp.clock);
  hash.add(timestamp.source.value);
}

void hash_tail(EventHash& hash, const StreamTail& tail) {
  hash.add(tail.source.value);
  hash.add(tail.received);
  hash.add(tail.entries.size());
  for (const auto& entry : tail.entries) {
    hash.add(entry.index);
    hash_timestamp(hash, entry.timestamp);
    hash_request(hash, entry.request);
  }
}

// Hybrid clock values as "physical_us+counter", so a reader sees real time in the trace.
std::string clock_text(uint64_t clock) {
  std::string text = std::to_string(HybridClock::wall_us_of(clock));
  uint64_t counter = clock & ((uint64_t{1} << HybridClock::kCounterBits) - 1);
  if (counter != 0) text += "+" + std::to_string(counter);
  return text;
}

std::string members_text(const std::vector<ReplicaId>& members) {
  std::string text = "{";
  for (size_t i = 0; i < members.size(); ++i) {
    if (i > 0) text += ",";
    text += "r" + std::to_string(members[i].value);
  }
  return text + "}";
}

std::string tail_text(const StreamTail& tail) {
  std::string text = "r" + std::to_string(tail.source.value) + ":" + std::to_string(tail.received);
  if (!tail.entries.empty()) {
    text += "[" + std::to_string(tail.entries.front().index) + ".." +
            std::to_string(tail.entries.back().index) + "]";
  }
  return text;
}

}  // namespace

void hash_request(EventHash& hash, const ClientRequest& request) {
  hash.add(request.client.value);
  hash.add(request.sequence.value);
  hash.add(request.acked_below.value);
  hash.add_bytes(request.command);
}

void hash_reply(EventHash& hash, const ClientReply& reply) {
  hash.add(reply.client.value);
  hash.add(reply.sequence.value);
  hash.add(reply.replica.value);
  hash.add(static_cast<uint64_t>(reply.status));
  hash.add_bytes(reply.result);
}

void hash_message(EventHash& hash, const ReplicaMessage& message) {
  hash.add(message.index());
  std::visit(
      [&](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, SignedProposal>) {
          hash.add(m.proposal.origin.value);
          hash.add(m.proposal.timestamp_us);
          hash.add(m.proposal.requests.size());
          for (const ClientRequest& request : m.proposal.requests) {
            hash_request(hash, request);
            hash.add_bytes(request.signature);
          }
          for (const Endorsement& endorsement : m.chain) {
            hash.add(endorsement.signer.value);
            for (size_t i = 0; i < endorsement.signature.size(); i += 8) {
              uint64_t word = 0;
              for (size_t b = 0; b < 8; ++b)
                word |= uint64_t{endorsement.signature[i + b]} << (8 * b);
              hash.add(word);
            }
          }
          return;
        } else if constexpr (std::is_same_v<T, CheckpointVote>) {
          hash.add(m.replica.value);
          hash.add(m.boundary_us);
          hash.add_bytes(Bytes(m.digest.begin(), m.digest.end()));
          return;
        } else if constexpr (std::is_same_v<T, StateChunk>) {
          hash.add_bytes(Bytes(m.digest.begin(), m.digest.end()));
          hash.add(m.offset);
          hash.add(m.total);
          hash.add_bytes(m.data);
          return;
        } else if constexpr (std::is_same_v<T, StateChunkRequest>) {
          hash.add_bytes(Bytes(m.digest.begin(), m.digest.end()));
          hash.add(m.offset);
          return;
        } else {
          hash.add(m.sender.value);
        }
        if constexpr (std::is_same_v<T, SignedProposal> || std::is_same_v<T, CheckpointVote> ||
                      std::is_same_v<T, StateChunk> || std::is_same_v<T, StateChunkRequest>) {
          // hashed above
        } else if constexpr (std::is_same_v<T, ReplicaUpdate>) {
          hash.add(m.incarnation);
          hash.add(m.view.value);
          hash.add(m.clock);
          hash.add(m.entries.size());
          for (const auto& entry : m.entries) {
            hash.add(entry.index);
            hash_timestamp(hash, entry.timestamp);
            hash_request(hash, entry.request);
          }
          for (uint64_t received : m.received)
            hash.add(received);
        } else if constexpr (std::is_same_v<T, ForwardRequest>) {
          hash_request(hash, m.request);
        } else if constexpr (std::is_same_v<T, ViewChange>) {
          hash.add(m.view.value);
          for (auto member : m.members)
            hash.add(member.value);
          for (const auto& tail : m.tails)
            hash_tail(hash, tail);
        } else if constexpr (std::is_same_v<T, JoinRequest>) {
          hash.add(m.incarnation);
        } else if constexpr (std::is_same_v<T, StateRequest>) {
          hash.add(m.view.value);
          hash.add(m.donor.value);
        } else if constexpr (std::is_same_v<T, StateTransfer>) {
          hash.add(m.view.value);
          hash.add_bytes(m.protocol_state);
          hash.add_bytes(m.service_snapshot);
        } else {
          static_assert(std::is_same_v<T, NewView>);
          hash.add(m.view.value);
          for (auto member : m.members)
            hash.add(member.value);
          for (const auto& cut : m.cuts)
            hash_tail(hash, cut);
        }
      },
      message);
}

std::string describe_request_key(ClientId client, Sequence sequence) {
  char buffer[48];
  // Byzantine mode: the id is (principal, session), both small: "p3.1#17".
  const uint32_t principal = principal_of(client);
  const auto session = static_cast<uint32_t>(client.value);
  if (principal != 0 && principal < 0x10000 && session < 0x10000) {
    std::snprintf(buffer, sizeof buffer, "p%u.%u#%llu", principal, session,
                  static_cast<unsigned long long>(sequence.value));
    return buffer;
  }
  // Failstop: client ids are random 64-bit numbers; the low 16 bits in hex are enough to tell the
  // clients of one run apart in a trace and short enough to read.
  std::snprintf(buffer, sizeof buffer, "c%04llx#%llu",
                static_cast<unsigned long long>(client.value & 0xffff),
                static_cast<unsigned long long>(sequence.value));
  return buffer;
}

std::string describe(const Timestamp& timestamp) {
  return clock_text(timestamp.clock) + "@r" + std::to_string(timestamp.source.value);
}

std::string describe(const ReplicaMessage& message) {
  return std::visit(
      [](const auto& m) -> std::string {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, ReplicaUpdate>) {
          std::string text = "Update{v" + std::to_string(m.view.value) + " clock " +
                             clock_text(m.clock) + " recv [";
          for (size_t i = 0; i < m.received.size(); ++i) {
            if (i > 0) text += " ";
            text += std::to_string(m.received[i]);
          }
          text += "]";
          // Entries are listed up to a few; a trace line must stay one line.
          constexpr size_t kShown = 4;
          for (size_t i = 0; i < m.entries.size() && i < kShown; ++i) {
            const auto& entry = m.entries[i];
            text += " " + std::to_string(entry.index) + ":" +
                    describe_request_key(entry.request.client, entry.request.sequence) + "@" +
                    clock_text(entry.timestamp.clock);
          }
          if (m.entries.size() > kShown) {
            text += " +" + std::to_string(m.entries.size() - kShown) + " more";
          }
          return text + "}";
        } else if constexpr (std::is_same_v<T, ForwardRequest>) {
          return "Forward{" + describe_request_key(m.request.client, m.request.sequence) + "}";
        } else if constexpr (std::is_same_v<T, SignedProposal>) {
          std::string text = "Proposal{r" + std::to_string(m.proposal.origin.value) + "@" +
                             std::to_string(m.proposal.timestamp_us) + " [";
          constexpr size_t kShown = 4;
          for (size_t i = 0; i < m.proposal.requests.size() && i < kShown; ++i) {
            if (i > 0) text += " ";
            const ClientRequest& request = m.proposal.requests[i];
            text += describe_request_key(request.client, request.sequence);
          }
          if (m.proposal.requests.size() > kShown) {
            text += " +" + std::to_string(m.proposal.requests.size() - kShown) + " more";
          }
          text += "] chain";
          for (const Endorsement& endorsement : m.chain)
            text += " r" + std::to_string(endorsement.signer.value);
          return text + "}";
        } else if constexpr (std::is_same_v<T, ViewChange>) {
          std::string text =
              "ViewChange{v" + std::to_string(m.view.value) + " " + members_text(m.members);
          for (const auto& tail : m.tails)
            text += " " + tail_text(tail);
          return text + "}";
        } else if constexpr (std::is_same_v<T, JoinRequest>) {
          return "JoinRequest{inc " + std::to_string(m.incarnation) + "}";
        } else if constexpr (std::is_same_v<T, StateRequest>) {
          return "StateRequest{v" + std::to_string(m.view.value) + " donor r" +
                 std::to_string(m.donor.value) + "}";
        } else if constexpr (std::is_same_v<T, CheckpointVote>) {
          return "CheckpointVote{r" + std::to_string(m.replica.value) + " at " +
                 std::to_string(m.boundary_us) + "us}";
        } else if constexpr (std::is_same_v<T, StateChunk>) {
          return "StateChunk{" + std::to_string(m.offset) + "+" + std::to_string(m.data.size()) +
                 " of " + std::to_string(m.total) + "}";
        } else if constexpr (std::is_same_v<T, StateChunkRequest>) {
          return "StateChunkRequest{from " + std::to_string(m.offset) + "}";
        } else if constexpr (std::is_same_v<T, StateTransfer>) {
          return "StateTransfer{v" + std::to_string(m.view.value) + " " +
                 std::to_string(m.protocol_state.size()) + "+" +
                 std::to_string(m.service_snapshot.size()) + " bytes}";
        } else {
          std::string text =
              "NewView{v" + std::to_string(m.view.value) + " " + members_text(m.members);
          for (const auto& cut : m.cuts)
            text += " cut " + tail_text(cut);
          return text + "}";
        }
      },
      message);
}

std::string describe(const ClientRequest& request) {
  return "Request{" + describe_request_key(request.client, request.sequence) + " acked<" +
         std::to_string(request.acked_below.value) + " " + describe_command(request.command) + "}";
}

std::string describe(const ClientReply& reply) {
  const char* status = reply.status == ReplyStatus::kOk     ? "ok"
                       : reply.status == ReplyStatus::kBusy ? "busy"
                                                            : "not-serving";
  std::string text = "Reply{" + describe_request_key(reply.client, reply.sequence) + " " + status;
  if (reply.status == ReplyStatus::kOk) text += " " + describe_result(reply.result);
  return text + "}";
}

std::string describe_command(const Bytes& command) {
  auto decoded = kv::decode_command(command);
  if (!decoded) return "<" + std::to_string(command.size()) + " bytes>";
  switch (decoded->op) {
    case kv::Op::kGet:
      return "get " + decoded->key;
    case kv::Op::kPut:
      return "put " + decoded->key + "=" + decoded->value;
    case kv::Op::kDel:
      return "del " + decoded->key;
    case kv::Op::kAppend:
      return "append " + decoded->key + "+=" + decoded->value;
    case kv::Op::kCas:
      return "cas " + decoded->key + " " + decoded->expected + "->" + decoded->value;
    case kv::Op::kIncr:
      return "incr " + decoded->key + " " + std::to_string(decoded->delta);
  }
  return "<unknown op>";
}

std::string describe_result(const Bytes& result) {
  auto decoded = kv::decode_result(result);
  if (!decoded) return "<" + std::to_string(result.size()) + " bytes>";
  switch (decoded->code) {
    case kv::ResultCode::kOk:
      return "\"" + decoded->value + "\"";
    case kv::ResultCode::kNotFound:
      return "absent";
    case kv::ResultCode::kError:
      return "error(" + decoded->value + ")";
  }
  return "<unknown code>";
}

}  // namespace lockstep::sim
