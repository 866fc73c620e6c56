// `lockstep verify-reply --config CLUSTER.toml --certificate FILE`: checks a reply certificate
// (client/certificate.h) offline against the public keys of a byzantine cluster. Valid means t+1
// distinct replicas signed this very reply, so at least one correct replica produced it.
//
// Exit codes: 0 valid; 1 not valid, or the configuration or certificate cannot be read (the
// reason is printed either way).
#include <cstdio>
#include <exception>
#include <memory>
#include <string>

#include "client/certificate.h"
#include "command.h"
#include "crypto/crypto.h"
#include "runtime/config.h"

namespace lockstep::tool {
namespace {

constexpr int kExitValid = 0;
constexpr int kExitNotValid = 1;

struct VerifyReplyOptions {
  std::string config_path;
  std::string certificate_path;
};

// Printable ASCII as a quoted string, anything else as hex: results are usually KV values.
std::string describe_result(const Bytes& result) {
  for (uint8_t byte : result) {
    if (byte < 0x20 || byte > 0x7e || byte == '"' || byte == '\\') {
      return "0x" + crypto::to_hex(result);
    }
  }
  return "\"" + to_string(result) + "\"";
}

int run(const VerifyReplyOptions& options) {
  runtime::ClusterConfig config;
  ReplyCertificate certificate;
  try {
    config = runtime::load_config(options.config_path);
    certificate = read_certificate_file(options.certificate_path);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "verify-reply: %s\n", error.what());
    return kExitNotValid;
  }
  if (config.mode != runtime::Mode::kByzantine) {
    std::fprintf(stderr,
                 "verify-reply: %s: a %s cluster has no replica keys; certificates exist only in "
                 "byzantine mode\n",
                 options.config_path.c_str(), std::string(runtime::mode_name(config.mode)).c_str());
    return kExitNotValid;
  }
  const std::unique_ptr<crypto::Verifier> verifier =
      crypto::make_verifier(crypto::Scheme::kEd25519, config.key_directory());
  // t+1: at most t replicas are faulty, so t+1 signers include a correct one. config.t is
  // epoch 0's, counted over its members only: spares are listed but were not members then.
  const uint32_t quorum = config.t + 1;

  std::string why;
  if (!verify_certificate(certificate, *verifier, quorum, &why, config.initial_members())) {
    std::printf("not valid: %s\n", why.c_str());
    return kExitNotValid;
  }
  std::string replicas;
  for (const ReplyProof& proof : certificate.proofs) {
    if (!replicas.empty()) replicas += ", ";
    replicas += std::to_string(proof.replica.value);
  }
  std::printf("valid: %zu of %u signatures from replicas [%s] agree on result %s\n",
              certificate.proofs.size(), quorum, replicas.c_str(),
              describe_result(certificate.reply.result).c_str());
  std::printf("reply to client %llu (principal %u), sequence %llu\n",
              static_cast<unsigned long long>(certificate.reply.client.value),
              principal_of(certificate.reply.client),
              static_cast<unsigned long long>(certificate.reply.sequence.value));
  return kExitValid;
}

}  // namespace

LOCKSTEP_COMMAND(
    "verify-reply", "Check a reply certificate against a byzantine cluster's public keys",
    [](CLI::App& app) -> std::function<int()> {
      auto options = std::make_shared<VerifyReplyOptions>();
      app.add_option("--config", options->config_path, "the cluster file (TOML)")->required();
      app.add_option("--certificate", options->certificate_path,
                     "the certificate file (JSON, see client/certificate.h)")
          ->required();
      return [options] { return run(*options); };
    });

}  // namespace lockstep::tool
