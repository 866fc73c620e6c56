#include "net/event_loop.h"

#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>

namespace lockstep::net {
namespace {

// epoll_wait returns at most this many events per call; more stay ready for the next iteration.
constexpr size_t kEventsPerIterationMax = 256;
// A flush can close a connection, whose owner may then write elsewhere: a few passes settle it.
constexpr int kFlushPassesMax = 8;

uint64_t clock_ns(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

[[noreturn]] void fail_errno(const char* what) {
  throw std::runtime_error(std::string(what) + ": " + std::strerror(errno));
}

}  // namespace

uint64_t monotonic_now_ns() {
  return clock_ns(CLOCK_MONOTONIC);
}
uint64_t wall_now_us() {
  return clock_ns(CLOCK_REALTIME) / 1000;
}

// The eventfd that post() and stop() write to, so a sleeping epoll_wait wakes up.
class EventLoop::Wakeup final : public IoHandler {
 public:
  Wakeup() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (fd_ < 0) fail_errno("eventfd");
  }
  ~Wakeup() { ::close(fd_); }
  int fd() const { return fd_; }
  void notify() {
    uint64_t one = 1;
    // EAGAIN means the counter is already nonzero: the loop is going to wake anyway.
    [[maybe_unused]] ssize_t n = ::write(fd_, &one, sizeof one);
  }
  void on_io(uint32_t /*events*/) override {
    uint64_t value = 0;
    [[maybe_unused]] ssize_t n = ::read(fd_, &value, sizeof value);
  }

 private:
  int fd_;
};

// Signals delivered through a signalfd, so handlers run on the loop thread like everything else
// (no async-signal-safety constraints on what they do).
class EventLoop::Signals final : public IoHandler {
 public:
  explicit Signals(EventLoop& loop) : loop_(loop) { sigemptyset(&mask_); }
  ~Signals() {
    if (fd_ >= 0) {
      loop_.remove_fd(fd_);
      ::close(fd_);
    }
  }
  void watch(int signal_number, std::function<void()> callback) {
    callbacks_[signal_number] = std::move(callback);
    sigaddset(&mask_, signal_number);
    if (pthread_sigmask(SIG_BLOCK, &mask_, nullptr) != 0) fail_errno("pthread_sigmask");
    bool first = fd_ < 0;
    fd_ = signalfd(fd_, &mask_, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd_ < 0) fail_errno("signalfd");
    if (first) loop_.add_fd(fd_, EPOLLIN, this);
  }
  void on_io(uint32_t /*events*/) override {
    signalfd_siginfo info{};
    while (::read(fd_, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
      auto it = callbacks_.find(static_cast<int>(info.ssi_signo));
      if (it != callbacks_.end()) it->second();
    }
  }

 private:
  EventLoop& loop_;
  int fd_ = -1;
  sigset_t mask_{};
  std::map<int, std::function<void()>> callbacks_;
};

EventLoop::EventLoop() : events_(kEventsPerIterationMax) {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) fail_errno("epoll_create1");
  wakeup_ = std::make_unique<Wakeup>();
  add_fd(wakeup_->fd(), EPOLLIN, wakeup_.get());
  now_ns_ = monotonic_now_ns();
}

EventLoop::~EventLoop() {
  // Retired objects may unregister themselves from the loop while they are destroyed.
  graveyard_.clear();
  signals_.reset();
  remove_fd(wakeup_->fd());
  wakeup_.reset();
  ::close(epoll_fd_);
}

void EventLoop::run() {
  stop_requested_.store(false, std::memory_order_relaxed);
  // A stop() that raced with the start of run() is not lost: post() wakes us and we re-check.
  while (!stop_requested_.load(std::memory_order_acquire))
    run_iteration();
}

void EventLoop::stop() {
  stop_requested_.store(true, std::memory_order_release);
  wakeup_->notify();
}

void EventLoop::post(std::function<void()> task) {
  {
    std::lock_guard lock(posted_mutex_);
    posted_.push_back(std::move(task));
  }
  posted_pending_.store(true, std::memory_order_release);
  wakeup_->notify();
}

void EventLoop::add_fd(int fd, uint32_t events, IoHandler* handler) {
  epoll_event event{};
  event.events = events;
  event.data.ptr = handler;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event) != 0) fail_errno("epoll_ctl(ADD)");
}

void EventLoop::modify_fd(int fd, uint32_t events, IoHandler* handler) {
  epoll_event event{};
  event.events = events;
  event.data.ptr = handler;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &event) != 0) fail_errno("epoll_ctl(MOD)");
}

void EventLoop::remove_fd(int fd) {
  // ENOENT/EBADF: already gone, which is what the caller wants.
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
}

EventLoop::TimerId EventLoop::schedule(uint64_t delay_ns, std::function<void()> callback) {
  TimerId id = next_timer_id_++;
  timers_.emplace(id, Timer{std::move(callback), 0});
  timer_heap_.push(TimerEntry{monotonic_now_ns() + delay_ns, id});
  return id;
}

