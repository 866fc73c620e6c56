// An operator's membership change (`lockstep admin --config F add-replica|remove-replica N`,
// failstop reconfiguration, docs/DESIGN.md §12), as a library so that tests run the same code.
//
// What it does:
//  1. Sends an AdminRequest to every replica listed in the cluster file, each over its own client
//     connection with a connect timeout (a replica that is down, or a spare not started, is
//     reported and skipped). Every answer is printed: replica, accepted, detail. Members take the
//     change; replicas still joining and halted ones refuse it (they are not members).
//  2. If no member accepted, it fails (exit kAdminRefused) with the members' reasons.
//  3. Otherwise it polls every listed replica's status (StatusRequest) until the change is
//     visible, at most `wait_ms`:
//       remove N: every serving member reports the same membership, without N;
//       add N:    every serving member reports the same membership, with N, and N itself answers
//                 as a serving member (it has loaded a member's state).
//     and prints the new membership. This is how clients learn the new configuration: the cluster
//     file lists every replica that may ever be a member (spares included), clients send to all
//     of them, and the membership of the moment is what the replicas' StatusReply say; a replica
//     that is not a member (a spare, one joining, one removed) answers requests kNotServing.
//
// Byzantine mode (docs/DESIGN.md §11.9; the cluster file names byzantine.admin_public_key and the
// operator gives the matching key file, AdminOptions::key_file):
//  1. Asks every listed replica for its status and takes the highest (epoch, members) that
//     max(t of that configuration, the file's t) + 1 replicas report alike: at most t lie.
//  2. Computes the new members (add: not a member yet; remove: a member; at least 3 after) and
//     the boundary effective_us: wall clock now + effective_in_ms, rounded up to a multiple of the
//     checkpoint interval.
//  3. Signs {epoch + 1, members, effective_us} (crypto/membership.h) as client principal
//     kAdminPrincipal and sends it like any request (the Client library: t+1 matching signed
//     replies, counting by the configurations it learns). Prints the replicas' output,
//     "epoch K: members [..] from <us>" or "refused: <why>" (exit kAdminRefused).
//  4. Polls until every member of the new epoch reports it (and an added replica serves), at
//     most until effective_us + wait_ms.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <ostream>
#include <string>

#include "core/messages.h"
#include "net/address.h"
#include "runtime/config.h"

namespace lockstep::runtime {

// Exit codes of `lockstep admin`.
inline constexpr int kAdminDone = 0;
// No member accepted the change (or none answered); byzantine: the replicas refused it, no t+1
// agreed on the current configuration, or no t+1 answered the signed change.
inline constexpr int kAdminRefused = 1;
// Bad arguments or cluster file; byzantine: no administrator key, or the wrong one.
inline constexpr int kAdminUsage = 2;
inline constexpr int kAdminNotVisible = 3;  // accepted, but not visible within the wait

struct AdminOptions {
  uint64_t connect_timeout_ms = 1000;  // per replica, for the connection and its answer
  uint64_t wait_ms = 5000;             // how long to wait for the change to become visible
  uint64_t poll_interval_ms = 100;
  // Byzantine mode: the administrator's key file (`lockstep keygen`), and how far ahead of now
  // the change takes effect (it must leave every replica time to order and execute it first;
  // the replicas refuse a change that would take effect too soon).
  std::filesystem::path key_file;
  uint64_t effective_in_ms = 3000;
};

// Sends one AdminRequest to the replica at `address` and waits for its AdminReply. Blocking;
// nullopt and `error` set when it does not answer within `timeout_ms`.
std::optional<AdminReply> send_admin_request(const net::Address& address,
                                             const AdminRequest& request, uint64_t timeout_ms,
                                             std::string& error);

// The whole command (steps above); prints to `out` (answers, membership) and `err` (why it
// failed). Returns one of the exit codes above.
int run_admin(const ClusterConfig& config, MembershipChange change, ReplicaId replica,
              const AdminOptions& options, std::ostream& out, std::ostream& err);

}  // namespace lockstep::runtime
