// libFuzzer target for the byzantine durability encodings (protocol/byzantine/durability.h): a
// durable state read back from a checkpoint, and the claims, certificates and base-plus-batches
// states a faulty replica can send. The first byte picks the decoder; whatever decodes must
// survive a round trip (decode(encode(x)) == x), else abort.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

#include "protocol/byzantine/durability.h"

namespace {

namespace byz = lockstep::byzantine;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "durability_fuzz: %s\n", what);
  std::abort();
}

bool same_claim(const byz::Claim& a, const byz::Claim& b) {
  return a.start_us == b.start_us && a.certificate == b.certificate && a.excused == b.excused &&
         a.round == b.round;
}

bool same_state(const byz::DurableState& a, const byz::DurableState& b) {
  return a.base_and_batches.base == b.base_and_batches.base &&
         a.base_and_batches.batches == b.base_and_batches.batches && a.best == b.best &&
         a.claimed_round == b.claimed_round;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::span<const uint8_t> input(data + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      if (auto c = byz::decode_certificate(input)) {
        auto again = byz::decode_certificate(byz::encode_certificate(*c));
        if (!again || !(*again == *c)) fail("certificate round trip");
      }
      break;
    case 1:
      if (auto c = byz::decode_claim(input)) {
        auto again = byz::decode_claim(byz::encode_claim(*c));
        if (!again || !same_claim(*again, *c)) fail("claim round trip");
      }
      break;
    case 2:
      if (auto s = byz::decode_base_and_batches(input)) {
        auto again =
            byz::decode_base_and_batches(byz::encode_base_and_batches(s->base, s->batches));
        if (!again || !(again->base == s->base) || again->batches != s->batches) {
          fail("base and batches round trip");
        }
      }
      break;
    default:
      if (auto s = byz::decode_durable_state(input)) {
        auto again = byz::decode_durable_state(byz::encode_durable_state(*s));
        if (!again || !same_state(*again, *s)) fail("durable state round trip");
      }
      break;
  }
  return 0;
}
