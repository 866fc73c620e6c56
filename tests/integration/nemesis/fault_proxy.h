// A fault-injecting TCP proxy for the nemesis test (tests/integration/nemesis_test.cc).
//
// Why a proxy and not the kernel: the test machine has no sch_netem ("Specified qdisc kind is
// unknown") and no modprobe, so `tc ... netem` cannot delay or drop packets. Every TCP path the
// test wants to disturb (replica <-> replica, client <-> replica) is routed through a listener of
// this proxy instead, and the proxy is where delay, loss and partitions happen:
//
//  - delay: every chunk read from one side waits a random time in [delay_ns_min, delay_ns_max]
//    before it is written to the other side. A chunk never overtakes the one before it, because
//    TCP is FIFO and lockstep's peer channels rely on it (a proxy that reordered bytes would be
//    corrupting streams, not delaying them).
//  - loss: TCP hides single lost packets behind retransmission, so what a lossy network looks
//    like to an application is a connection that breaks. The proxy resets every connection of a
//    link (RST to both ends, queued bytes dropped) at random intervals. lockstep's peer channels
//    then reconnect and resend what was not acknowledged (docs/DESIGN.md §7); clients retry.
//  - cut: a blackholed link for a while. Nothing is read or written on the link's connections,
//    new connections are accepted but not connected upstream, until the cut ends; then the bytes
//    flow again. That is what a routing blackhole shorter than TCP's retransmission give-up time
//    looks like to both ends: silence, then delivery.
//
// One epoll thread serves every link; the test thread only sets flags under the mutex and wakes
// it. Written directly on epoll rather than on lockstep's net::EventLoop so that the fault
// injector does not share code (or bugs) with the system under test.
#pragma once

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "net/address.h"
#include "net/event_loop.h"

