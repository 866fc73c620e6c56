#include "replica/state_chunks.h"

#include <gtest/gtest.h>

#include <map>
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

StateChunk first_piece(StateSender& sender, ReplicaId to, const StateTransfer& transfer) {
  return std::get<StateChunk>(sender.start(0, to, transfer));
}

// Runs `donor`'s transfer to its end; returns the outcome of its last piece.
StateReceiver::Outcome transfer_all(StateSender& sender, ReplicaId donor, StateReceiver& receiver,
                                    StateReceiver::Outcome outcome) {
  while (const auto* progress = std::get_if<StateReceiver::Progress>(&outcome)) {
    EXPECT_EQ(progress->next.donor, donor);
    std::optional<StateChunk> next = sender.on_request(0, kJoiner, progress->next.request);
    if (!next) return std::monostate{};
    outcome = receiver.on_chunk(0, donor, std::move(*next));
  }
  return outcome;
}

TEST(StateChunksTest, ASmallTransferGoesWhole) {
  StateSender sender(small_pieces(), false);
  const StateTransfer transfer = transfer_of(kDonor, 3, 20);
  EXPECT_EQ(std::get<StateTransfer>(sender.start(0, kJoiner, transfer)), transfer);
  EXPECT_EQ(sender.in_progress(), 0u);
}

TEST(StateChunksTest, ALargeTransferArrivesWholeOnePieceAtATime) {
  StateSender sender(small_pieces(), false);
  StateReceiver receiver(small_pieces());
  const StateTransfer transfer = transfer_of(kDonor, 3, 1000);
  const StateChunk first = first_piece(sender, kJoiner, transfer);
  EXPECT_EQ(first.offset, 0u);
  EXPECT_EQ(first.data.size(), 100u);
  EXPECT_GT(first.total, 1000u);
  const StateReceiver::Outcome outcome = receiver.on_chunk(0, kDonor, first);
  const auto progress = expect<StateReceiver::Progress>(outcome);
  EXPECT_EQ(progress.donor, kDonor);
  EXPECT_EQ(progress.next.request.offset, 100u);
  EXPECT_EQ(transfer_all(sender, kDonor, receiver, outcome), StateReceiver::Outcome{transfer});
  EXPECT_EQ(sender.in_progress(), 0u) << "the last piece ends the transfer at the donor";
  EXPECT_EQ(receiver.bytes_held(), 0u);
}

TEST(StateChunksTest, ATransferUnderWayIsNotBuiltAgain) {
  StateSender failstop(small_pieces(), false);
  StateSender byzantine(small_pieces(), true);
  first_piece(failstop, kJoiner, transfer_of(kDonor, 3, 1000));
  const Digest digest = first_piece(byzantine, kJoiner, transfer_of(kDonor, 3, 1000)).digest;
  EXPECT_TRUE(failstop.under_way(10 * kMs, kJoiner, 3)) << "a retry of the same view";
  EXPECT_FALSE(failstop.under_way(10 * kMs, kJoiner, 4)) << "failstop: a new view starts over";
  EXPECT_TRUE(byzantine.under_way(10 * kMs, kJoiner, 4))
      << "byzantine: a later boundary waits for the one under way";
  EXPECT_FALSE(failstop.under_way(10 * kMs, kOther, 3));
  // Asked for within twice the stall time: a joiner still taking pieces.
  ASSERT_TRUE(byzantine.on_request(90 * kMs, kJoiner, StateChunkRequest{digest, 100}));
  EXPECT_TRUE(byzantine.under_way(180 * kMs, kJoiner, 4));
  // Not asked for in twice the stall time: abandoned (the joiner restarted), so a new transfer
  // replaces it, although it is kept until idle_ns in case a piece request still comes.
  EXPECT_FALSE(byzantine.under_way(191 * kMs, kJoiner, 4));
  EXPECT_EQ(byzantine.in_progress(), 1u);
  // Idle too long: dropped.
  EXPECT_FALSE(byzantine.under_way(2000 * kMs, kJoiner, 3));
  byzantine.expire(2000 * kMs);
  EXPECT_EQ(byzantine.in_progress(), 0u);
}

TEST(StateChunksTest, OnlyWholePiecesAtTheEndOfWhatItHoldsAreTaken) {
  StateSender sender(small_pieces(), false);
  StateReceiver receiver(small_pieces());
  const StateChunk first = first_piece(sender, kJoiner, transfer_of(kDonor, 3, 1000));
  const auto ask = expect<StateReceiver::Progress>(receiver.on_chunk(0, kDonor, first)).next;
  const StateChunk second = *sender.on_request(0, kJoiner, ask.request);
  const StateChunk skipped = *sender.on_request(0, kJoiner, StateChunkRequest{first.digest, 200});
  EXPECT_TRUE(std::holds_alternative<std::monostate>(receiver.on_chunk(0, kDonor, skipped)));
  StateChunk dribble = second;
  dribble.data.resize(1);  // a faulty donor's byte at a time
  EXPECT_TRUE(std::holds_alternative<std::monostate>(receiver.on_chunk(0, kDonor, dribble)));
  EXPECT_TRUE(std::holds_alternative<std::monostate>(receiver.on_chunk(0, kOther, second)))
      << "a piece of a transfer another donor started";
  StateChunk huge = first;
  huge.total = small_pieces().state_bytes_max + 1;
  EXPECT_TRUE(std::holds_alternative<std::monostate>(receiver.on_chunk(0, kOther, huge)));
  EXPECT_EQ(receiver.bytes_held(), 100u);
  EXPECT_EQ(
      expect<StateReceiver::Progress>(receiver.on_chunk(0, kDonor, second)).next.request.offset,
      200u);
  // A request naming another transfer gets nothing.
  EXPECT_FALSE(sender.on_request(0, kJoiner, StateChunkRequest{Digest{1}, 200}).has_value());
}

