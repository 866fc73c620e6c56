// The codec of core/codec.h. One field list per message serves both to size and to write it
// (`put` is a template over the sink), so the exact frame size is known before the first byte is
// written: one reservation, no reallocation, and an assertion that the two passes agree.
//
// The checksum is XXH3-64 of the payload seeded with header bytes 0..7 (length, version, type,
// reserved). A checksum over the payload alone would let a corrupted type byte reinterpret an
// intact payload as another message, which the structure check does not always catch; the seed
// covers the header at no extra cost.
#include "core/codec.h"

#include <xxhash.h>

#include <algorithm>
#include <array>
#include <bit>
#include <limits>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>

#include "core/assert.h"
#include "core/wire.h"

namespace lockstep {
namespace {

// The first byte of an encoded ReplicaMessage. Values are part of the wire format: never reuse
// one, only add.
enum class ReplicaTag : uint8_t {
  kReplicaUpdate = 1,
  kForwardRequest = 2,
  kViewChange = 3,
  kNewView = 4,
  kSignedProposal = 5,
  kJoinRequest = 6,
  kStateRequest = 7,
  kStateTransfer = 8,
  kCheckpointVote = 9,
  kStateChunk = 10,
  kStateChunkRequest = 11,
};

// Minimum encoded bytes of one vector item, for Reader::count: every varint and every length
// prefix takes at least one byte.
// client, sequence, acked_below, command length, signature length
constexpr size_t kClientRequestBytesMin = 5;
// client, sequence, replica, status, result length, epoch
constexpr size_t kClientReplyBytesMin = 6;
constexpr size_t kEndorsementBytesMin = 1 + sizeof(Signature);        // signer, raw signature
constexpr size_t kOrderedEntryBytesMin = 3 + kClientRequestBytesMin;  // index, clock, source
constexpr size_t kStreamTailBytesMin = 3;  // source, received, entries count
constexpr size_t kReplicaIdBytesMin = 1;
constexpr size_t kVarintBytesMin = 1;

constexpr size_t varint_bytes(uint64_t v) {
  return (static_cast<size_t>(std::bit_width(v | 1)) + 6) / 7;
}

// A sink with Writer's interface that only counts, so `put` sizes a message exactly.
class SizeCounter {
 public:
  void u8(uint8_t) { bytes_ += 1; }
  void varint(uint64_t v) { bytes_ += varint_bytes(v); }
  void bytes(std::span<const uint8_t> b) { bytes_ += varint_bytes(b.size()) + b.size(); }
  void raw(std::span<const uint8_t> b) { bytes_ += b.size(); }
  size_t total() const { return bytes_; }

