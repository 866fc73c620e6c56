#include "runtime/local_cluster.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "net/address.h"
#include "net/event_loop.h"

namespace lockstep::runtime {
namespace {

constexpr uint64_t kPollIntervalMs = 10;

[[noreturn]] void fail_errno(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

// One blocking connect attempt with a short timeout: does anything accept on `address`?
bool accepts_connections(const net::Address& address) {
  std::string error;
  std::optional<net::ResolvedAddress> resolved = net::resolve(address, error);
  if (!resolved) return false;
  int fd = socket(resolved->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  bool ok = false;
  if (connect(fd, reinterpret_cast<const sockaddr*>(&resolved->storage), resolved->length) == 0) {
    ok = true;
  } else if (errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    if (poll(&p, 1, 200) == 1) {
      int so_error = 0;
      socklen_t length = sizeof so_error;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &length);
      ok = so_error == 0;
    }
  }
  close(fd);
  return ok;
}

}  // namespace

std::vector<uint16_t> pick_free_ports(size_t count, const std::string& host) {
  std::vector<int> sockets;
  std::vector<uint16_t> ports;
  try {
    for (size_t i = 0; i < count; ++i) {
      int fd = net::listen_tcp(net::Address{host, 0}, 1);
      sockets.push_back(fd);
      ports.push_back(net::local_port(fd));
    }
  } catch (...) {
    for (int fd : sockets)
      close(fd);
    throw;
  }
  for (int fd : sockets)
    close(fd);
  return ports;
}

std::filesystem::path self_executable() {
  return std::filesystem::read_symlink("/proc/self/exe");
}

pid_t spawn_process(const std::vector<std::string>& argv, const std::filesystem::path& log_path) {
  if (argv.empty()) throw std::runtime_error("spawn_process: empty argv");
  // Everything the child needs is prepared before fork: between fork and exec only
  // async-signal-safe calls are allowed.
  std::vector<char*> args;
  for (const std::string& arg : argv)
    args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) fail_errno("cannot open " + log_path.string());
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) {
    close(log_fd);
    fail_errno("cannot open /dev/null");
  }
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    close(log_fd);
    close(null_fd);
    fail_errno("fork");
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    // The parent may have died between fork and prctl: then nobody would kill us later.
    if (getppid() != parent) _exit(127);
    setpgid(0, 0);
    sigset_t empty;
    sigemptyset(&empty);
    sigprocmask(SIG_SETMASK, &empty, nullptr);
    dup2(null_fd, STDIN_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    execv(args[0], args.data());
    const char message[] = "spawn_process: exec failed\n";
    [[maybe_unused]] ssize_t n = write(STDERR_FILENO, message, sizeof message - 1);
    _exit(127);
  }
  close(log_fd);
  close(null_fd);
  return pid;
}

std::optional<int> wait_process(pid_t pid, uint64_t timeout_ms) {
  const uint64_t deadline = net::monotonic_now_ns() + timeout_ms * 1'000'000;
  for (;;) {
    int status = 0;
    pid_t rc = waitpid(pid, &status, WNOHANG);
    if (rc == pid) return status;
    if (rc < 0 && errno != EINTR) return std::nullopt;  // not our child (already reaped)
    if (net::monotonic_now_ns() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(kPollIntervalMs));
  }
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  }
  return "wait status " + std::to_string(status);
}

