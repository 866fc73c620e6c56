// Where the replicas of the nemesis test run (tests/integration/nemesis_test.cc): each in a
// network namespace of its own, or, where the machine does not allow that, all on loopback.
//
// Namespace layout, for replica i of a run with subnet 10.77.K.0/24 (K chosen free):
//
//   host namespace                               namespace lsnem-<pid>-<i>
//   lsnem<pid>h<i>  10.77.K.(4i+1)/30  <-veth->  veth0  10.77.K.(4i+2)/30, replica i on :7000
//
// Each namespace has only the connected route of its /30 and no default route, so replica i can
// reach nothing but the host end of its own veth. That is where the test's fault proxy listens
// for the connections replica i dials; the proxy (in the host namespace, which has a route to
// every /30) forwards them to the other replica's namespace. So every replica <-> replica byte
// crosses the proxy, and the isolation is checked (check_isolation), not assumed.
//
// Names carry the test process's pid so that concurrent runs do not collide, and so that a run
// can recognise and remove what an earlier, killed run left behind (remove_stale).
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "net/address.h"
#include "runtime/local_cluster.h"

namespace lockstep::nemesis {

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs `command_line` through sh (every argument the test builds is a plain name or number).
inline CommandResult run_command(const std::string& command_line) {
  CommandResult result;
  FILE* pipe = ::popen((command_line + " 2>&1").c_str(), "r");
  if (pipe == nullptr) {
    result.output = "popen failed: " + std::string(std::strerror(errno));
    return result;
  }
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    result.output.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  while (!result.output.empty() && result.output.back() == '\n')
    result.output.pop_back();
  return result;
}

// The first of `names` that exists, or "".
inline std::string find_program(const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    if (::access(name.c_str(), X_OK) == 0) return name;
  }
  return "";
}

class TestNetwork {
 public:
  static constexpr uint16_t kReplicaPort = 7000;  // each namespace has its own port space
  static constexpr const char* kPrefix = "lsnem";

  // Sets up namespaces for `replicas` replicas, or loopback when `force_loopback` says why
  // namespaces must not be used, or when setting them up fails (fallback_reason() says why).
  TestNetwork(uint32_t replicas, const std::string& force_loopback) : replicas_(replicas) {
    if (!force_loopback.empty()) {
      use_loopback(force_loopback);
      return;
    }
    std::string why = try_namespaces();
    if (!why.empty()) {
      teardown();
      use_loopback(why);
    }
  }

  ~TestNetwork() { teardown(); }
  TestNetwork(const TestNetwork&) = delete;
  TestNetwork& operator=(const TestNetwork&) = delete;

  bool namespaces() const { return fallback_reason_.empty(); }
  const std::string& fallback_reason() const { return fallback_reason_; }
  const std::string& netem() const { return netem_; }
  // Namespaces and links of earlier runs that died without cleaning up, removed at start.
  const std::vector<std::string>& removed_stale() const { return removed_stale_; }

  std::string describe() const {
    if (!namespaces()) {
      return "loopback (127.0.0.1) with the fault-injecting TCP proxy; network namespaces not "
             "used: " +
             fallback_reason_;
    }
    std::ostringstream out;
    out << replicas_ << " network namespaces (";
    for (uint32_t i = 0; i < replicas_; ++i) {
      out << (i ? ", " : "") << namespace_name(i) << " " << replica_address(i).host;
    }
    out << "), veth pairs to the host, no routes between namespaces; every replica<->replica and "
           "client<->replica path through the fault-injecting TCP proxy in the host namespace";
    return out.str();
  }

  // Where replica i listens (inside its namespace in namespace mode).
  net::Address replica_address(uint32_t i) const {
    if (!namespaces()) return net::Address{"127.0.0.1", loopback_ports_.at(i)};
    return net::Address{subnet_ + std::to_string(4 * i + 2), kReplicaPort};
  }
  // The host's address facing replica i: the only address replica i can reach, so the proxy
  // listens there for every connection replica i dials.
  std::string host_side(uint32_t i) const {
    return namespaces() ? subnet_ + std::to_string(4 * i + 1) : "127.0.0.1";
  }
  // The command prefix that runs a program inside replica i's namespace ({} on loopback).
  std::vector<std::string> exec_prefix(uint32_t i) const {
    if (!namespaces()) return {};
    return {ip_, "netns", "exec", namespace_name(i)};
  }
  std::string namespace_name(uint32_t i) const {
    return std::string(kPrefix) + "-" + std::to_string(::getpid()) + "-" + std::to_string(i);
  }

