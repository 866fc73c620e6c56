// `lockstep admin --config F [--key ADMIN_KEY] add-replica N | remove-replica N [--timeout MS]
// [--effective-in-ms MS]`: an operator's membership change (failstop: docs/DESIGN.md §12;
// byzantine: §11.9, signed with the administrator's key, see runtime/admin.h). The request goes to
// every replica the file lists; each answer is printed (replica, accepted or refused, detail). Then
// the command waits, at most --timeout ms, until the members' status shows the change (remove: no
// member lists N; add: every member lists N and N itself serves) and prints the new membership.
//
// add-replica N lets a listed replica in (a spare, `member = false`, or one removed earlier); it is
// added when it asks, so run it with `lockstep replica --config F --id N --join`. remove-replica N
// takes a member out (it halts, exit 3); removing the last member is refused.
//
// Byzantine mode: --key names the administrator's key file (its public key is the cluster file's
// byzantine.admin_public_key); the change takes effect --effective-in-ms from now (default 3000,
// rounded up to the checkpoint grid), and an added replica must run with `--join`.
//
// Exit 0 when the change is visible, 1 when no member accepted it (the reasons on stderr), 2 for
// bad arguments (byzantine: no key or the wrong one, adding a member, removing a non-member,
// fewer than 3 members after), 3 when it was accepted but did not become visible in time. See
// runtime/admin.h.
#include <iostream>

#include "command.h"
#include "net/logging.h"
#include "runtime/admin.h"
#include "runtime/config.h"

namespace lockstep::tool {
namespace {

struct AdminArgs {
  std::string config_path;
  uint32_t replica = 0;
  MembershipChange change = MembershipChange::kAdd;
  uint64_t timeout_ms = 5000;
  uint64_t connect_timeout_ms = 1000;
  std::string key_path;
  uint64_t effective_in_ms = 3000;
};

int run_admin_command(const AdminArgs& args) {
  net::init_logging("admin", "warn");
  runtime::ClusterConfig config;
  try {
    config = runtime::load_config(args.config_path);
  } catch (const runtime::ConfigError& error) {
    std::cerr << error.what() << "\n";
    return runtime::kAdminUsage;
  }
  if (config.mode == runtime::Mode::kFailstop && !args.key_path.empty()) {
    std::cerr << "admin: --key: a failstop cluster's changes are not signed; leave it out\n";
    return runtime::kAdminUsage;
  }
  runtime::AdminOptions options;
  options.wait_ms = args.timeout_ms;
  options.connect_timeout_ms = args.connect_timeout_ms;
  options.key_file = args.key_path;
  options.effective_in_ms = args.effective_in_ms;
  return runtime::run_admin(config, args.change, ReplicaId{args.replica}, options, std::cout,
                            std::cerr);
}

std::function<int()> setup_admin(CLI::App& app) {
  auto args = std::make_shared<AdminArgs>();
  app.add_option("--config", args->config_path, "cluster TOML file")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--timeout", args->timeout_ms,
                 "ms to wait for the new membership to show (default 5000)");
  app.add_option("--connect-timeout", args->connect_timeout_ms,
                 "ms to wait for each replica's answer (default 1000)");
  app.add_option("--key", args->key_path,
                 "byzantine: the administrator's key file (its public key is the cluster file's "
                 "byzantine.admin_public_key)");
  app.add_option("--effective-in-ms", args->effective_in_ms,
                 "byzantine: how far ahead the change takes effect (default 3000; rounded up to "
                 "the checkpoint interval)");
  app.require_subcommand(1);
  // The options may also follow the subcommand: `admin --config F add-replica 3 --key K`.
  app.fallthrough();
  auto change = [&app, args](const char* name, const char* help, MembershipChange code) {
    CLI::App* sub = app.add_subcommand(name, help);
    sub->add_option("replica", args->replica, "the replica's id in the cluster file")->required();
    sub->callback([args, code] { args->change = code; });
  };
  change("add-replica", "let listed replica N join (then run it with `lockstep replica --join`)",
         MembershipChange::kAdd);
  change("remove-replica", "take member N out of the membership (it halts)",
         MembershipChange::kRemove);
  return [args] { return run_admin_command(*args); };
}

LOCKSTEP_COMMAND("admin", "Change a cluster's membership (add-replica, remove-replica)",
                 setup_admin);

}  // namespace
}  // namespace lockstep::tool
