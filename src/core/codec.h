// Binary encoding of every message in core/messages.h, and the frame around it.
//
// Frame layout (all integers little-endian):
//
//   offset size  field
//   0      4     length    bytes that follow this field (header rest + payload); at most
//                          kFrameBytesMax - 4
//   4      1     version   kWireVersion; any other value is rejected
//   5      1     type      which WireMessage alternative follows (FrameType)
//   6      2     reserved  zero
//   8      8     checksum  XXH3-64 of the payload, seeded with header bytes 0..7, so a flipped
//                          type or length byte cannot turn one valid message into another
//   16     ...   payload   the message fields in declaration order: unsigned integers as LEB128
//                          varints, byte strings and vectors as a varint count then the items,
//                          fixed-size signatures (Endorsement, SignedReplies) as their 64 raw
//                          bytes; ClientRequest.signature is a byte string of 0 or 64 bytes
//
// Decoding never trusts the input: a short, oversized, mis-versioned, unknown-type or
// checksum-failing frame, a payload with trailing bytes, a count larger than the bytes left, or
// an invalid enum value yields an error naming the reason; it never crashes. Every count is
// checked against the bytes left, so what a frame decodes into is proportional to its size (the
// structs are up to ~13x larger than their encoding; kFrameBytesMax bounds the product).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <variant>

#include "core/messages.h"

namespace lockstep {

inline constexpr uint8_t kWireVersion = 1;
inline constexpr size_t kFrameHeaderBytes = 16;
inline constexpr size_t kFrameBytesMax = 16 * 1024 * 1024;

enum class FrameType : uint8_t {
  kHello = 1,
  kClientRequest = 2,
  kClientReply = 3,
  kPeerData = 4,
  kPeerAck = 5,
  kStatusRequest = 6,
  kStatusReply = 7,
  kSignedReplies = 8,
  kAdminRequest = 9,
  kAdminReply = 10,
};

struct DecodeError {
  std::string reason;
};

// Appends one whole frame carrying `message` to `out`.
void encode_frame(const WireMessage& message, Bytes& out);

// Looks at the start of `buffer`. Returns:
//  - 0 when more bytes are needed for a complete frame (buffer holds a partial frame),
//  - the frame's total size when a complete frame is there (decode it with decode_frame),
//  - a DecodeError when the header is already invalid (bad version, oversized length).
std::variant<size_t, DecodeError> frame_size(std::span<const uint8_t> buffer);

// Decodes exactly one complete frame (as measured by frame_size).
std::variant<WireMessage, DecodeError> decode_frame(std::span<const uint8_t> frame);

// The replica messages are also encoded alone (inside PeerData, and by the simulator).
void encode_replica_message(const ReplicaMessage& message, Bytes& out);
std::variant<ReplicaMessage, DecodeError> decode_replica_message(std::span<const uint8_t> bytes);

}  // namespace lockstep