LocalCluster::LocalCluster(LocalClusterOptions options) : options_(std::move(options)) {
  const bool byzantine = options_.mode == Mode::kByzantine;
  if (options_.replicas == 0) throw std::runtime_error("a cluster needs at least one replica");
  if (byzantine && (options_.replicas < 3 || options_.replicas % 2 == 0)) {
    throw std::runtime_error("byzantine mode needs 2t+1 replicas with t >= 1 (3, 5, ...), got " +
                             std::to_string(options_.replicas));
  }
  const uint32_t t = byzantine ? (options_.replicas - 1) / 2 : options_.replicas - 1;
  if (t > kFaultsTolerableMax) {
    throw std::runtime_error(
        "at most " +
        std::to_string(ClusterConfig::replicas_needed(options_.mode, kFaultsTolerableMax)) +
        " replicas in " + std::string(mode_name(options_.mode)) + " mode");
  }
  const uint32_t listed = options_.replicas + options_.spares;
  if (options_.binary.empty()) options_.binary = self_executable();
  std::filesystem::create_directories(options_.dir);
  std::vector<uint16_t> ports;
  if (options_.base_port == 0) {
    ports = pick_free_ports(listed);
  } else {
    if (uint32_t{options_.base_port} + listed - 1 > 65535) {
      throw std::runtime_error("base port " + std::to_string(options_.base_port) + " + " +
                               std::to_string(listed) + " replicas exceeds 65535");
    }
    for (uint32_t i = 0; i < listed; ++i) {
      ports.push_back(static_cast<uint16_t>(options_.base_port + i));
    }
  }
  config_.mode = options_.mode;
  config_.t = t;
  for (uint32_t i = 0; i < listed; ++i) {
    const bool member = i < options_.replicas;
    config_.replicas.push_back(
        ReplicaConfig{ReplicaId{i}, net::Address{"127.0.0.1", ports[i]}, std::nullopt, member});
  }
  config_.timeouts = options_.timeouts;
  config_.client = options_.client;
  config_.storage = options_.storage;
  if (config_.storage.enabled()) {
    std::filesystem::path data_dir(config_.storage.data_dir);
    if (data_dir.is_relative()) data_dir = options_.dir / data_dir;
    config_.storage.data_dir = std::filesystem::absolute(data_dir).lexically_normal().string();
  }
  std::optional<crypto::KeyPair> client_keys;
  if (byzantine) {
    config_.byzantine = options_.byzantine;
    // Fresh keys per cluster: a key file from an earlier run in the same directory is replaced,
    // never trusted.
    for (ReplicaConfig& replica : config_.replicas) {
      const crypto::KeyPair keys = crypto::generate_key_pair();
      crypto::write_key_file(key_path(replica.id).string(), keys);
      replica.public_key = keys.public_key;
    }
    client_keys = crypto::generate_key_pair();
    crypto::write_key_file(client_key_path().string(), *client_keys);
    config_.clients.push_back(
        ClientPrincipalConfig{kLocalClusterPrincipal, client_keys->public_key});
    if (options_.administrator && !config_.storage.durable()) {
      const crypto::KeyPair admin = crypto::generate_key_pair();
      crypto::write_key_file(admin_key_path().string(), admin);
      config_.byzantine->admin_public_key = admin.public_key;
    }
  }
  config_path_ = options_.dir / "cluster.toml";
  validate_config(config_, config_path_.string());
  write_config(config_path_, config_);
  if (client_keys) {
    credentials_ = client_credentials(config_, *client_keys, kLocalClusterPrincipal,
                                      client_key_path().string());
  }
  replicas_.resize(listed);
}

std::filesystem::path LocalCluster::key_path(ReplicaId id) const {
  return options_.dir / ("replica-" + std::to_string(id.value) + ".key");
}

std::filesystem::path LocalCluster::admin_key_path() const {
  return options_.dir / "admin.key";
}

std::filesystem::path LocalCluster::client_key_path() const {
  return options_.dir / ("client-" + std::to_string(kLocalClusterPrincipal) + ".key");
}

LocalCluster::~LocalCluster() {
  for (uint32_t i = 0; i < replicas_.size(); ++i)
    kill(ReplicaId{i});
}

std::filesystem::path LocalCluster::log_path(ReplicaId id) const {
  return options_.dir / ("replica-" + std::to_string(id.value) + ".log");
}

void LocalCluster::start_all() {
  for (uint32_t i = 0; i < replicas_.size(); ++i) {
    if (!running(ReplicaId{i})) start(ReplicaId{i});
  }
}

void LocalCluster::start_members() {
  for (uint32_t i = 0; i < replicas_.size(); ++i) {
    if (!is_spare(ReplicaId{i}) && !running(ReplicaId{i})) start(ReplicaId{i});
  }
}

void LocalCluster::start_joining(ReplicaId id) {
  start(id, Misbehaviour::kNone, /*join=*/true);
}

void LocalCluster::wipe(ReplicaId id) {
  if (running(id)) {
    throw std::runtime_error("cannot wipe replica " + std::to_string(id.value) +
                             "'s data directory while it runs");
  }
  const std::filesystem::path data = data_path(id);
  if (!data.empty()) std::filesystem::remove_all(data);
}

void LocalCluster::start(ReplicaId id) {
  auto misbehave = options_.misbehave.find(id.value);
  // A spare asks to be added from the start (it would anyway: it is not in view 0).
  start(id, misbehave == options_.misbehave.end() ? Misbehaviour::kNone : misbehave->second,
        is_spare(id));
}

void LocalCluster::start(ReplicaId id, Misbehaviour misbehave) {
  start(id, misbehave, is_spare(id));
}

