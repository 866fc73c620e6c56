#include "runtime/credentials.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "crypto/membership.h"

namespace lockstep::runtime {

ClientCredentials client_credentials(const ClusterConfig& config, const crypto::KeyPair& keys,
                                     uint32_t principal, const std::string& source) {
  if (config.mode != Mode::kByzantine) {
    throw std::runtime_error(source + ": client keys are for byzantine clusters; this one is " +
                             std::string(mode_name(config.mode)));
  }
  auto listed = std::find_if(
      config.clients.begin(), config.clients.end(),
      [&](const ClientPrincipalConfig& client) { return client.principal == principal; });
  if (listed == config.clients.end()) {
    throw std::runtime_error("client principal " + std::to_string(principal) +
                             " is not in the cluster file's [[clients]]");
  }
  if (listed->public_key != keys.public_key) {
    throw std::runtime_error(source + ": public key " + crypto::to_hex(keys.public_key) +
                             " is not client principal " + std::to_string(principal) +
                             "'s key in the cluster file (" + crypto::to_hex(listed->public_key) +
                             "): wrong key file or wrong --principal");
  }
  ClientCredentials credentials;
  credentials.principal = principal;
  credentials.signer = crypto::make_signer(crypto::Scheme::kEd25519, keys);
  credentials.verifier = crypto::make_verifier(crypto::Scheme::kEd25519, config.key_directory());
  return credentials;
}

ClientCredentials admin_credentials(const ClusterConfig& config, const crypto::KeyPair& keys,
                                    const std::string& source) {
  if (config.mode != Mode::kByzantine || !config.byzantine) {
    throw std::runtime_error(source +
                             ": an administrator's key is for byzantine clusters; this "
                             "one is " +
                             std::string(mode_name(config.mode)));
  }
  if (!config.byzantine->admin_public_key) {
    throw std::runtime_error(
        "the cluster file names no administrator: add byzantine.admin_public_key (the public key "
        "`lockstep keygen` printed for the administrator's key file) to every copy of it");
  }
  if (*config.byzantine->admin_public_key != keys.public_key) {
    throw std::runtime_error(source + ": public key " + crypto::to_hex(keys.public_key) +
                             " is not the cluster's byzantine.admin_public_key (" +
                             crypto::to_hex(*config.byzantine->admin_public_key) +
                             "): wrong key file");
  }
  ClientCredentials credentials;
  credentials.principal = kAdminPrincipal;
  credentials.signer = crypto::make_signer(crypto::Scheme::kEd25519, keys);
  credentials.verifier = crypto::make_verifier(crypto::Scheme::kEd25519, config.key_directory());
  return credentials;
}

ClientCredentials load_client_credentials(const ClusterConfig& config,
                                          const std::filesystem::path& key_file,
                                          uint32_t principal) {
  return client_credentials(config, crypto::read_key_file(key_file.string()), principal,
                            key_file.string());
}

NetworkClientOptions network_client_options(const ClusterConfig& config,
                                            const ClientCredentials* credentials) {
  NetworkClientOptions options;
  options.replicas = config.addresses();
  options.session = config.client_options();
  if (config.mode == Mode::kByzantine) {
    if (credentials == nullptr || !credentials->signer || !credentials->verifier) {
      throw std::runtime_error(
          "a byzantine cluster accepts only signed requests: give a client key (--key FILE)");
    }
    options.verifier = credentials->verifier.get();
    options.session.membership_verifier = credentials->verifier.get();
    options.signer = credentials->signer.get();
    options.principal = credentials->principal;
  }
  return options;
}

}  // namespace lockstep::runtime