  // Namespace mode: empty when no namespace has a route to another replica's address, else what
  // is wrong. (A routed path around the proxy would make the injected faults meaningless.)
  std::string check_isolation() const {
    if (!namespaces()) return "";
    std::string problems;
    for (uint32_t i = 0; i < replicas_; ++i) {
      for (uint32_t j = 0; j < replicas_; ++j) {
        if (i == j) continue;
        const CommandResult route =
            run_command(ip_ + " -n " + namespace_name(i) + " route get " + replica_address(j).host);
        if (route.exit_code == 0) {
          problems += namespace_name(i) + " has a route to replica " + std::to_string(j) + ": " +
                      route.output + "\n";
        }
      }
    }
    return problems;
  }

  // Whether process `pid` runs in replica i's network namespace.
  bool runs_in_namespace(pid_t pid, uint32_t i) const {
    if (!namespaces()) return true;
    struct stat process {};
    struct stat named {};
    const std::string process_ns = "/proc/" + std::to_string(pid) + "/ns/net";
    const std::string named_ns = "/run/netns/" + namespace_name(i);
    if (::stat(process_ns.c_str(), &process) != 0 || ::stat(named_ns.c_str(), &named) != 0) {
      return false;
    }
    return process.st_dev == named.st_dev && process.st_ino == named.st_ino;
  }

 private:
  void use_loopback(const std::string& reason) {
    fallback_reason_ = reason;
    netem_ = "not tried (loopback: netem on lo would delay every process on the machine)";
    loopback_ports_ = runtime::pick_free_ports(replicas_);
  }

  std::string host_link(uint32_t i) const {
    return std::string(kPrefix) + std::to_string(::getpid()) + "h" + std::to_string(i);
  }