void LocalCluster::start(ReplicaId id, Misbehaviour misbehave, bool join) {
  Child& child = replicas_.at(id.value);
  if (running(id)) throw std::runtime_error("replica " + std::to_string(id.value) + " is running");
  std::vector<std::string> argv = {
      options_.binary.string(), "replica",     "--config",        config_path_.string(), "--id",
      std::to_string(id.value), "--log-level", options_.log_level};
  if (config_.mode == Mode::kByzantine) {
    argv.insert(argv.end(), {"--key", key_path(id).string()});
  }
  if (misbehave != Misbehaviour::kNone) {
    argv.insert(argv.end(), {"--misbehave", std::string(misbehaviour_name(misbehave))});
  }
  if (join) argv.push_back("--join");
  child.pid = spawn_process(argv, log_path(id));
  child.last_status.reset();
}

bool LocalCluster::running(ReplicaId id) {
  Child& child = replicas_.at(id.value);
  if (child.pid <= 0) return false;
  int status = 0;
  pid_t rc = waitpid(child.pid, &status, WNOHANG);
  if (rc == 0) return true;
  if (rc == child.pid) child.last_status = status;
  child.pid = -1;
  return false;
}

void LocalCluster::signal(ReplicaId id, int signal_number) {
  if (running(id)) ::kill(replicas_[id.value].pid, signal_number);
}

void LocalCluster::kill(ReplicaId id) {
  if (!running(id)) return;
  Child& child = replicas_[id.value];
  ::kill(child.pid, SIGKILL);
  int status = 0;
  while (waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
  }
  child.last_status = status;
  child.pid = -1;
}

void LocalCluster::restart(ReplicaId id) {
  kill(id);
  start(id);
}

std::filesystem::path LocalCluster::data_path(ReplicaId id) const {
  if (!config_.storage.enabled()) return {};
  return config_.storage.replica_dir(id);
}

std::optional<int> LocalCluster::wait(ReplicaId id, uint64_t timeout_ms) {
  Child& child = replicas_.at(id.value);
  if (child.pid <= 0) return child.last_status;
  std::optional<int> status = wait_process(child.pid, timeout_ms);
  if (status) {
    child.last_status = status;
    child.pid = -1;
  }
  return status;
}

std::vector<std::optional<int>> LocalCluster::stop_all(uint64_t grace_ms) {
  std::vector<std::optional<int>> statuses(replicas_.size());
  std::vector<bool> was_running(replicas_.size());
  for (uint32_t i = 0; i < replicas_.size(); ++i) {
    was_running[i] = running(ReplicaId{i});
    if (was_running[i]) ::kill(replicas_[i].pid, SIGTERM);
  }
  const uint64_t deadline = net::monotonic_now_ns() + grace_ms * 1'000'000;
  for (uint32_t i = 0; i < replicas_.size(); ++i) {
    if (!was_running[i]) continue;
    const uint64_t now = net::monotonic_now_ns();
    const uint64_t left_ms = now >= deadline ? 0 : (deadline - now) / 1'000'000;
    if (!wait(ReplicaId{i}, left_ms)) kill(ReplicaId{i});
    statuses[i] = replicas_[i].last_status;
  }
  return statuses;
}

void LocalCluster::wait_until_listening(uint64_t timeout_ms) {
  const uint64_t deadline = net::monotonic_now_ns() + timeout_ms * 1'000'000;
  for (uint32_t i = 0; i < replicas_.size(); ++i) {
    const ReplicaId id{i};
    if (replicas_[i].pid <= 0) continue;  // not started: nothing to wait for
    while (!accepts_connections(config_.replicas[i].address)) {
      if (!running(id)) {
        throw std::runtime_error("replica " + std::to_string(i) + " " +
                                 describe_wait_status(replicas_[i].last_status.value_or(0)) +
                                 " before listening; its log ends with:\n" + log_tail(id));
      }
      if (net::monotonic_now_ns() >= deadline) {
        throw std::runtime_error("replica " + std::to_string(i) + " is not listening on " +
                                 net::format_address(config_.replicas[i].address) + " after " +
                                 std::to_string(timeout_ms) + " ms; its log ends with:\n" +
                                 log_tail(id));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(kPollIntervalMs));
    }
  }
}

std::string LocalCluster::log_tail(ReplicaId id, size_t lines) const {
  std::ifstream in(log_path(id));
  std::deque<std::string> tail;
  std::string line;
  while (std::getline(in, line)) {
    tail.push_back(line);
    if (tail.size() > lines) tail.pop_front();
  }
  std::string text;
  for (const std::string& l : tail)
    text += "  " + l + "\n";
  return text;
}

NetworkClientOptions LocalCluster::client_options() const {
  return network_client_options(config_,
                                config_.mode == Mode::kByzantine ? &credentials_ : nullptr);
}

}  // namespace lockstep::runtime
