// `lockstep keygen --out FILE [--force]`: makes a fresh Ed25519 key pair for a replica, a client
// principal or the administrator (byzantine.admin_public_key, `lockstep admin --key`) of a
// byzantine-mode cluster. The key file (mode 0600) stays with its owner; the public
// key, printed alone on stdout so that scripts can capture it, goes into the cluster file.
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

#include "command.h"
#include "crypto/crypto.h"

namespace lockstep::tool {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;

struct KeygenArgs {
  std::string out_path;
  bool force = false;
};

int run_keygen(const KeygenArgs& args) {
  std::error_code error;
  const std::filesystem::file_status status = std::filesystem::symlink_status(args.out_path, error);
  if (std::filesystem::exists(status)) {
    if (std::filesystem::is_directory(status)) {
      std::fprintf(stderr, "keygen: %s is a directory; --out takes a file name\n",
                   args.out_path.c_str());
      return kExitFailed;
    }
    // A key file is an identity: overwriting one by accident locks its owner out of the cluster.
    if (!args.force) {
      std::fprintf(stderr, "keygen: %s already exists; pass --force to replace it\n",
                   args.out_path.c_str());
      return kExitFailed;
    }
  }
  const crypto::KeyPair keys = crypto::generate_key_pair();
  try {
    crypto::write_key_file(args.out_path, keys);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "keygen: %s\n", e.what());
    return kExitFailed;
  }
  std::printf("%s\n", crypto::to_hex(keys.public_key).c_str());
  std::fprintf(stderr,
               "keygen: wrote %s (mode 0600); put the public key above in the cluster file (a "
               "replica's public_key, a [[clients]] public_key or [byzantine] "
               "admin_public_key)\n",
               args.out_path.c_str());
  return kExitOk;
}

}  // namespace

LOCKSTEP_COMMAND("keygen",
                 "Make an Ed25519 key pair for a byzantine-mode replica, client or administrator",
                 [](CLI::App& app) -> std::function<int()> {
                   auto args = std::make_shared<KeygenArgs>();
                   app.add_option("--out", args->out_path,
                                  "key file to write (public and secret key, mode 0600)")
                       ->required();
                   app.add_flag("--force", args->force, "replace an existing file");
                   return [args] { return run_keygen(*args); };
                 });

}  // namespace lockstep::tool