namespace lockstep::nemesis {

struct LinkFaults {
  uint64_t delay_ns_min = 0;
  uint64_t delay_ns_max = 0;
  // Each connection of the link is reset after a random interval in [min, max]; 0 = never.
  uint64_t reset_interval_ns_min = 0;
  uint64_t reset_interval_ns_max = 0;
};

struct LinkStats {
  uint64_t connections = 0;        // accepted from the dialing side
  uint64_t bytes = 0;              // forwarded, both directions
  uint64_t resets = 0;             // connections the proxy reset (loss)
  uint64_t cuts = 0;               // cuts started
  uint64_t upstream_failures = 0;  // connections the upstream refused (e.g. a killed replica)
};

class FaultProxy {
 public:
  explicit FaultProxy(uint64_t seed) : random_(seed) {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epoll_fd_ < 0 || wake_fd_ < 0) throw std::runtime_error("fault proxy: epoll/eventfd");
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = kWakeTag;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &event);
  }

  ~FaultProxy() {
    stop();
    for (auto& [id, pipe] : pipes_)
      close_pipe_fds(pipe, /*reset=*/true);
    for (Link& link : links_)
      ::close(link.listen_fd);
    ::close(wake_fd_);
    ::close(epoll_fd_);
  }

  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  // A listener on `listen` (port 0 picks one; see address()) whose connections are forwarded to
  // `upstream`. Returns the link's index.
  size_t add_link(std::string name, const net::Address& listen, const net::Address& upstream,
                  LinkFaults faults) {
    std::string error;
    std::optional<net::ResolvedAddress> resolved = net::resolve(upstream, error);
    if (!resolved) throw std::runtime_error("fault proxy: " + error);
    const int fd = net::listen_tcp(listen, 128);
    std::lock_guard lock(mutex_);
    Link link;
    link.name = std::move(name);
    link.listen_fd = fd;
    link.address = net::Address{listen.host, net::local_port(fd)};
    link.upstream = *resolved;
    link.faults = faults;
    links_.push_back(std::move(link));
    const size_t index = links_.size() - 1;
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = (uint64_t{index} << 2) | kListenerTag;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event);
    return index;
  }

  net::Address address(size_t link) const {
    std::lock_guard lock(mutex_);
    return links_.at(link).address;
  }
  std::string name(size_t link) const {
    std::lock_guard lock(mutex_);
    return links_.at(link).name;
  }
  size_t link_count() const {
    std::lock_guard lock(mutex_);
    return links_.size();
  }
  LinkStats stats(size_t link) const {
    std::lock_guard lock(mutex_);
    return links_.at(link).stats;
  }

  void start() {
    if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
  }

  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake();
    if (thread_.joinable()) thread_.join();
  }

  // Blackholes the link for `duration_ns` from now (extends a cut in progress).
  void cut(size_t link, uint64_t duration_ns) {
    {
      std::lock_guard lock(mutex_);
      Link& l = links_.at(link);
      l.cut_until_ns = std::max(l.cut_until_ns, net::monotonic_now_ns() + duration_ns);
      ++l.stats.cuts;
    }
    wake();
  }

  // Resets every connection of the link now.
  void reset(size_t link) {
    {
      std::lock_guard lock(mutex_);
      links_.at(link).reset_requested = true;
    }
    wake();
  }

  void set_faults(size_t link, LinkFaults faults) {
    {
      std::lock_guard lock(mutex_);
      links_.at(link).faults = faults;
      for (auto& [id, pipe] : pipes_) {
        if (pipe.link == link) pipe.reset_at_ns = reset_time(faults, net::monotonic_now_ns());
      }
    }
    wake();
  }

 private:
  static constexpr uint64_t kListenerTag = 2;
  static constexpr uint64_t kWakeTag = 3;
  static constexpr size_t kReadBytes = 64 * 1024;
  // Past this many queued bytes in one direction the proxy stops reading that side, so a slow or
  // stopped receiver pushes back on the sender through TCP instead of growing memory.
  static constexpr size_t kQueuedBytesMax = 4 * 1024 * 1024;
  static constexpr int kIdleWaitMs = 50;

  struct Link {
    std::string name;
    int listen_fd = -1;
    net::Address address;
    net::ResolvedAddress upstream;
    LinkFaults faults;
    uint64_t cut_until_ns = 0;
    bool reset_requested = false;
    LinkStats stats;
  };
  struct Chunk {
    uint64_t due_ns;
    std::string bytes;
    size_t offset = 0;
  };
  // Bytes read from fd[side] on their way to fd[1 - side].
  struct Direction {
    std::deque<Chunk> queue;
    size_t queued_bytes = 0;
    uint64_t last_due_ns = 0;
    bool eof = false;      // fd[side] was shut down by its peer
    bool shut = false;     // and that was passed on (shutdown of fd[1 - side])
    bool blocked = false;  // the last write to fd[1 - side] would have blocked
  };
  // One proxied connection: fd[0] accepted from the dialing side, fd[1] to the upstream.
  struct Pipe {
    size_t link = 0;
    int fd[2] = {-1, -1};
    bool connect_started = false;
    bool connected = false;
    uint32_t registered[2] = {0, 0};  // the epoll interest currently set per fd (0 = none)
    Direction direction[2];
    uint64_t reset_at_ns = 0;  // 0 = never
    bool dead = false;
  };

  void wake() {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
  }

  uint64_t uniform(uint64_t low, uint64_t high) {
    if (high <= low) return low;
    return std::uniform_int_distribution<uint64_t>(low, high)(random_);
  }

  uint64_t reset_time(const LinkFaults& faults, uint64_t now_ns) {
    if (faults.reset_interval_ns_max == 0) return 0;
    return now_ns + uniform(faults.reset_interval_ns_min, faults.reset_interval_ns_max);
  }

  bool is_cut(const Link& link, uint64_t now_ns) const { return now_ns < link.cut_until_ns; }

  void run() {
    std::vector<epoll_event> events(64);
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      const int timeout_ms = next_timeout_ms(net::monotonic_now_ns());
      lock.unlock();
      const int n =
          epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), timeout_ms);
      lock.lock();
      if (stopping_) break;
      const uint64_t now_ns = net::monotonic_now_ns();
      for (int i = 0; i < n; ++i)
        dispatch(events[i], now_ns);
      on_timers(now_ns);
      for (auto& [id, pipe] : pipes_)
        pump(id, pipe, now_ns);
      std::erase_if(pipes_, [](const auto& entry) { return entry.second.dead; });
    }
  }

  int next_timeout_ms(uint64_t now_ns) const {
    uint64_t next = now_ns + uint64_t{kIdleWaitMs} * 1'000'000;
    for (const Link& link : links_) {
      if (is_cut(link, now_ns)) next = std::min(next, link.cut_until_ns);
      if (link.reset_requested) next = now_ns;
    }
    for (const auto& [id, pipe] : pipes_) {
      if (pipe.reset_at_ns != 0) next = std::min(next, pipe.reset_at_ns);
      // A direction that cannot be written now (not connected yet, cut, or the receiver's buffer
      // full) waits for epoll or for the cut to end, not for its due time: that would spin.
      if (!pipe.connected || is_cut(links_[pipe.link], now_ns)) continue;
      for (const Direction& d : pipe.direction) {
        if (!d.queue.empty() && !d.blocked) next = std::min(next, d.queue.front().due_ns);
      }
    }
    if (next <= now_ns) return 0;
    return static_cast<int>((next - now_ns + 999'999) / 1'000'000);  // round up: never early
  }

  void dispatch(const epoll_event& event, uint64_t now_ns) {
    const uint64_t tag = event.data.u64 & 3;
    const uint64_t id = event.data.u64 >> 2;
    if (tag == kWakeTag) {
      uint64_t value;
      [[maybe_unused]] ssize_t n = ::read(wake_fd_, &value, sizeof value);
      return;
    }
    if (tag == kListenerTag) {
      accept_all(id, now_ns);
      return;
    }
    auto it = pipes_.find(id);
    if (it == pipes_.end() || it->second.dead) return;  // closed earlier in this batch
    Pipe& pipe = it->second;
    const int side = static_cast<int>(tag);
    if (side == 1 && !pipe.connected) {
      int error = 0;
      socklen_t length = sizeof error;
      getsockopt(pipe.fd[1], SOL_SOCKET, SO_ERROR, &error, &length);
      if (error != 0) {
        ++links_[pipe.link].stats.upstream_failures;
        close_pipe(pipe, /*reset=*/true);  // the dialer sees its connection drop and redials
        return;
      }
      pipe.connected = true;
      return;
    }
    if (event.events & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_side(pipe, side, now_ns);
    if (event.events & EPOLLOUT) pipe.direction[1 - side].blocked = false;
  }

  void accept_all(size_t link, uint64_t now_ns) {
    for (;;) {
      const int fd =
          accept4(links_[link].listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;  // EAGAIN, or a connection that died in the backlog
      net::set_tcp_nodelay(fd);
      const uint64_t id = next_pipe_id_++;
      Pipe& pipe = pipes_[id];
      pipe.link = link;
      pipe.fd[0] = fd;
      pipe.reset_at_ns = reset_time(links_[link].faults, now_ns);
      ++links_[link].stats.connections;
    }
  }

  void start_connect(Pipe& pipe) {
    const Link& link = links_[pipe.link];
    pipe.connect_started = true;
    const int fd = socket(link.upstream.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      close_pipe(pipe, /*reset=*/true);
      return;
    }
    net::set_tcp_nodelay(fd);
    pipe.fd[1] = fd;
    if (connect(fd, reinterpret_cast<const sockaddr*>(&link.upstream.storage),
                link.upstream.length) == 0) {
      pipe.connected = true;
    } else if (errno != EINPROGRESS) {
      ++links_[pipe.link].stats.upstream_failures;
      close_pipe(pipe, /*reset=*/true);
    }
  }

  void read_side(Pipe& pipe, int side, uint64_t now_ns) {
    Link& link = links_[pipe.link];
    Direction& d = pipe.direction[side];
    if (is_cut(link, now_ns) || d.eof || !readable_wanted(pipe, side, now_ns)) return;
    std::string buffer(kReadBytes, '\0');
    const ssize_t n = ::read(pipe.fd[side], buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      close_pipe(pipe, /*reset=*/true);  // ECONNRESET: pass the reset on
      return;
    }
    if (n == 0) {
      d.eof = true;
      return;
    }
    buffer.resize(static_cast<size_t>(n));
    const uint64_t due = std::max(
        d.last_due_ns, now_ns + uniform(link.faults.delay_ns_min, link.faults.delay_ns_max));
    d.last_due_ns = due;
    d.queued_bytes += buffer.size();
    d.queue.push_back(Chunk{due, std::move(buffer)});
  }

  bool readable_wanted(const Pipe& pipe, int side, uint64_t now_ns) const {
    if (side == 1 && !pipe.connected) return false;
    const Direction& d = pipe.direction[side];
    return !d.eof && d.queued_bytes < kQueuedBytesMax && !is_cut(links_[pipe.link], now_ns);
  }

  void on_timers(uint64_t now_ns) {
    for (size_t l = 0; l < links_.size(); ++l) {
      Link& link = links_[l];
      if (!link.reset_requested) continue;
      link.reset_requested = false;
      for (auto& [id, pipe] : pipes_) {
        if (pipe.link == l && !pipe.dead) reset_pipe(pipe);
      }
    }
    for (auto& [id, pipe] : pipes_) {
      if (!pipe.dead && pipe.reset_at_ns != 0 && now_ns >= pipe.reset_at_ns) reset_pipe(pipe);
    }
  }

  void reset_pipe(Pipe& pipe) {
    ++links_[pipe.link].stats.resets;
    close_pipe(pipe, /*reset=*/true);
  }

  // Writes what is due, passes shutdowns on, and sets the epoll interest to what the pipe now
  // waits for.
  void pump(uint64_t id, Pipe& pipe, uint64_t now_ns) {
    if (pipe.dead) return;
    Link& link = links_[pipe.link];
    const bool cut = is_cut(link, now_ns);
    if (!pipe.connect_started && !cut) start_connect(pipe);
    if (pipe.dead) return;
    for (int side = 0; side < 2 && pipe.connected && !cut; ++side) {
      Direction& d = pipe.direction[side];
      const int to = pipe.fd[1 - side];
      while (!d.queue.empty() && d.queue.front().due_ns <= now_ns) {
        Chunk& chunk = d.queue.front();
        const ssize_t n = ::send(to, chunk.bytes.data() + chunk.offset,
                                 chunk.bytes.size() - chunk.offset, MSG_NOSIGNAL);
        if (n < 0) {
          if (errno == EAGAIN || errno == EINTR) {
            d.blocked = true;
            break;
          }
          close_pipe(pipe, /*reset=*/true);
          return;
        }
        link.stats.bytes += static_cast<uint64_t>(n);
        chunk.offset += static_cast<size_t>(n);
        if (chunk.offset == chunk.bytes.size()) {
          d.queued_bytes -= chunk.bytes.size();
          d.queue.pop_front();
        }
      }
      if (d.eof && d.queue.empty() && !d.shut) {
        ::shutdown(to, SHUT_WR);
        d.shut = true;
      }
    }
    if (pipe.direction[0].shut && pipe.direction[1].shut) {
      close_pipe(pipe, /*reset=*/false);
      return;
    }
    for (int side = 0; side < 2; ++side) {
      if (pipe.fd[side] < 0) continue;
      uint32_t interest = 0;
      if (readable_wanted(pipe, side, now_ns)) interest |= EPOLLIN;
      // fd[side] is written with what was read from the other side.
      const Direction& incoming = pipe.direction[1 - side];
      if (side == 1 && pipe.connect_started && !pipe.connected) interest |= EPOLLOUT;
      if (!cut && pipe.connected && incoming.blocked && !incoming.queue.empty()) {
        interest |= EPOLLOUT;
      }
      set_interest(id, pipe, side, interest);
    }
  }

  // Interest 0 removes the fd from epoll altogether: epoll reports EPOLLHUP and EPOLLERR even
  // when nobody asked, which during a cut would spin this thread.
  void set_interest(uint64_t id, Pipe& pipe, int side, uint32_t interest) {
    if (pipe.registered[side] == interest) return;
    epoll_event event{};
    event.events = interest;
    event.data.u64 = (id << 2) | static_cast<uint64_t>(side);
    if (interest == 0) {
      epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, pipe.fd[side], nullptr);
    } else {
      epoll_ctl(epoll_fd_, pipe.registered[side] == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD,
                pipe.fd[side], &event);
    }
    pipe.registered[side] = interest;
  }

  // reset: SO_LINGER 0 makes close() send an RST, so both ends see the connection break now
  // (ECONNRESET) rather than a tidy end of stream.
  static void close_pipe_fds(Pipe& pipe, bool reset) {
    for (int& fd : pipe.fd) {
      if (fd < 0) continue;
      if (reset) {
        linger option{1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, sizeof option);
      }
      ::close(fd);  // also leaves the epoll set
      fd = -1;
    }
  }

  void close_pipe(Pipe& pipe, bool reset) {
    close_pipe_fds(pipe, reset);
    pipe.registered[0] = pipe.registered[1] = 0;
    pipe.dead = true;
  }

  mutable std::mutex mutex_;
  std::vector<Link> links_;
  std::map<uint64_t, Pipe> pipes_;
  uint64_t next_pipe_id_ = 1;
  std::mt19937_64 random_;
  bool stopping_ = false;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::thread thread_;
};

}  // namespace lockstep::nemesis
