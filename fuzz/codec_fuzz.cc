// libFuzzer target for core/codec.h. Every input is tried three ways:
//  1. as a byte stream: frame_size, then decode_frame of the whole input and of the measured frame;
//  2. as a bare ReplicaMessage (decode_replica_message), which has no checksum;
//  3. as a payload: the first byte picks a frame type and the harness seals the rest into a frame
//     with a correct checksum. Without this the fuzzer would almost never get past the 64-bit
//     checksum and would explore only the header checks.
// The byzantine-mode messages (signed ClientRequest, SignedProposal as replica tag 5, the
// SignedReplies frame) are reached by paths 2 and 3 like the others; their 64-byte signatures
// only need inputs of a few hundred bytes, well under the -max_len the Makefile gives.
// Whatever decodes must survive a round trip: decode(encode(x)) == x, else abort.
#include <xxhash.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <variant>

#include "core/codec.h"

namespace {

using lockstep::Bytes;
using lockstep::DecodeError;
using lockstep::ReplicaMessage;
using lockstep::WireMessage;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "codec_fuzz: %s\n", what);
  std::abort();
}

void check_frame_round_trip(const WireMessage& message) {
  Bytes frame;
  encode_frame(message, frame);
  auto size = lockstep::frame_size(frame);
  if (!std::holds_alternative<size_t>(size) || std::get<size_t>(size) != frame.size()) {
    fail("frame_size does not measure an encoded frame");
  }
  auto prefix = lockstep::frame_size(std::span<const uint8_t>(frame).first(frame.size() - 1));
  if (!std::holds_alternative<size_t>(prefix) || std::get<size_t>(prefix) != 0) {
    fail("frame_size does not ask for more on a partial frame");
  }
  auto again = lockstep::decode_frame(frame);
  if (!std::holds_alternative<WireMessage>(again)) fail("re-encoded frame does not decode");
  if (!(std::get<WireMessage>(again) == message)) fail("frame round trip changed the message");
}

void check_replica_round_trip(const ReplicaMessage& message) {
  Bytes bytes;
  encode_replica_message(message, bytes);
  auto again = lockstep::decode_replica_message(bytes);
  if (!std::holds_alternative<ReplicaMessage>(again)) fail("re-encoded message does not decode");
  if (!(std::get<ReplicaMessage>(again) == message)) fail("replica round trip changed the message");
}

void try_frame(std::span<const uint8_t> frame) {
  auto decoded = lockstep::decode_frame(frame);
  if (const WireMessage* m = std::get_if<WireMessage>(&decoded)) {
    check_frame_round_trip(*m);
  } else if (std::get<DecodeError>(decoded).reason.empty()) {
    fail("decode error without a reason");
  }
}

// Restates codec.h's header and codec.cc's checksum rule (XXH3-64 of the payload seeded with
// header bytes 0..7), so that arbitrary payloads reach the message decoders.
Bytes seal(uint8_t type, std::span<const uint8_t> payload) {
  Bytes frame(lockstep::kFrameHeaderBytes + payload.size(), 0);
  const uint64_t length = frame.size() - 4;
  for (int i = 0; i < 4; ++i)
    frame[i] = static_cast<uint8_t>(length >> (8 * i));
  frame[4] = lockstep::kWireVersion;
  frame[5] = type;
  std::copy(payload.begin(), payload.end(), frame.begin() + lockstep::kFrameHeaderBytes);
  uint64_t seed = 0;
  for (int i = 0; i < 8; ++i)
    seed |= static_cast<uint64_t>(frame[i]) << (8 * i);
  const uint64_t checksum = XXH3_64bits_withSeed(payload.data(), payload.size(), seed);
  for (int i = 0; i < 8; ++i)
    frame[8 + i] = static_cast<uint8_t>(checksum >> (8 * i));
  return frame;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> input(data, size);

  auto measured = lockstep::frame_size(input);
  if (const size_t* n = std::get_if<size_t>(&measured)) {
    if (*n > size) fail("frame_size measured more than the buffer holds");
    if (*n > 0) try_frame(input.first(*n));
  }
  try_frame(input);

  auto replica = lockstep::decode_replica_message(input);
  if (const ReplicaMessage* m = std::get_if<ReplicaMessage>(&replica)) check_replica_round_trip(*m);

  if (size > 0 && size - 1 + lockstep::kFrameHeaderBytes <= lockstep::kFrameBytesMax) {
    // Types 1..8 (kHello..kSignedReplies) are valid; 0 and 9 keep the unknown-type path in play.
    constexpr uint8_t kTypes = static_cast<uint8_t>(lockstep::FrameType::kSignedReplies) + 2;
    const uint8_t type = static_cast<uint8_t>(input[0] % kTypes);
    const Bytes frame = seal(type, input.subspan(1));
    try_frame(frame);
    if (std::holds_alternative<DecodeError>(lockstep::frame_size(frame)) && type >= 1 &&
        type < kTypes - 1) {
      fail("frame_size rejected a well-formed header");
    }
  }
  return 0;
}