TEST(StateChunksTest, AlteredPiecesAreCaughtByTheDigest) {
  StateSender sender(small_pieces(), false);
  StateReceiver receiver(small_pieces());
  const StateChunk first = first_piece(sender, kJoiner, transfer_of(kDonor, 3, 1000));
  StateReceiver::Outcome outcome = receiver.on_chunk(0, kDonor, first);
  while (const auto* progress = std::get_if<StateReceiver::Progress>(&outcome)) {
    StateChunk next = *sender.on_request(0, kJoiner, progress->next.request);
    if (next.offset == 300) next.data[7] ^= 1;
    outcome = receiver.on_chunk(0, kDonor, std::move(next));
  }
  EXPECT_TRUE(std::holds_alternative<StateReceiver::Malformed>(outcome));
  EXPECT_EQ(receiver.bytes_held(), 0u);
}

TEST(StateChunksTest, AWholeThatIsNotTheDonorsStateTransferIsRefused) {
  StateSender sender(small_pieces(), false);
  StateReceiver receiver(small_pieces());
  // Replica 2's state relayed by replica 0: the pieces are intact, but not replica 0's own.
  const StateChunk first = first_piece(sender, kJoiner, transfer_of(kOther, 3, 1000));
  EXPECT_TRUE(std::holds_alternative<StateReceiver::Malformed>(
      transfer_all(sender, kDonor, receiver, receiver.on_chunk(0, kDonor, first))));
}

TEST(StateChunksTest, EachDonorsTransferGoesOnAloneSoAFaultyOneSpoilsOnlyItsOwn) {
  StateSender honest(small_pieces(), true);
  StateSender faulty(small_pieces(), true);
  StateReceiver receiver(small_pieces());
  const StateTransfer state = transfer_of(kDonor, 3, 1000);
  StateTransfer lie = state;
  lie.sender = kOther;
  lie.service_snapshot[5] = 'L';
  StateReceiver::Outcome from_faulty =
      receiver.on_chunk(0, kOther, first_piece(faulty, kJoiner, lie));
  StateReceiver::Outcome from_honest =
      receiver.on_chunk(0, kDonor, first_piece(honest, kJoiner, state));
  // The faulty donor answers every request with a piece of garbage; the honest one is slow.
  while (const auto* progress = std::get_if<StateReceiver::Progress>(&from_faulty)) {
    StateChunk piece = *faulty.on_request(0, kJoiner, progress->next.request);
    piece.data[0] ^= 0xff;
    from_faulty = receiver.on_chunk(0, kOther, std::move(piece));
  }
  EXPECT_TRUE(std::holds_alternative<StateReceiver::Malformed>(from_faulty));
  EXPECT_EQ(transfer_all(honest, kDonor, receiver, from_honest), StateReceiver::Outcome{state});
}

TEST(StateChunksTest, ADonorWhosePieceIsLateIsAskedAgain) {
  StateSender sender(small_pieces(), false);
  StateReceiver receiver(small_pieces());
  receiver.on_chunk(0, kDonor, first_piece(sender, kJoiner, transfer_of(kDonor, 3, 1000)));
  EXPECT_TRUE(receiver.on_tick(40 * kMs).empty());
  const std::vector<StateReceiver::Ask> again = receiver.on_tick(60 * kMs);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].donor, kDonor);
  EXPECT_EQ(again[0].request.offset, 100u);
  EXPECT_TRUE(receiver.on_tick(70 * kMs).empty()) << "once per stall interval";
}

TEST(StateChunksTest, ADonorStartingOverReplacesItsOwnTransfer) {
  StateSender sender(small_pieces(), false);
  StateReceiver receiver(small_pieces());
  receiver.on_chunk(0, kDonor, first_piece(sender, kJoiner, transfer_of(kDonor, 3, 1000)));
  const StateChunk restarted =
      std::get<StateChunk>(sender.start(1 * kMs, kJoiner, transfer_of(kDonor, 4, 1000, 'z')));
  const StateReceiver::Outcome outcome = receiver.on_chunk(1 * kMs, kDonor, restarted);
  EXPECT_EQ(transfer_all(sender, kDonor, receiver, outcome),
            StateReceiver::Outcome{transfer_of(kDonor, 4, 1000, 'z')});
}

}  // namespace
}  // namespace lockstep
