// `lockstep kv --config F get K | put K V | del K | append K V | cas K EXPECTED NEW | incr K
// [DELTA]`: one request to the replicated key-value store. Prints the result on stdout:
// the value (get), OK (put, del, append), true/false (cas), the new value (incr), or
// "(not found)" for a get of an absent key. Exit 1, with the reason on stderr, when the store
// reports an error or no replica answers by the deadline.
//
// Byzantine clusters take only signed requests: `--key FILE` (a client principal's key file,
// `--principal N`, default 1) is required there. The answer is the result t+1 replicas signed;
// replicas that said otherwise are named on stderr, and `--certificate FILE` saves the signed
// replies for `lockstep verify-reply`.
#include <iostream>

#include "apps/kv/kv_machine.h"
#include "client/certificate.h"
#include "client/client.h"
#include "command.h"
#include "net/logging.h"
#include "runtime/config.h"
#include "runtime/credentials.h"

namespace lockstep::tool {
namespace {

struct KvArgs {
  std::string config_path;
  std::string key;
  std::string value;
  std::string expected;
  int64_t delta = 1;
  uint64_t deadline_ms = 0;
  kv::Op op = kv::Op::kGet;
  std::string key_path;
  uint32_t principal = runtime::kDefaultClientPrincipal;
  std::string certificate_path;
};

int run_kv(const KvArgs& args) {
  // Library chatter (reconnects) stays out of the way; errors reach stderr via the result.
  net::init_logging("kv", "warn");
  runtime::ClusterConfig config;
  try {
    config = runtime::load_config(args.config_path);
  } catch (const runtime::ConfigError& error) {
    std::cerr << error.what() << "\n";
    return 1;
  }
  if (args.deadline_ms != 0) config.client.deadline_ms = args.deadline_ms;
  const bool byzantine = config.mode == runtime::Mode::kByzantine;
  runtime::ClientCredentials credentials;
  NetworkClientOptions options;
  try {
    if (byzantine && args.key_path.empty()) {
      throw std::runtime_error(args.config_path +
                               ": a byzantine cluster takes only signed requests: give a client "
                               "key with --key FILE (and --principal N if not 1)");
    }
    if (!byzantine && (!args.key_path.empty() || !args.certificate_path.empty())) {
      throw std::runtime_error(args.config_path +
                               ": --key and --certificate are for byzantine clusters");
    }
    if (byzantine) {
      credentials = runtime::load_client_credentials(config, args.key_path, args.principal);
    }
    options = runtime::network_client_options(config, byzantine ? &credentials : nullptr);
  } catch (const std::exception& error) {
    std::cerr << "error: " << error.what() << "\n";
    return 1;
  }

  kv::Command command{args.op, args.key, args.value, args.expected, args.delta};
  BlockingClient client(options);
  BlockingClient::Outcome outcome = client.call(kv::encode_command(command));
  if (!outcome.ok) {
    std::cerr << "error: " << outcome.error << "\n";
    return 1;
  }
  for (const ClientSession::Dissent& dissent : outcome.dissent) {
    std::cerr << "warning: replica " << dissent.replica.value
              << " sent a different result; outvoted by " << config.t + 1 << " matching replies\n";
  }
  if (!args.certificate_path.empty()) {
    if (!outcome.certificate) {
      std::cerr << "error: no reply certificate to save\n";
      return 1;
    }
    try {
      write_certificate_file(args.certificate_path, *outcome.certificate);
    } catch (const std::exception& error) {
      std::cerr << "error: " << error.what() << "\n";
      return 1;
    }
  }
  std::optional<kv::Result> result = kv::decode_result(outcome.result);
  if (!result) {
    std::cerr << "error: replica " << outcome.replied_by.value << " sent a malformed result\n";
    return 1;
  }
  switch (result->code) {
    case kv::ResultCode::kOk:
      if (args.op == kv::Op::kPut || args.op == kv::Op::kDel || args.op == kv::Op::kAppend) {
        std::cout << "OK\n";
      } else {
        std::cout << result->value << "\n";
      }
      return 0;
    case kv::ResultCode::kNotFound:
      std::cout << "(not found)\n";
      return 0;
    case kv::ResultCode::kError:
      std::cerr << "error: " << result->value << "\n";
      return 1;
  }
  return 1;
}

std::function<int()> setup_kv(CLI::App& app) {
  auto args = std::make_shared<KvArgs>();
  app.add_option("--config", args->config_path, "cluster TOML file")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--deadline-ms", args->deadline_ms,
                 "give up after this long (default: the file's client.deadline_ms)");
  app.add_option("--key", args->key_path, "client principal's key file (byzantine mode)")
      ->check(CLI::ExistingFile);
  app.add_option("--principal", args->principal, "client principal of --key (default 1)")
      ->check(CLI::Range(1u, 4294967295u));
  app.add_option("--certificate", args->certificate_path,
                 "byzantine mode: save the reply certificate here (lockstep verify-reply)");
  app.require_subcommand(1);
  auto op = [&app, args](const char* name, const char* help, kv::Op code) {
    CLI::App* sub = app.add_subcommand(name, help);
    sub->add_option("key", args->key, "key")->required();
    sub->callback([args, code] { args->op = code; });
    return sub;
  };
  op("get", "print the value of KEY", kv::Op::kGet);
  op("put", "set KEY to VALUE", kv::Op::kPut)
      ->add_option("value", args->value, "value")
      ->required();
  op("del", "delete KEY", kv::Op::kDel);
  op("append", "append VALUE to KEY's value", kv::Op::kAppend)
      ->add_option("value", args->value, "value")
      ->required();
  CLI::App* cas = op("cas", "set KEY to NEW if its value is EXPECTED", kv::Op::kCas);
  cas->add_option("expected", args->expected, "expected current value")->required();
  cas->add_option("new", args->value, "new value")->required();
  op("incr", "add DELTA (default 1) to KEY's decimal value", kv::Op::kIncr)
      ->add_option("delta", args->delta, "amount");
  return [args] { return run_kv(*args); };
}

LOCKSTEP_COMMAND("kv", "One request to the replicated key-value store", setup_kv);

}  // namespace
}  // namespace lockstep::tool
