// The end-of-run checks shared by the workload tool and the integration tests: the append audit,
// and the final reads against a cluster that does not answer.
#include "workload/verify.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "runtime/local_cluster.h"

namespace lockstep::workload {
namespace {

check::Operation append(const std::string& key, const std::string& value, uint64_t call_ns,
                        check::Outcome outcome = check::Outcome::kOk) {
  check::Operation op;
  op.kind = check::OpKind::kAppend;
  op.key = key;
  op.value = value;
  op.call_ns = call_ns;
  op.outcome = outcome;
  if (outcome == check::Outcome::kOk) op.return_ns = call_ns + 10;
  return op;
}

TEST(AppendAudit, FlagsAnAcknowledgedAppendMissingOrTwiceInTheFinalValue) {
  const std::vector<check::Operation> history = {append("a", "[1]", 100), append("a", "[2]", 200),
                                                 append("b", "[3]", 300)};
  const AppendAudit audit = audit_appends(history, {{"a", "[1][1]"}, {"b", "[3]"}});
  EXPECT_EQ(audit.checked, 3u);
  EXPECT_EQ(audit.lost, (std::vector<std::string>{"a <- [1]", "a <- [2]"}));
}

TEST(AppendAudit, SkipsAppendsAPutMayHaveOverwrittenAndKeysNotReadBack) {
  check::Operation put;
  put.kind = check::OpKind::kPut;
  put.key = "a";
  put.value = "x";
  put.call_ns = 150;
  put.outcome = check::Outcome::kUnknown;  // may take effect any time after its call
  const std::vector<check::Operation> history = {append("a", "[1]", 100), put,
                                                 append("b", "[2]", 200),
                                                 append("c", "[3]", 300, check::Outcome::kUnknown)};
  // "b" was not read back (the cluster stopped answering), "c" was never acknowledged.
  const AppendAudit audit = audit_appends(history, {{"a", "x"}, {"c", ""}});
  EXPECT_EQ(audit.checked, 0u);
  EXPECT_TRUE(audit.lost.empty());
}

// A stalled cluster costs one client deadline, not one per key (CI once spent its whole test
// timeout reading 200 keys from a cluster that had stopped answering).
TEST(FinalState, StopsAtTheFirstReadTheClusterDoesNotAnswer) {
  NetworkClientOptions client;
  for (uint16_t port : runtime::pick_free_ports(3))
    client.replicas.push_back(net::Address{"127.0.0.1", port});  // nobody listens there
  client.session.deadline_ns = 200'000'000;
  client.session.retry_interval_ns = 50'000'000;
  std::vector<check::Operation> history;
  const FinalState state = read_final_state(client, {"k0", "k1", "k2"}, history);
  EXPECT_TRUE(state.values.empty());
  ASSERT_EQ(state.errors.size(), 2u);
  EXPECT_EQ(state.errors[0].rfind("k0: ", 0), 0u) << state.errors[0];
  EXPECT_EQ(state.errors[1], "2 more keys not read: the cluster did not answer");
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].outcome, check::Outcome::kUnknown);
}

}  // namespace
}  // namespace lockstep::workload