 private:
  size_t bytes_ = 0;
};

// ---- encoding: fields in declaration order ----------------------------------------------------

// Fixed-size fields (signatures) go as raw bytes, no length: the type fixes it.
void put_raw(SizeCounter& s, std::span<const uint8_t> b) {
  s.raw(b);
}
void put_raw(Writer& w, std::span<const uint8_t> b) {
  for (uint8_t byte : b)
    w.u8(byte);
}

template <typename Sink>
void put(Sink& s, ReplicaId id) {
  s.varint(id.value);
}
template <typename Sink>
void put(Sink& s, const Timestamp& t) {
  s.varint(t.clock);
  put(s, t.source);
}
template <typename Sink>
void put(Sink& s, const ClientRequest& m) {
  s.varint(m.client.value);
  s.varint(m.sequence.value);
  s.varint(m.acked_below.value);
  s.bytes(m.command);
  s.bytes(m.signature);
}
template <typename Sink>
void put(Sink& s, const ClientReply& m) {
  s.varint(m.client.value);
  s.varint(m.sequence.value);
  put(s, m.replica);
  s.u8(static_cast<uint8_t>(m.status));
  s.bytes(m.result);
  s.varint(m.epoch);
}
template <typename Sink>
void put(Sink& s, const OrderedEntry& m) {
  s.varint(m.index);
  put(s, m.timestamp);
  put(s, m.request);
}
template <typename Sink>
void put(Sink& s, const std::vector<OrderedEntry>& entries) {
  s.varint(entries.size());
  for (const OrderedEntry& e : entries)
    put(s, e);
}
template <typename Sink>
void put(Sink& s, const std::vector<ReplicaId>& ids) {
  s.varint(ids.size());
  for (ReplicaId id : ids)
    put(s, id);
}
template <typename Sink>
void put(Sink& s, const StreamTail& m) {
  put(s, m.source);
  s.varint(m.received);
  put(s, m.entries);
}
template <typename Sink>
void put(Sink& s, const std::vector<StreamTail>& tails) {
  s.varint(tails.size());
  for (const StreamTail& t : tails)
    put(s, t);
}
template <typename Sink>
void put(Sink& s, const ReplicaUpdate& m) {
  put(s, m.sender);
  s.varint(m.incarnation);
  s.u8(m.durable ? 1 : 0);
  s.varint(m.view.value);
  s.varint(m.clock);
  put(s, m.entries);
  s.varint(m.received.size());
  for (uint64_t r : m.received)
    s.varint(r);
}
template <typename Sink>
void put(Sink& s, const ForwardRequest& m) {
  put(s, m.sender);
  put(s, m.request);
}
template <typename Sink>
void put(Sink& s, const ViewChange& m) {
  put(s, m.sender);
  s.varint(m.view.value);
  put(s, m.members);
  put(s, m.tails);
}
template <typename Sink>
void put(Sink& s, const NewView& m) {
  put(s, m.sender);
  s.varint(m.view.value);
  put(s, m.members);
  put(s, m.cuts);
}
template <typename Sink>
void put(Sink& s, const Proposal& m) {
  put(s, m.origin);
  s.varint(m.timestamp_us);
  s.varint(m.requests.size());
  for (const ClientRequest& r : m.requests)
    put(s, r);
  s.bytes(m.claim);
}
template <typename Sink>
void put(Sink& s, const Endorsement& m) {
  put(s, m.signer);
  put_raw(s, m.signature);
}
template <typename Sink>
void put(Sink& s, const SignedProposal& m) {
  put(s, m.proposal);
  s.varint(m.chain.size());
  for (const Endorsement& e : m.chain)
    put(s, e);
}

template <typename Sink>
void put(Sink& s, const JoinRequest& m) {
  put(s, m.sender);
  s.varint(m.incarnation);
}
template <typename Sink>
void put(Sink& s, const StateRequest& m) {
  put(s, m.sender);
  s.varint(m.view.value);
  put(s, m.donor);
}
template <typename Sink>
void put(Sink& s, const StateTransfer& m) {
  put(s, m.sender);
  s.varint(m.view.value);
  s.bytes(m.protocol_state);
  s.bytes(m.service_snapshot);
}

template <typename Sink>
void put(Sink& s, const CheckpointVote& m) {
  put(s, m.replica);
  s.varint(m.boundary_us);
  put_raw(s, m.digest);
  put_raw(s, m.signature);
}

template <typename Sink>
void put(Sink& s, const StateChunk& m) {
  put_raw(s, m.digest);
  s.varint(m.offset);
  s.varint(m.total);
  s.bytes(m.data);
}

template <typename Sink>
void put(Sink& s, const StateChunkRequest& m) {
  put_raw(s, m.digest);
  s.varint(m.offset);
}

ReplicaTag tag_of(const ReplicaMessage& m) {
  static_assert(std::variant_size_v<ReplicaMessage> == 11, "give the new alternative a tag");
  return std::visit(
      [](const auto& alt) {
        using T = std::decay_t<decltype(alt)>;
        if constexpr (std::is_same_v<T, ReplicaUpdate>) return ReplicaTag::kReplicaUpdate;
        if constexpr (std::is_same_v<T, ForwardRequest>) return ReplicaTag::kForwardRequest;
        if constexpr (std::is_same_v<T, ViewChange>) return ReplicaTag::kViewChange;
        if constexpr (std::is_same_v<T, NewView>) return ReplicaTag::kNewView;
        if constexpr (std::is_same_v<T, SignedProposal>) return ReplicaTag::kSignedProposal;
        if constexpr (std::is_same_v<T, JoinRequest>) return ReplicaTag::kJoinRequest;
        if constexpr (std::is_same_v<T, StateRequest>) return ReplicaTag::kStateRequest;
        if constexpr (std::is_same_v<T, StateTransfer>) return ReplicaTag::kStateTransfer;
        if constexpr (std::is_same_v<T, CheckpointVote>) return ReplicaTag::kCheckpointVote;
        if constexpr (std::is_same_v<T, StateChunk>) return ReplicaTag::kStateChunk;
        if constexpr (std::is_same_v<T, StateChunkRequest>) return ReplicaTag::kStateChunkRequest;
      },
      m);
}

template <typename Sink>
void put(Sink& s, const ReplicaMessage& m) {
  s.u8(static_cast<uint8_t>(tag_of(m)));
  std::visit([&](const auto& alt) { put(s, alt); }, m);
}
template <typename Sink>
void put(Sink& s, const Hello& m) {
  s.u8(static_cast<uint8_t>(m.role));
  s.varint(m.id);
  s.varint(m.incarnation);
  s.varint(m.next_expected);
}
template <typename Sink>
void put(Sink& s, const PeerData& m) {
  s.varint(m.channel_sequence);
  s.varint(m.acknowledged);
  put(s, m.message);
}
template <typename Sink>
void put(Sink& s, const PeerAck& m) {
  s.varint(m.acknowledged);
}
template <typename Sink>
void put(Sink& s, const StatusRequest& m) {
  s.varint(m.nonce);
}
template <typename Sink>
void put(Sink& s, const StatusReply& m) {
  s.varint(m.nonce);
  put(s, m.replica);
  s.u8(m.halted ? 1 : 0);
  s.varint(m.view.value);
  put(s, m.members);
  s.varint(m.executed);
  s.varint(m.digest);
  s.varint(m.epoch);
}
template <typename Sink>
void put(Sink& s, const SignedReplies& m) {
  put(s, m.replica);
  s.varint(m.replies.size());
  for (const ClientReply& r : m.replies)
    put(s, r);
  put_raw(s, m.signature);
  s.varint(m.membership_changes.size());
  for (const ClientRequest& change : m.membership_changes)
    put(s, change);
}

template <typename Sink>
void put(Sink& s, const AdminRequest& m) {
  s.varint(m.nonce);
  s.u8(static_cast<uint8_t>(m.change));
  put(s, m.replica);
}
template <typename Sink>
void put(Sink& s, const AdminReply& m) {
  s.varint(m.nonce);
  put(s, m.replica);
  s.u8(m.accepted ? 1 : 0);
  s.bytes(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(m.detail.data()), m.detail.size()));
}

FrameType frame_type_of(const WireMessage& m) {
  static_assert(std::variant_size_v<WireMessage> == 10, "give the new alternative a FrameType");
  return std::visit(
      [](const auto& alt) {
        using T = std::decay_t<decltype(alt)>;
        if constexpr (std::is_same_v<T, Hello>) return FrameType::kHello;
        if constexpr (std::is_same_v<T, ClientRequest>) return FrameType::kClientRequest;
        if constexpr (std::is_same_v<T, ClientReply>) return FrameType::kClientReply;
        if constexpr (std::is_same_v<T, PeerData>) return FrameType::kPeerData;
        if constexpr (std::is_same_v<T, PeerAck>) return FrameType::kPeerAck;
        if constexpr (std::is_same_v<T, StatusRequest>) return FrameType::kStatusRequest;
        if constexpr (std::is_same_v<T, StatusReply>) return FrameType::kStatusReply;
        if constexpr (std::is_same_v<T, SignedReplies>) return FrameType::kSignedReplies;
        if constexpr (std::is_same_v<T, AdminRequest>) return FrameType::kAdminRequest;
        if constexpr (std::is_same_v<T, AdminReply>) return FrameType::kAdminReply;
      },
      m);
}

// ---- header -----------------------------------------------------------------------------------

constexpr size_t kLengthBytes = 4;
constexpr size_t kVersionOffset = 4;
constexpr size_t kTypeOffset = 5;
constexpr size_t kReservedOffset = 6;
constexpr size_t kChecksumOffset = 8;
constexpr size_t kLengthMin = kFrameHeaderBytes - kLengthBytes;
constexpr size_t kLengthMax = kFrameBytesMax - kLengthBytes;

uint64_t load_le(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i)
    v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}