  // Empty on success, else why namespaces cannot be used here.
  std::string try_namespaces() {
    if (::geteuid() != 0) {
      return "not root (euid " + std::to_string(::geteuid()) +
             "): creating network namespaces needs CAP_SYS_ADMIN and CAP_NET_ADMIN";
    }
    ip_ = find_program({"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"});
    if (ip_.empty()) return "no `ip` command (iproute2 is not installed)";
    // Serialises subnet choice and creation with concurrent runs of this test.
    const int lock_fd = ::open("/tmp/lockstep-nemesis.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd >= 0) ::flock(lock_fd, LOCK_EX);
    std::string why = create_namespaces();
    if (lock_fd >= 0) ::close(lock_fd);  // releases the lock
    return why;
  }

  std::string create_namespaces() {
    remove_stale();
    const CommandResult addresses = run_command(ip_ + " -o -4 addr show");
    const uint32_t first = 16 + static_cast<uint32_t>(::getpid()) % 200;
    for (uint32_t k = 0; k < 256 && subnet_.empty(); ++k) {
      const std::string candidate = "10.77." + std::to_string((first + k) % 256) + ".";
      if (addresses.output.find(" " + candidate) == std::string::npos) subnet_ = candidate;
    }
    if (subnet_.empty()) return "no free 10.77.x.0/24 subnet on this host";
    for (uint32_t i = 0; i < replicas_; ++i) {
      const std::string ns = namespace_name(i);
      const std::string host = host_link(i);
      CommandResult added = run_command(ip_ + " netns add " + ns);
      if (added.exit_code != 0) return "`ip netns add " + ns + "` failed: " + added.output;
      created_namespaces_.push_back(ns);
      const std::vector<std::string> steps = {
          ip_ + " link add " + host + " type veth peer name veth0 netns " + ns,
          ip_ + " addr add " + host_side(i) + "/30 dev " + host,
          ip_ + " link set " + host + " up",
          ip_ + " -n " + ns + " addr add " + replica_address(i).host + "/30 dev veth0",
          ip_ + " -n " + ns + " link set veth0 up",
          ip_ + " -n " + ns + " link set lo up",
      };
      for (const std::string& step : steps) {
        const CommandResult result = run_command(step);
        if (step == steps.front() && result.exit_code == 0) created_links_.push_back(host);
        if (result.exit_code != 0) return "`" + step + "` failed: " + result.output;
      }
    }
    probe_netem();
    return "";
  }

  // Kernel delay and loss would be the most faithful, so they are used where they exist; the
  // proxy's own faults run either way (cuts and resets need it).
  void probe_netem() {
    const std::string tc = find_program({"/usr/sbin/tc", "/sbin/tc", "/usr/bin/tc", "/bin/tc"});
    if (tc.empty()) {
      netem_ = "unavailable: no `tc` command; delay and loss come from the proxy alone";
      return;
    }
    const std::string spec = "delay 2ms 1ms loss 0.5%";
    for (uint32_t i = 0; i < replicas_; ++i) {
      const CommandResult result =
          run_command(tc + " qdisc add dev " + host_link(i) + " root netem " + spec);
      if (result.exit_code != 0) {
        netem_ = "unavailable (`tc qdisc add ... netem`: " + result.output +
                 "); delay and loss come from the proxy alone";
        return;
      }
    }
    netem_ = "netem " + spec + " towards each namespace, in addition to the proxy's faults";
  }

  // Namespaces and host links whose creator is gone (or is this process: no instance of this
  // class is alive when a new one is made, the test creates them one at a time).
  void remove_stale() {
    auto stale = [](const std::string& pid_text) {
      if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos) {
        return false;
      }
      if (std::stol(pid_text) == ::getpid()) return true;
      // Gone, or a zombie: a killed run whose parent has not reaped it yet is just as dead.
      std::ifstream stat("/proc/" + pid_text + "/stat");
      std::string line;
      if (!std::getline(stat, line)) return true;
      const size_t end_of_name = line.rfind(')');
      return end_of_name + 2 < line.size() && line[end_of_name + 2] == 'Z';
    };
    std::istringstream namespaces(run_command(ip_ + " netns list").output);
    for (std::string line; std::getline(namespaces, line);) {
      const std::string name = line.substr(0, line.find(' '));
      const std::string prefix = std::string(kPrefix) + "-";
      if (name.rfind(prefix, 0) != 0) continue;
      const std::string rest = name.substr(prefix.size());
      if (!stale(rest.substr(0, rest.find('-')))) continue;
      delete_namespace(name);
      removed_stale_.push_back(name);
    }
    std::istringstream links(run_command(ip_ + " -o link show").output);
    for (std::string line; std::getline(links, line);) {
      // "7: lsnem1234h0@if2: <BROADCAST,..."
      const size_t start = line.find(": ");
      if (start == std::string::npos) continue;
      std::string name = line.substr(start + 2);
      name = name.substr(0, name.find_first_of("@:"));
      if (name.rfind(kPrefix, 0) != 0) continue;
      const std::string rest = name.substr(std::string(kPrefix).size());
      if (!stale(rest.substr(0, rest.find('h')))) continue;
      run_command(ip_ + " link del " + name);
      removed_stale_.push_back(name);
    }
  }

  // A namespace lives on while a process is inside it (and with it the veth), so whatever still
  // runs there is killed first.
  void delete_namespace(const std::string& name) {
    std::istringstream pids(run_command(ip_ + " netns pids " + name).output);
    for (std::string pid; pids >> pid;) {
      if (pid.find_first_not_of("0123456789") == std::string::npos) {
        ::kill(static_cast<pid_t>(std::stol(pid)), SIGKILL);
      }
    }
    run_command(ip_ + " netns del " + name);
  }

  void teardown() {
    for (const std::string& link : created_links_)
      run_command(ip_ + " link del " + link);
    for (const std::string& ns : created_namespaces_)
      delete_namespace(ns);
    created_links_.clear();
    created_namespaces_.clear();
  }

  uint32_t replicas_;
  std::string ip_;
  std::string subnet_;  // "10.77.K."
  std::string fallback_reason_;
  std::string netem_;
  std::vector<uint16_t> loopback_ports_;
  std::vector<std::string> created_namespaces_;
  std::vector<std::string> created_links_;
  std::vector<std::string> removed_stale_;
};

}  // namespace lockstep::nemesis
