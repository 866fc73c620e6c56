// What a client of a byzantine cluster needs besides the addresses: the key of its client
// principal, to sign requests, and every replica's public key, to check signed replies. Shared by
// `lockstep kv`, `lockstep workload`, the demo, LocalCluster and the tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>

#include "client/client.h"
#include "crypto/crypto.h"
#include "runtime/config.h"

namespace lockstep::runtime {

// The principal `--principal` defaults to in the tools, and the one LocalCluster creates.
inline constexpr uint32_t kDefaultClientPrincipal = 1;

// Owns what NetworkClientOptions points to in byzantine mode; keep it alive as long as any
// client made from those options. Moving it keeps the pointers valid.
struct ClientCredentials {
  uint32_t principal = 0;
  std::unique_ptr<crypto::Signer> signer;
  std::unique_ptr<crypto::Verifier> verifier;
};

// Reads `key_file` (crypto::read_key_file) and checks that its public key is the one the
// configuration lists for `principal`. Throws std::runtime_error with a message that says what to
// fix (a failstop configuration, an unknown principal, a key that is not the principal's).
ClientCredentials load_client_credentials(const ClusterConfig& config,
                                          const std::filesystem::path& key_file,
                                          uint32_t principal);
// The same from a key pair already in memory.
ClientCredentials client_credentials(const ClusterConfig& config, const crypto::KeyPair& keys,
                                     uint32_t principal, const std::string& source);

// The administrator's credentials (`lockstep admin --key`, byzantine membership changes): the
// key must be the cluster file's byzantine.admin_public_key; they sign as client principal
// kAdminPrincipal. Throws std::runtime_error saying what to fix (a failstop cluster, a file
// without admin_public_key, another key).
ClientCredentials admin_credentials(const ClusterConfig& config, const crypto::KeyPair& keys,
                                    const std::string& source);

// Client options for `config`: addresses, the session options (reply_quorum t+1 in byzantine
// mode, the members of epoch 0) and, in byzantine mode, the credentials' signer, verifier (which
// also checks membership changes when the file names an administrator) and principal. Throws
// std::runtime_error for a byzantine configuration without credentials.
NetworkClientOptions network_client_options(const ClusterConfig& config,
                                            const ClientCredentials* credentials);

}  // namespace lockstep::runtime
