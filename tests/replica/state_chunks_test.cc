#include "replica/state_chunks.h"

#include <gtest/gtest.h>

#include <string>

namespace lockstep {
namespace {

constexpr ReplicaId kDonor{0};
constexpr ReplicaId kOther{2};
constexpr ReplicaId kJoiner{1};
constexpr uint64_t kMs = 1'000'000;

StateChunkOptions small_pieces() {
  StateChunkOptions options;
  options.chunk_bytes = 100;
  options.stall_ns = 50 * kMs;
  options.idle_ns = 1000 * kMs;
  return options;
}

StateTransfer transfer_of(ReplicaId sender, uint64_t view, size_t bytes, uint8_t fill = 'x') {
  return StateTransfer{sender, ViewNumber{view}, Bytes(bytes / 3, 'p'), Bytes(bytes, fill)};
}

template <typename T>
T expect(const StateReceiver::Outcome& outcome) {
  const T* value = std::get_if<T>(&outcome);
  EXPECT_NE(value, nullptr) << "outcome index " << outcome.index();
  return value == nullptr ? T{} : *value;
}

// Runs a transfer from `sender` to `receiver` to its end; returns the pieces it took.
int transfer_all(StateSender& sender, ReplicaId donor, StateReceiver& receiver, StateChunk first,
                 StateTransfer& out) {
  int pieces = 1;
  StateReceiver::Outcome outcome = receiver.on_chunk(0, donor, std::move(first));
  while (const auto* ask = std::get_if<StateReceiver::Ask>(&outcome)) {
    EXPECT_EQ(ask->donor, donor);
    std::optional<StateChunk> next = sender.on_request(0, kJoiner, ask->request);
    if (!next) return -1;
    ++pieces;
    outcome = receiver.on_chunk(0, donor, std::move(*next));
  }
  out = expect<StateTransfer>(outcome);
  return pieces;
}

TEST(StateChunksTest, ASmallTransferGoesWhole) {
  StateSender sender(small_pieces());
  const StateTransfer transfer = transfer_of(kDonor, 3, 20);
  std::optional<ReplicaMessage> message = sender.start(0, kJoiner, transfer);
  ASSERT_TRUE(message.has_value());
  EXPECT_EQ(std::get<StateTransfer>(*message), transfer);
  EXPECT_EQ(sender.in_progress(), 0u);
}

TEST(StateChunksTest, ALargeTransferArrivesWholeOnePieceAtATime) {
  StateSender sender(small_pieces());
  StateReceiver receiver(small_pieces());
  const StateTransfer transfer = transfer_of(kDonor, 3, 1000);
  std::optional<ReplicaMessage> first = sender.start(0, kJoiner, transfer);
  ASSERT_TRUE(first.has_value());
  StateChunk chunk = std::get<StateChunk>(*first);
  EXPECT_EQ(chunk.offset, 0u);
  EXPECT_EQ(chunk.data.size(), 100u);
  EXPECT_GT(chunk.total, 1000u);
  StateTransfer received;
  const int pieces = transfer_all(sender, kDonor, receiver, chunk, received);
  EXPECT_EQ(pieces, static_cast<int>((chunk.total + 99) / 100));
  EXPECT_EQ(received, transfer);
  EXPECT_EQ(sender.in_progress(), 0u) << "the last piece ends the transfer at the donor";
  EXPECT_EQ(receiver.bytes_held(), 0u);
}

TEST(StateChunksTest, ARetryOfTheSameViewDoesNotRestartATransferUnderWay) {
  StateSender sender(small_pieces());
  ASSERT_TRUE(sender.start(0, kJoiner, transfer_of(kDonor, 3, 1000)).has_value());
  EXPECT_FALSE(sender.start(10 * kMs, kJoiner, transfer_of(kDonor, 3, 1000, 'y')).has_value());
  // A new view starts over.
  std::optional<ReplicaMessage> next =
      sender.start(20 * kMs, kJoiner, transfer_of(kDonor, 4, 1000));
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(std::get<StateChunk>(*next).offset, 0u);
  // So does the same view once the old one has been idle too long.
  sender.expire(2000 * kMs);
  EXPECT_EQ(sender.in_progress(), 0u);
  EXPECT_TRUE(sender.start(2000 * kMs, kJoiner, transfer_of(kDonor, 4, 1000)).has_value());
}

TEST(StateChunksTest, OnlyTheAskedForPieceOfTheActiveTransferIsTaken) {
  StateSender sender(small_pieces());
  StateReceiver receiver(small_pieces());
  StateChunk first = std::get<StateChunk>(*sender.start(0, kJoiner, transfer_of(kDonor, 3, 1000)));
  const auto ask = expect<StateReceiver::Ask>(receiver.on_chunk(0, kDonor, first));
  EXPECT_EQ(ask.request.offset, 100u);
  StateChunk second = *sender.on_request(0, kJoiner, ask.request);
  StateChunk skipped = *sender.on_request(0, kJoiner, StateChunkRequest{first.digest, 200});
  EXPECT_TRUE(std::holds_alternative<std::monostate>(receiver.on_chunk(0, kDonor, skipped)));
  StateChunk from_elsewhere = second;
  EXPECT_TRUE(std::holds_alternative<std::monostate>(receiver.on_chunk(0, kOther, from_elsewhere)));
  StateChunk overlong = second;
  overlong.total = second.offset + 1;  // claims to end inside its own data
  EXPECT_TRUE(std::holds_alternative<std::monostate>(receiver.on_chunk(0, kDonor, overlong)));
  EXPECT_EQ(receiver.bytes_held(), 100u);
  EXPECT_EQ(expect<StateReceiver::Ask>(receiver.on_chunk(0, kDonor, second)).request.offset, 200u);
  // A request naming another transfer gets nothing.
  EXPECT_FALSE(sender.on_request(0, kJoiner, StateChunkRequest{Digest{1}, 200}).has_value());
}

TEST(StateChunksTest, AlteredPiecesAreCaughtByTheDigest) {
  StateSender sender(small_pieces());
  StateReceiver receiver(small_pieces());
  StateChunk chunk = std::get<StateChunk>(*sender.start(0, kJoiner, transfer_of(kDonor, 3, 1000)));
  StateReceiver::Outcome outcome = receiver.on_chunk(0, kDonor, chunk);
  while (const auto* ask = std::get_if<StateReceiver::Ask>(&outcome)) {
    StateChunk next = *sender.on_request(0, kJoiner, ask->request);
    if (next.offset == 300) next.data[7] ^= 1;
    outcome = receiver.on_chunk(0, kDonor, std::move(next));
  }
  EXPECT_TRUE(std::holds_alternative<StateReceiver::Malformed>(outcome));
  EXPECT_EQ(receiver.bytes_held(), 0u);
}

TEST(StateChunksTest, AWholeThatIsNotTheDonorsStateTransferIsRefused) {
  StateSender sender(small_pieces());
  StateReceiver receiver(small_pieces());
  // Replica 2's state relayed by replica 0: the pieces are intact, but the sender field says it
  // is not replica 0's own.
  StateChunk chunk = std::get<StateChunk>(*sender.start(0, kJoiner, transfer_of(kOther, 3, 1000)));
  StateReceiver::Outcome outcome = receiver.on_chunk(0, kDonor, chunk);
  while (const auto* ask = std::get_if<StateReceiver::Ask>(&outcome))
    outcome = receiver.on_chunk(0, kDonor, *sender.on_request(0, kJoiner, ask->request));
  EXPECT_TRUE(std::holds_alternative<StateReceiver::Malformed>(outcome));
}

TEST(StateChunksTest, AStalledDonorIsAskedAgainThenAnotherOfferIsTaken) {
  StateSender donor(small_pieces());
  StateSender other(small_pieces());
  StateReceiver receiver(small_pieces());
  StateChunk first = std::get<StateChunk>(*donor.start(0, kJoiner, transfer_of(kDonor, 3, 1000)));
  const auto ask = expect<StateReceiver::Ask>(receiver.on_chunk(0, kDonor, first));
  // Another donor's offer waits while the first one makes progress.
  StateChunk offer = std::get<StateChunk>(*other.start(0, kJoiner, transfer_of(kOther, 3, 1000)));
  EXPECT_TRUE(std::holds_alternative<std::monostate>(receiver.on_chunk(10 * kMs, kOther, offer)));
  EXPECT_EQ(receiver.donor(), kDonor);
  EXPECT_TRUE(std::holds_alternative<std::monostate>(receiver.on_tick(20 * kMs)));
  // Stalled: the offer is taken, and its next piece asked for.
  const auto moved = expect<StateReceiver::Ask>(receiver.on_tick(60 * kMs));
  EXPECT_EQ(moved.donor, kOther);
  EXPECT_EQ(moved.request.offset, 100u);
  EXPECT_EQ(receiver.donor(), kOther);
  // With no other offer, a stalled donor is asked again for the same piece.
  const auto again = expect<StateReceiver::Ask>(receiver.on_tick(120 * kMs));
  EXPECT_EQ(again.donor, kOther);
  EXPECT_EQ(again.request.offset, 100u);
  StateTransfer received;
  StateChunk next = *other.on_request(0, kJoiner, again.request);
  StateReceiver::Outcome outcome = receiver.on_chunk(120 * kMs, kOther, next);
  while (const auto* more = std::get_if<StateReceiver::Ask>(&outcome))
    outcome = receiver.on_chunk(120 * kMs, kOther, *other.on_request(0, kJoiner, more->request));
  EXPECT_EQ(expect<StateTransfer>(outcome), transfer_of(kOther, 3, 1000));
  (void)ask;
}

TEST(StateChunksTest, ADonorStartingOverReplacesItsOwnTransfer) {
  StateSender sender(small_pieces());
  StateReceiver receiver(small_pieces());
  StateChunk old_first =
      std::get<StateChunk>(*sender.start(0, kJoiner, transfer_of(kDonor, 3, 1000)));
  expect<StateReceiver::Ask>(receiver.on_chunk(0, kDonor, old_first));
  StateChunk new_first =
      std::get<StateChunk>(*sender.start(1 * kMs, kJoiner, transfer_of(kDonor, 4, 1000, 'z')));
  StateTransfer received;
  ASSERT_GT(transfer_all(sender, kDonor, receiver, new_first, received), 0);
  EXPECT_EQ(received, transfer_of(kDonor, 4, 1000, 'z'));
}

}  // namespace
}  // namespace lockstep