void store_le(uint8_t* p, size_t n, uint64_t v) {
  for (size_t i = 0; i < n; ++i)
    p[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t frame_checksum(const uint8_t* frame, size_t frame_bytes) {
  const uint64_t seed = load_le(frame, kChecksumOffset);
  return XXH3_64bits_withSeed(frame + kFrameHeaderBytes, frame_bytes - kFrameHeaderBytes, seed);
}

bool known_frame_type(uint8_t t) {
  return t >= static_cast<uint8_t>(FrameType::kHello) &&
         t <= static_cast<uint8_t>(FrameType::kAdminReply);
}

std::string with_number(std::string_view text, uint64_t n) {
  std::string s(text);
  s += std::to_string(n);
  return s;
}

// Checks whatever part of the header `buffer` holds, so that frame_size rejects garbage as soon as
// it can instead of waiting for a forged length's worth of bytes.
std::optional<DecodeError> check_header_prefix(std::span<const uint8_t> buffer) {
  if (buffer.size() >= kLengthBytes) {
    const uint64_t length = load_le(buffer.data(), kLengthBytes);
    if (length < kLengthMin) return DecodeError{with_number("frame length too small: ", length)};
    if (length > kLengthMax) return DecodeError{with_number("frame length too large: ", length)};
  }
  if (buffer.size() > kVersionOffset && buffer[kVersionOffset] != kWireVersion) {
    return DecodeError{with_number("unsupported wire version ", buffer[kVersionOffset])};
  }
  if (buffer.size() > kTypeOffset && !known_frame_type(buffer[kTypeOffset])) {
    return DecodeError{with_number("unknown frame type ", buffer[kTypeOffset])};
  }
  for (size_t i = kReservedOffset; i < kChecksumOffset && i < buffer.size(); ++i) {
    if (buffer[i] != 0) return DecodeError{"reserved header bytes not zero"};
  }
  return std::nullopt;
}

// ---- decoding ---------------------------------------------------------------------------------

// A Reader that remembers which field failed first, so that the DecodeError names it. After the
// first failure every read returns a default value and changes nothing.
class Decoder {
 public:
  explicit Decoder(std::span<const uint8_t> in) : reader_(in) {}

  bool failed() const { return !error_.empty(); }
  bool at_end() const { return reader_.at_end(); }
  size_t remaining() const { return reader_.remaining(); }
  std::string& error() { return error_; }

  void fail(std::string reason) {
    if (!failed()) error_ = std::move(reason);
    reader_.fail();
  }

  uint8_t u8(const char* field) {
    const uint8_t v = reader_.u8();
    check(field, "truncated");
    return v;
  }
  uint64_t varint(const char* field) {
    const uint64_t v = reader_.varint();
    check(field, "truncated or over-long varint");
    return v;
  }
  Bytes bytes(const char* field) {
    Bytes v = reader_.bytes();
    check(field, "byte string truncated");
    return v;
  }
  // A fixed-size field of raw bytes (a signature).
  template <size_t N>
  std::array<uint8_t, N> raw(const char* field) {
    std::array<uint8_t, N> v{};
    if (failed()) return v;
    if (reader_.remaining() < N) {
      fail(std::string(field) + ": truncated: needs " + std::to_string(N) + " bytes, " +
           std::to_string(reader_.remaining()) + " left");
      return v;
    }
    for (uint8_t& byte : v)
      byte = reader_.u8();
    return v;
  }
  ReplicaId replica_id(const char* field) {
    const uint64_t v = varint(field);
    if (v > std::numeric_limits<uint32_t>::max()) {
      fail(std::string(field) + ": replica id out of range: " + std::to_string(v));
      return ReplicaId{};
    }
    return ReplicaId{static_cast<uint32_t>(v)};
  }
  // A vector's item count, bounded by the bytes left (Reader::count) so that a forged count can
  // neither make the decoder reserve memory the input cannot fill nor loop for long.
  uint64_t count(const char* field, size_t item_bytes_min) {
    if (failed()) return 0;
    Reader probe = reader_;
    const uint64_t n = reader_.count(item_bytes_min);
    if (!reader_.ok()) {
      const uint64_t claimed = probe.varint();
      if (!probe.ok()) {
        fail(std::string(field) + ": count truncated or over-long varint");
      } else {
        fail(std::string(field) + ": count " + std::to_string(claimed) + " exceeds the " +
             std::to_string(probe.remaining()) + " bytes left");
      }
    }
    return n;
  }

 private:
  void check(const char* field, const char* what) {
    if (!reader_.ok() && !failed()) error_ = std::string(field) + ": " + what;
  }

  Reader reader_;
  std::string error_;
};

void get(Decoder& d, Timestamp& t) {
  t.clock = d.varint("Timestamp.clock");
  t.source = d.replica_id("Timestamp.source");
}
void get(Decoder& d, ClientRequest& m) {
  m.client = ClientId{d.varint("ClientRequest.client")};
  m.sequence = Sequence{d.varint("ClientRequest.sequence")};
  m.acked_below = Sequence{d.varint("ClientRequest.acked_below")};
  m.command = d.bytes("ClientRequest.command");
  m.signature = d.bytes("ClientRequest.signature");
  // Empty (failstop mode) or one Ed25519 signature: any other length is garbage whatever the mode.
  if (!d.failed() && !m.signature.empty() && m.signature.size() != sizeof(Signature)) {
    d.fail(
        with_number("ClientRequest.signature: length must be 0 or 64, got ", m.signature.size()));
  }
}
void get(Decoder& d, ClientReply& m) {
  m.client = ClientId{d.varint("ClientReply.client")};
  m.sequence = Sequence{d.varint("ClientReply.sequence")};
  m.replica = d.replica_id("ClientReply.replica");
  const uint8_t status = d.u8("ClientReply.status");
  if (status > static_cast<uint8_t>(ReplyStatus::kNotServing)) {
    d.fail(with_number("ClientReply.status: invalid reply status ", status));
  }
  m.status = static_cast<ReplyStatus>(status);
  m.result = d.bytes("ClientReply.result");
  m.epoch = d.varint("ClientReply.epoch");
}
void get(Decoder& d, OrderedEntry& m) {
  m.index = d.varint("OrderedEntry.index");
  get(d, m.timestamp);
  get(d, m.request);
}
void get_entries(Decoder& d, const char* field, std::vector<OrderedEntry>& entries) {
  const uint64_t n = d.count(field, kOrderedEntryBytesMin);
  entries.resize(n);
  for (uint64_t i = 0; i < n && !d.failed(); ++i)
    get(d, entries[i]);
}
void get_ids(Decoder& d, const char* field, std::vector<ReplicaId>& ids) {
  const uint64_t n = d.count(field, kReplicaIdBytesMin);
  ids.resize(n);
  for (uint64_t i = 0; i < n && !d.failed(); ++i)
    ids[i] = d.replica_id(field);
}
void get(Decoder& d, StreamTail& m) {
  m.source = d.replica_id("StreamTail.source");
  m.received = d.varint("StreamTail.received");
  get_entries(d, "StreamTail.entries", m.entries);
}
void get_tails(Decoder& d, const char* field, std::vector<StreamTail>& tails) {
  const uint64_t n = d.count(field, kStreamTailBytesMin);
  tails.resize(n);
  for (uint64_t i = 0; i < n && !d.failed(); ++i)
    get(d, tails[i]);
}
void get(Decoder& d, ReplicaUpdate& m) {
  m.sender = d.replica_id("ReplicaUpdate.sender");
  m.incarnation = d.varint("ReplicaUpdate.incarnation");
  const uint8_t durable = d.u8("ReplicaUpdate.durable");
  if (durable > 1) d.fail(with_number("ReplicaUpdate.durable: invalid boolean ", durable));
  m.durable = durable == 1;
  m.view = ViewNumber{d.varint("ReplicaUpdate.view")};
  m.clock = d.varint("ReplicaUpdate.clock");
  get_entries(d, "ReplicaUpdate.entries", m.entries);
  const uint64_t n = d.count("ReplicaUpdate.received", kVarintBytesMin);
  m.received.resize(n);
  for (uint64_t i = 0; i < n && !d.failed(); ++i)
    m.received[i] = d.varint("ReplicaUpdate.received");
}
void get(Decoder& d, ForwardRequest& m) {
  m.sender = d.replica_id("ForwardRequest.sender");
  get(d, m.request);
}
void get(Decoder& d, ViewChange& m) {
  m.sender = d.replica_id("ViewChange.sender");
  m.view = ViewNumber{d.varint("ViewChange.view")};
  get_ids(d, "ViewChange.members", m.members);
  get_tails(d, "ViewChange.tails", m.tails);
}
void get(Decoder& d, NewView& m) {
  m.sender = d.replica_id("NewView.sender");
  m.view = ViewNumber{d.varint("NewView.view")};
  get_ids(d, "NewView.members", m.members);
  get_tails(d, "NewView.cuts", m.cuts);
}

void get(Decoder& d, Proposal& m) {
  m.origin = d.replica_id("Proposal.origin");
  m.timestamp_us = d.varint("Proposal.timestamp_us");
  const uint64_t n = d.count("Proposal.requests", kClientRequestBytesMin);
  m.requests.resize(n);
  for (uint64_t i = 0; i < n && !d.failed(); ++i)
    get(d, m.requests[i]);
  m.claim = d.bytes("Proposal.claim");
}
void get(Decoder& d, Endorsement& m) {
  m.signer = d.replica_id("Endorsement.signer");
  m.signature = d.raw<sizeof(Signature)>("Endorsement.signature");
}
void get(Decoder& d, SignedProposal& m) {
  get(d, m.proposal);
  const uint64_t n = d.count("SignedProposal.chain", kEndorsementBytesMin);
  m.chain.resize(n);
  for (uint64_t i = 0; i < n && !d.failed(); ++i)
    get(d, m.chain[i]);
}

void get(Decoder& d, JoinRequest& m) {
  m.sender = d.replica_id("JoinRequest.sender");
  m.incarnation = d.varint("JoinRequest.incarnation");
}
void get(Decoder& d, StateRequest& m) {
  m.sender = d.replica_id("StateRequest.sender");
  m.view = ViewNumber{d.varint("StateRequest.view")};
  m.donor = d.replica_id("StateRequest.donor");
}
void get(Decoder& d, StateTransfer& m) {
  m.sender = d.replica_id("StateTransfer.sender");
  m.view = ViewNumber{d.varint("StateTransfer.view")};
  m.protocol_state = d.bytes("StateTransfer.protocol_state");
  m.service_snapshot = d.bytes("StateTransfer.service_snapshot");
}

void get(Decoder& d, CheckpointVote& m) {
  m.replica = d.replica_id("CheckpointVote.replica");
  m.boundary_us = d.varint("CheckpointVote.boundary_us");
  m.digest = d.raw<sizeof(Digest)>("CheckpointVote.digest");
  m.signature = d.raw<sizeof(Signature)>("CheckpointVote.signature");
}

void get(Decoder& d, StateChunk& m) {
  m.digest = d.raw<sizeof(Digest)>("StateChunk.digest");
  m.offset = d.varint("StateChunk.offset");
  m.total = d.varint("StateChunk.total");
  m.data = d.bytes("StateChunk.data");
}

void get(Decoder& d, StateChunkRequest& m) {
  m.digest = d.raw<sizeof(Digest)>("StateChunkRequest.digest");
  m.offset = d.varint("StateChunkRequest.offset");
}

template <typename T>
ReplicaMessage get_alternative(Decoder& d) {
  T m;
  get(d, m);
  return m;
}

ReplicaMessage get_replica_message(Decoder& d) {
  const uint8_t tag = d.u8("ReplicaMessage.tag");
  if (d.failed()) return {};
  switch (static_cast<ReplicaTag>(tag)) {
    case ReplicaTag::kReplicaUpdate:
      return get_alternative<ReplicaUpdate>(d);
    case ReplicaTag::kForwardRequest:
      return get_alternative<ForwardRequest>(d);
    case ReplicaTag::kViewChange:
      return get_alternative<ViewChange>(d);
    case ReplicaTag::kNewView:
      return get_alternative<NewView>(d);
    case ReplicaTag::kSignedProposal:
      return get_alternative<SignedProposal>(d);
    case ReplicaTag::kJoinRequest:
      return get_alternative<JoinRequest>(d);
    case ReplicaTag::kStateRequest:
      return get_alternative<StateRequest>(d);
    case ReplicaTag::kStateTransfer:
      return get_alternative<StateTransfer>(d);
    case ReplicaTag::kCheckpointVote:
      return get_alternative<CheckpointVote>(d);
    case ReplicaTag::kStateChunk:
      return get_alternative<StateChunk>(d);
    case ReplicaTag::kStateChunkRequest:
      return get_alternative<StateChunkRequest>(d);
  }
  d.fail(with_number("unknown replica message tag ", tag));
  return {};
}

void get(Decoder& d, Hello& m) {
  const uint8_t role = d.u8("Hello.role");
  if (role != static_cast<uint8_t>(PeerRole::kReplica) &&
      role != static_cast<uint8_t>(PeerRole::kClient)) {
    d.fail(with_number("Hello.role: invalid peer role ", role));
  }
  m.role = static_cast<PeerRole>(role);
  m.id = d.varint("Hello.id");
  m.incarnation = d.varint("Hello.incarnation");
  m.next_expected = d.varint("Hello.next_expected");
}
void get(Decoder& d, PeerData& m) {
  m.channel_sequence = d.varint("PeerData.channel_sequence");
  m.acknowledged = d.varint("PeerData.acknowledged");
  m.message = get_replica_message(d);
}
void get(Decoder& d, PeerAck& m) {
  m.acknowledged = d.varint("PeerAck.acknowledged");
}
void get(Decoder& d, AdminRequest& m) {
  m.nonce = d.varint("AdminRequest.nonce");
  const uint8_t change = d.u8("AdminRequest.change");
  if (change != static_cast<uint8_t>(MembershipChange::kAdd) &&
      change != static_cast<uint8_t>(MembershipChange::kRemove)) {
    d.fail(with_number("AdminRequest.change: invalid membership change ", change));
  }
  m.change = static_cast<MembershipChange>(change);
  m.replica = d.replica_id("AdminRequest.replica");
}
void get(Decoder& d, AdminReply& m) {
  m.nonce = d.varint("AdminReply.nonce");
  m.replica = d.replica_id("AdminReply.replica");
  const uint8_t accepted = d.u8("AdminReply.accepted");
  if (accepted > 1) d.fail(with_number("AdminReply.accepted: invalid boolean ", accepted));
  m.accepted = accepted == 1;
  const Bytes detail = d.bytes("AdminReply.detail");
  m.detail.assign(detail.begin(), detail.end());
}
void get(Decoder& d, StatusRequest& m) {
  m.nonce = d.varint("StatusRequest.nonce");
}
void get(Decoder& d, StatusReply& m) {
  m.nonce = d.varint("StatusReply.nonce");
  m.replica = d.replica_id("StatusReply.replica");
  const uint8_t halted = d.u8("StatusReply.halted");
  if (halted > 1) d.fail(with_number("StatusReply.halted: invalid boolean ", halted));
  m.halted = halted == 1;
  m.view = ViewNumber{d.varint("StatusReply.view")};
  get_ids(d, "StatusReply.members", m.members);
  m.executed = d.varint("StatusReply.executed");
  m.digest = d.varint("StatusReply.digest");
  m.epoch = d.varint("StatusReply.epoch");
}
void get(Decoder& d, SignedReplies& m) {
  m.replica = d.replica_id("SignedReplies.replica");
  const uint64_t n = d.count("SignedReplies.replies", kClientReplyBytesMin);
  m.replies.resize(n);
  for (uint64_t i = 0; i < n && !d.failed(); ++i)
    get(d, m.replies[i]);
  m.signature = d.raw<sizeof(Signature)>("SignedReplies.signature");
  const uint64_t changes = d.count("SignedReplies.membership_changes", kClientRequestBytesMin);
  m.membership_changes.resize(changes);
  for (uint64_t i = 0; i < changes && !d.failed(); ++i)
    get(d, m.membership_changes[i]);
}

// Decodes a whole input as one T, which must use every byte.
template <typename Result, typename T>
std::variant<Result, DecodeError> decode_all(Decoder& d, T&& decode_one) {
  Result message = decode_one();
  if (!d.failed() && !d.at_end()) {
    d.fail(std::to_string(d.remaining()) + " trailing bytes after the message");
  }
  if (d.failed()) return DecodeError{std::move(d.error())};
  return message;
}

template <typename T>
std::variant<WireMessage, DecodeError> decode_payload(std::span<const uint8_t> payload) {
  Decoder d(payload);
  return decode_all<WireMessage>(d, [&] {
    T m;
    get(d, m);
    return WireMessage{std::move(m)};
  });
}

// Callers append many frames to one buffer; an exact reserve per frame would reallocate and
// copy the whole buffer every time.
void reserve_geometrically(Bytes& out, size_t needed) {
  if (needed > out.capacity()) out.reserve(std::max(needed, 2 * out.capacity()));
}

}  // namespace

void encode_frame(const WireMessage& message, Bytes& out) {
  SizeCounter counter;
  std::visit([&](const auto& m) { put(counter, m); }, message);
  const size_t payload_bytes = counter.total();
  const size_t frame_bytes = kFrameHeaderBytes + payload_bytes;
  // Callers bound what they batch into one message; an oversized one is a bug on this side,
  // since the peer would only reject it.
  LOCKSTEP_ASSERT(frame_bytes <= kFrameBytesMax, "message exceeds kFrameBytesMax");

  const size_t start = out.size();
  reserve_geometrically(out, start + frame_bytes);
  out.resize(start + kFrameHeaderBytes);  // zero reserved bytes, checksum patched below
  store_le(out.data() + start, kLengthBytes, frame_bytes - kLengthBytes);
  out[start + kVersionOffset] = kWireVersion;
  out[start + kTypeOffset] = static_cast<uint8_t>(frame_type_of(message));

  Writer writer(out);
  std::visit([&](const auto& m) { put(writer, m); }, message);
  LOCKSTEP_ASSERT(out.size() - start == frame_bytes, "sizing and encoding passes disagree");

  store_le(out.data() + start + kChecksumOffset, 8,
           frame_checksum(out.data() + start, frame_bytes));
}

std::variant<size_t, DecodeError> frame_size(std::span<const uint8_t> buffer) {
  if (std::optional<DecodeError> error = check_header_prefix(buffer)) return std::move(*error);
  if (buffer.size() < kFrameHeaderBytes) return size_t{0};
  const size_t frame_bytes = kLengthBytes + load_le(buffer.data(), kLengthBytes);
  return buffer.size() < frame_bytes ? size_t{0} : frame_bytes;
}

std::variant<WireMessage, DecodeError> decode_frame(std::span<const uint8_t> frame) {
  if (frame.size() < kFrameHeaderBytes) {
    return DecodeError{"frame truncated: header needs " + std::to_string(kFrameHeaderBytes) +
                       " bytes, got " + std::to_string(frame.size())};
  }
  if (std::optional<DecodeError> error = check_header_prefix(frame)) return std::move(*error);
  const size_t frame_bytes = kLengthBytes + load_le(frame.data(), kLengthBytes);
  if (frame.size() != frame_bytes) {
    return DecodeError{"frame is " + std::to_string(frame.size()) + " bytes but its length says " +
                       std::to_string(frame_bytes)};
  }
  if (load_le(frame.data() + kChecksumOffset, 8) != frame_checksum(frame.data(), frame.size())) {
    return DecodeError{"bad checksum"};
  }
  const std::span<const uint8_t> payload = frame.subspan(kFrameHeaderBytes);
  switch (static_cast<FrameType>(frame[kTypeOffset])) {
    case FrameType::kHello:
      return decode_payload<Hello>(payload);
    case FrameType::kClientRequest:
      return decode_payload<ClientRequest>(payload);
    case FrameType::kClientReply:
      return decode_payload<ClientReply>(payload);
    case FrameType::kPeerData:
      return decode_payload<PeerData>(payload);
    case FrameType::kPeerAck:
      return decode_payload<PeerAck>(payload);
    case FrameType::kStatusRequest:
      return decode_payload<StatusRequest>(payload);
    case FrameType::kStatusReply:
      return decode_payload<StatusReply>(payload);
    case FrameType::kSignedReplies:
      return decode_payload<SignedReplies>(payload);
    case FrameType::kAdminRequest:
      return decode_payload<AdminRequest>(payload);
    case FrameType::kAdminReply:
      return decode_payload<AdminReply>(payload);
  }
  return DecodeError{with_number("unknown frame type ", frame[kTypeOffset])};
}

void encode_replica_message(const ReplicaMessage& message, Bytes& out) {
  SizeCounter counter;
  put(counter, message);
  const size_t start = out.size();
  reserve_geometrically(out, start + counter.total());
  Writer writer(out);
  put(writer, message);
  LOCKSTEP_ASSERT(out.size() - start == counter.total(), "sizing and encoding passes disagree");
}

std::variant<ReplicaMessage, DecodeError> decode_replica_message(std::span<const uint8_t> bytes) {
  Decoder d(bytes);
  return decode_all<ReplicaMessage>(d, [&] { return get_replica_message(d); });
}

}  // namespace lockstep