EventLoop::TimerId EventLoop::schedule_every(uint64_t interval_ns, std::function<void()> callback) {
  TimerId id = next_timer_id_++;
  // A zero interval would make the loop spin on one timer forever.
  interval_ns = std::max<uint64_t>(interval_ns, 1);
  timers_.emplace(id, Timer{std::move(callback), interval_ns});
  timer_heap_.push(TimerEntry{monotonic_now_ns() + interval_ns, id});
  return id;
}

void EventLoop::cancel(TimerId id) {
  timers_.erase(id);
}

EventLoop::HookId EventLoop::add_iteration_hook(std::function<void()> hook) {
  HookId id = next_hook_id_++;
  hooks_.emplace_back(id, std::move(hook));
  return id;
}

void EventLoop::remove_iteration_hook(HookId id) {
  for (auto& [hook_id, hook] : hooks_) {
    // Cleared rather than erased: this may run from inside run_hooks' iteration.
    if (hook_id == id) hook = nullptr;
  }
}

void EventLoop::request_flush(Flushable* target) {
  if (target->flush_pending_) return;
  target->flush_pending_ = true;
  flush_queue_.push_back(target);
}

void EventLoop::cancel_flush(Flushable* target) {
  if (!target->flush_pending_) return;
  target->flush_pending_ = false;
  std::replace(flush_queue_.begin(), flush_queue_.end(), target, static_cast<Flushable*>(nullptr));
  std::replace(flushing_.begin(), flushing_.end(), target, static_cast<Flushable*>(nullptr));
}

void EventLoop::watch_signal(int signal_number, std::function<void()> callback) {
  if (!signals_) signals_ = std::make_unique<Signals>(*this);
  signals_->watch(signal_number, std::move(callback));
}

int EventLoop::next_timeout_ms() const {
  // Work that is already due must not wait for a file descriptor.
  if (posted_pending_.load(std::memory_order_acquire) || !flush_queue_.empty() ||
      !graveyard_.empty()) {
    return 0;
  }
  if (timer_heap_.empty()) return -1;
  uint64_t now = monotonic_now_ns();
  uint64_t deadline = timer_heap_.top().deadline_ns;
  if (deadline <= now) return 0;
  // Round up so a timer is never woken for early and then spun on.
  uint64_t ms = (deadline - now + 999'999) / 1'000'000;
  return static_cast<int>(std::min<uint64_t>(ms, std::numeric_limits<int>::max()));
}

void EventLoop::run_iteration() {
  int timeout_ms = next_timeout_ms();
  int ready = epoll_wait(epoll_fd_, events_.data(), static_cast<int>(events_.size()), timeout_ms);
  if (ready < 0 && errno != EINTR) fail_errno("epoll_wait");
  ++iterations_;
  now_ns_ = monotonic_now_ns();
  for (int i = 0; i < ready; ++i) {
    static_cast<IoHandler*>(events_[i].data.ptr)->on_io(events_[i].events);
  }
  run_timers();
  run_posted();
  run_hooks();
  run_flushes();
  graveyard_.clear();
}

void EventLoop::run_timers() {
  uint64_t now = monotonic_now_ns();
  while (!timer_heap_.empty() && timer_heap_.top().deadline_ns <= now) {
    TimerEntry entry = timer_heap_.top();
    timer_heap_.pop();
    auto it = timers_.find(entry.id);
    if (it == timers_.end()) continue;  // cancelled
    if (it->second.interval_ns == 0) {
      std::function<void()> callback = std::move(it->second.callback);
      timers_.erase(it);
      callback();
    } else {
      // Re-armed from the planned deadline, not from now, so a periodic timer does not drift;
      // but never into the past, so a long stall does not cause a burst of catch-up calls.
      uint64_t next = std::max(entry.deadline_ns + it->second.interval_ns, now + 1);
      timer_heap_.push(TimerEntry{next, entry.id});
      // Copied: the callback may cancel its own timer, which destroys the stored function.
      std::function<void()> callback = it->second.callback;
      callback();
    }
  }
}

void EventLoop::run_posted() {
  if (!posted_pending_.exchange(false, std::memory_order_acq_rel)) return;
  {
    std::lock_guard lock(posted_mutex_);
    running_posted_.swap(posted_);
  }
  for (auto& task : running_posted_)
    task();
  running_posted_.clear();
}

void EventLoop::run_hooks() {
  // Index-based: a hook may add another hook (which then runs in this iteration too).
  for (size_t i = 0; i < hooks_.size(); ++i) {
    if (hooks_[i].second) {
      // Copied so that a hook removing itself does not destroy the function it is running in.
      std::function<void()> hook = hooks_[i].second;
      hook();
    }
  }
  std::erase_if(hooks_, [](const auto& entry) { return !entry.second; });
}

void EventLoop::run_flushes() {
  for (int pass = 0; pass < kFlushPassesMax && !flush_queue_.empty(); ++pass) {
    flushing_.swap(flush_queue_);
    for (size_t i = 0; i < flushing_.size(); ++i) {
      Flushable* target = flushing_[i];
      if (target == nullptr) continue;
      target->flush_pending_ = false;
      target->flush();
    }
    flushing_.clear();
  }
}

}  // namespace lockstep::net
