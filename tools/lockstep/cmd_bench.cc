// `lockstep bench`: micro-benchmarks (Google Benchmark) of the pieces on the request path, with
// no network: the codec, the KV machine with its session table, the failstop protocol core
// ordering requests among 3 in-process replicas, and the byzantine mode's signatures and digests.
// End-to-end figures come from `lockstep workload`.
#include <benchmark/benchmark.h>

#include <deque>
#include <map>

#include "apps/kv/kv_machine.h"
#include "command.h"
#include "core/codec.h"
#include "crypto/crypto.h"
#include "crypto/signing.h"
#include "replica/replica.h"
#include "statemachine/service.h"

namespace lockstep::tool {
namespace {

Bytes put_command(uint64_t i) {
  std::string key = "key-" + std::to_string(i % 1000);
  key.resize(16, '.');
  return kv::encode_command(kv::Command{kv::Op::kPut, key, std::string(100, 'v'), {}, 0});
}

ReplicaUpdate sample_update(size_t entries) {
  ReplicaUpdate update{ReplicaId{1}, 77, false, ViewNumber{0}, 1'000'000, {}, {5, 9, 12}};
  for (size_t i = 0; i < entries; ++i) {
    update.entries.push_back(
        OrderedEntry{i + 1, Timestamp{1000 + i, ReplicaId{1}},
                     ClientRequest{ClientId{i}, Sequence{i + 1}, Sequence{i}, put_command(i), {}}});
  }
  return update;
}

void BM_EncodePeerFrame(benchmark::State& state) {
  const WireMessage message = PeerData{1, 1, sample_update(static_cast<size_t>(state.range(0)))};
  Bytes out;
  for (auto _ : state) {
    out.clear();
    encode_frame(message, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * out.size()));
}
BENCHMARK(BM_EncodePeerFrame)->Arg(1)->Arg(64);

void BM_DecodePeerFrame(benchmark::State& state) {
  Bytes frame;
  encode_frame(PeerData{1, 1, sample_update(static_cast<size_t>(state.range(0)))}, frame);
  for (auto _ : state) {
    auto decoded = decode_frame(frame);
    benchmark::DoNotOptimize(decoded);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * frame.size()));
}
BENCHMARK(BM_DecodePeerFrame)->Arg(1)->Arg(64);

void BM_ServiceExecutePut(benchmark::State& state) {
  Service service(std::make_unique<kv::KvMachine>());
  uint64_t i = 0;
  for (auto _ : state) {
    ++i;
    auto result = service.execute(
        ClientRequest{ClientId{i % 64}, Sequence{i}, Sequence{i}, put_command(i), {}});
    benchmark::DoNotOptimize(result);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ServiceExecutePut);

// Three replicas in one thread, messages handed over in memory: what the protocol itself costs
// per request (ordering, acknowledgement, stability, execution), with batches of `range(0)`
// requests per round.
void BM_FailstopOrdering(benchmark::State& state) {
  constexpr uint32_t kReplicas = 3;
  std::vector<Replica> replicas;
  replicas.reserve(kReplicas);
  for (uint32_t r = 0; r < kReplicas; ++r) {
    failstop::Options options;
    options.self = ReplicaId{r};
    options.replica_count = kReplicas;
    options.incarnation = r + 1;
    replicas.emplace_back(options, std::make_unique<kv::KvMachine>());
  }
  const uint64_t batch = static_cast<uint64_t>(state.range(0));
  uint64_t sequence = 0;
  uint64_t now_ns = 1'000'000;
  uint64_t replies = 0;
  for (auto _ : state) {
    ++sequence;
    now_ns += 1000;
    const Now now{now_ns, now_ns / 1000};
    for (uint64_t c = 0; c < batch; ++c) {
      ClientRequest request{
          ClientId{c + 1}, Sequence{sequence}, Sequence{sequence}, put_command(c), {}};
      for (Replica& replica : replicas)
        replica.on_client_request(now, request);
    }
    // Rounds of delivery until every request has been answered.
    for (int round = 0; round < 4; ++round) {
      for (Replica& replica : replicas) {
        Replica::Output out = replica.take_output();
        replies += out.to_clients.size();
        for (Replica::PeerMessage& m : out.to_peers) {
          replicas[m.to.value].on_peer_message(now, replica.id(), std::move(m.message));
        }
      }
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(replies));
  state.counters["replies_per_request"] =
      static_cast<double>(replies) / static_cast<double>(state.iterations() * batch);
}
BENCHMARK(BM_FailstopOrdering)->Arg(1)->Arg(64);

// ---- byzantine mode: what each signed message costs ------------------------------------------

crypto::KeyPair bench_keys(crypto::Scheme scheme, uint8_t n) {
  std::array<uint8_t, 32> seed{};
  seed.fill(n);
  return crypto::derive_key_pair(scheme, seed);
}

// An endorsement's signed string: the shortest and most frequent message a replica signs.
Bytes sample_endorsement_bytes() {
  return crypto::endorsement_signing_bytes(crypto::digest(to_bytes("a proposal")));
}

void BM_SignEndorsement(benchmark::State& state, crypto::Scheme scheme) {
  const auto signer = crypto::make_signer(scheme, bench_keys(scheme, 1));
  const Bytes message = sample_endorsement_bytes();
  for (auto _ : state) {
    Signature signature = signer->sign(message);
    benchmark::DoNotOptimize(signature);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK_CAPTURE(BM_SignEndorsement, ed25519, crypto::Scheme::kEd25519);
BENCHMARK_CAPTURE(BM_SignEndorsement, sim, crypto::Scheme::kSim);

void BM_VerifyEndorsement(benchmark::State& state, crypto::Scheme scheme) {
  const crypto::KeyPair keys = bench_keys(scheme, 1);
  const auto signer = crypto::make_signer(scheme, keys);
  crypto::KeyDirectory directory;
  directory.replicas = {keys.public_key};
  const auto verifier = crypto::make_verifier(scheme, directory, {keys});
  const Bytes message = sample_endorsement_bytes();
  const Signature signature = signer->sign(message);
  for (auto _ : state) {
    bool ok = verifier->verify_replica(ReplicaId{0}, message, signature);
    benchmark::DoNotOptimize(ok);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK_CAPTURE(BM_VerifyEndorsement, ed25519, crypto::Scheme::kEd25519);
BENCHMARK_CAPTURE(BM_VerifyEndorsement, sim, crypto::Scheme::kSim);

// A proposal of range(0) signed 128-byte KV puts: the digest hashes every request's digest.
void BM_ProposalDigest(benchmark::State& state) {
  const auto client =
      crypto::make_signer(crypto::Scheme::kEd25519, bench_keys(crypto::Scheme::kEd25519, 2));
  Proposal proposal{ReplicaId{0}, 1'000'000, {}, {}};
  for (uint64_t i = 0; i < static_cast<uint64_t>(state.range(0)); ++i) {
    ClientRequest request{
        client_id_of(1, static_cast<uint32_t>(i)), Sequence{1}, Sequence{0}, put_command(i), {}};
    crypto::sign_request(*client, request);
    proposal.requests.push_back(std::move(request));
  }
  for (auto _ : state) {
    Digest d = crypto::proposal_digest(proposal);
    benchmark::DoNotOptimize(d);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_ProposalDigest)->Arg(64);

// One signature over a batch of range(0) replies (digest of each, then one Ed25519 signature).
void BM_SignReplies(benchmark::State& state) {
  const auto signer =
      crypto::make_signer(crypto::Scheme::kEd25519, bench_keys(crypto::Scheme::kEd25519, 3));
  std::vector<ClientReply> replies;
  for (uint64_t i = 0; i < static_cast<uint64_t>(state.range(0)); ++i) {
    replies.push_back(
        ClientReply{ClientId{i}, Sequence{i + 1}, ReplicaId{0}, ReplyStatus::kOk, to_bytes("ok")});
  }
  for (auto _ : state) {
    SignedReplies batch = crypto::sign_replies(*signer, ReplicaId{0}, replies);
    benchmark::DoNotOptimize(batch.signature);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_SignReplies)->Arg(32);

// Three byzantine replicas in one thread with Ed25519 keys: what a replica costs per request
// (checking the client's signature, proposing, endorsing and relaying, deciding, executing, and
// signing one reply batch per round), with `range(0)` client-signed requests per round. Client
// signing is done outside the timed part: it is the client's cost.
void BM_ByzantineOrdering(benchmark::State& state) {
  constexpr uint32_t kReplicas = 3;
  constexpr uint32_t kPrincipal = 1;
  crypto::KeyDirectory directory;
  std::vector<std::unique_ptr<crypto::Signer>> signers;
  for (uint8_t r = 0; r < kReplicas; ++r) {
    const crypto::KeyPair keys = bench_keys(crypto::Scheme::kEd25519, r + 1);
    directory.replicas.push_back(keys.public_key);
    signers.push_back(crypto::make_signer(crypto::Scheme::kEd25519, keys));
  }
  const crypto::KeyPair client_keys = bench_keys(crypto::Scheme::kEd25519, 99);
  directory.clients.emplace(kPrincipal, client_keys.public_key);
  const auto client_signer = crypto::make_signer(crypto::Scheme::kEd25519, client_keys);
  const auto verifier = crypto::make_verifier(crypto::Scheme::kEd25519, directory);
  std::vector<Replica> replicas;
  replicas.reserve(kReplicas);
  for (uint32_t r = 0; r < kReplicas; ++r) {
    byzantine::Options options;
    options.self = ReplicaId{r};
    options.replica_count = kReplicas;
    options.t = 1;
    options.signer = signers[r].get();
    options.verifier = verifier.get();
    replicas.emplace_back(options, std::make_unique<kv::KvMachine>());
  }
  const uint64_t batch = static_cast<uint64_t>(state.range(0));
  uint64_t sequence = 0;
  uint64_t now_us = 1'000'000;
  uint64_t replies = 0;
  std::vector<ClientRequest> requests;
  for (auto _ : state) {
    state.PauseTiming();
    ++sequence;
    requests.clear();
    for (uint64_t c = 0; c < batch; ++c) {
      ClientRequest request{client_id_of(kPrincipal, static_cast<uint32_t>(c + 1)),
                            Sequence{sequence},
                            Sequence{sequence},
                            put_command(c),
                            {}};
      crypto::sign_request(*client_signer, request);
      requests.push_back(std::move(request));
    }
    state.ResumeTiming();
    now_us += 1'000;
    for (const ClientRequest& request : requests) {
      for (Replica& replica : replicas)
        replica.on_client_request(Now{now_us * 1000, now_us}, request);
    }
    // Proposals and relays at this instant, then time passes the decision point.
    for (const uint64_t at_us : {now_us, now_us, now_us + 100'000}) {
      const Now now{at_us * 1000, at_us};
      for (Replica& replica : replicas) {
        replica.tick(now);
        Replica::Output out = replica.take_output();
        replies += out.to_clients.size();
        if (!out.to_clients.empty()) {
          benchmark::DoNotOptimize(
              crypto::sign_replies(*signers[replica.id().value], replica.id(), out.to_clients));
        }
        for (Replica::PeerMessage& m : out.to_peers) {
          replicas[m.to.value].on_peer_message(now, replica.id(), std::move(m.message));
        }
      }
    }
    now_us += 100'000;
  }
  state.SetItemsProcessed(static_cast<int64_t>(replies / kReplicas));
  state.counters["replies_per_request"] =
      static_cast<double>(replies) / static_cast<double>(state.iterations() * batch);
}
BENCHMARK(BM_ByzantineOrdering)->Arg(1)->Arg(64);

LOCKSTEP_COMMAND("bench", "Micro-benchmarks of codec, state machine and protocol core",
                 [](CLI::App& app) {
                   static std::vector<std::string> args;
                   app.allow_extras();
                   return [&app]() {
                     // Pass the remaining arguments (e.g. --benchmark_filter=...) through.
                     args = {"lockstep bench"};
                     for (const std::string& extra : app.remaining())
                       args.push_back(extra);
                     std::vector<char*> argv;
                     for (std::string& a : args)
                       argv.push_back(a.data());
                     int argc = static_cast<int>(argv.size());
                     benchmark::Initialize(&argc, argv.data());
                     benchmark::RunSpecifiedBenchmarks();
                     benchmark::Shutdown();
                     return 0;
                   };
                 });

}  // namespace
}  // namespace lockstep::tool
