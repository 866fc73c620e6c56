// Readable one-line descriptions of protocol messages for simulator traces, and the event-log
// hash that proves two runs of a seed identical.
#pragma once

#include <cstdint>
#include <string>

#include "core/messages.h"

namespace lockstep::sim {

// FNV-1a over 64-bit words. Not cryptographic: it only has to make an accidental difference
// between two runs show up in one number.
class EventHash {
 public:
  void add(uint64_t word) {
    for (int i = 0; i < 8; ++i) {
      value_ ^= (word >> (8 * i)) & 0xff;
      value_ *= 0x100000001b3ULL;
    }
  }
  void add_bytes(const Bytes& bytes) {
    add(bytes.size());
    for (uint8_t b : bytes) {
      value_ ^= b;
      value_ *= 0x100000001b3ULL;
    }
  }
  uint64_t value() const { return value_; }

 private:
  uint64_t value_ = 0xcbf29ce484222325ULL;
};

void hash_message(EventHash& hash, const ReplicaMessage& message);
void hash_request(EventHash& hash, const ClientRequest& request);
void hash_reply(EventHash& hash, const ClientReply& reply);

// A request's identity as traces and violations print it: "c3f2a#17" (client id's low 16 bits in
// hex, then the sequence number).
std::string describe_request_key(ClientId client, Sequence sequence);
std::string describe(const Timestamp& timestamp);
std::string describe(const ReplicaMessage& message);
std::string describe(const ClientRequest& request);
std::string describe(const ClientReply& reply);
// A KV command or result in words ("append k1 += c3.17"), or its size when it does not decode.
std::string describe_command(const Bytes& command);
std::string describe_result(const Bytes& result);

}  // namespace lockstep::sim
