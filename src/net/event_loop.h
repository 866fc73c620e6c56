// A single-threaded epoll event loop: file descriptors, timers (a min-heap), tasks posted from
// other threads, signals (signalfd), and two end-of-iteration stages that give the runtime its
// batching:
//
//   one iteration = epoll_wait
//                 -> ready file descriptors (reads: frames are decoded and handed on)
//                 -> expired timers
//                 -> posted tasks
//                 -> iteration hooks     (the replica calls take_output() once here)
//                 -> flushes             (each connection written with one write() call)
//                 -> disposal            (objects retired during the iteration are destroyed)
//
// Everything runs on the thread that calls run(); only post() and stop() may be called from
// other threads. No locks are taken in the message path.
#pragma once

#include <sys/epoll.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <queue>
#include <unordered_map>
#include <vector>

namespace lockstep::net {

// Receives readiness events for one file descriptor. The loop keeps only a pointer: a handler
// must unregister before it is destroyed, and one that may be destroyed while the loop dispatches
// must be retired with EventLoop::dispose() so it outlives the current iteration.
class IoHandler {
 public:
  virtual void on_io(uint32_t epoll_events) = 0;

 protected:
  virtual ~IoHandler() = default;
};

// Something with buffered output, written at the end of the iteration (see request_flush).
class Flushable {
 public:
  virtual void flush() = 0;

 protected:
  virtual ~Flushable() = default;

 private:
  friend class EventLoop;
  bool flush_pending_ = false;  // queued in the loop's flush list for this iteration
};

// CLOCK_MONOTONIC and CLOCK_REALTIME, in the units the protocol core takes.
uint64_t monotonic_now_ns();
uint64_t wall_now_us();

class EventLoop {
 public:
  using TimerId = uint64_t;
  using HookId = uint64_t;

  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Runs iterations until stop(). May be called again after it returns.
  void run();
  // Makes run() return after the current iteration. Thread-safe.
  void stop();
  // Runs `task` on the loop thread during the next iteration. Thread-safe.
  void post(std::function<void()> task);

  // File descriptors: `events` is an EPOLLIN/EPOLLOUT mask (level-triggered).
  void add_fd(int fd, uint32_t events, IoHandler* handler);
  void modify_fd(int fd, uint32_t events, IoHandler* handler);
  void remove_fd(int fd);

  // Timers. `callback` runs once, on the loop thread, no earlier than `delay_ns` from now.
  // Cancelling an unknown or already fired timer is a no-op.
  TimerId schedule(uint64_t delay_ns, std::function<void()> callback);
  // Runs `callback` every `interval_ns` until cancelled (the callback may cancel its own id).
  TimerId schedule_every(uint64_t interval_ns, std::function<void()> callback);
  void cancel(TimerId id);

  // Runs after every iteration's events, timers and tasks, in registration order.
  HookId add_iteration_hook(std::function<void()> hook);
  void remove_iteration_hook(HookId id);

  // `target->flush()` runs once at the end of this iteration, after the hooks. Requesting twice
  // in one iteration flushes once. A target destroyed before then must call cancel_flush.
  void request_flush(Flushable* target);
  void cancel_flush(Flushable* target);

  // Keeps `object` alive until the end of the iteration, then destroys it. This is how a
  // connection closed from inside its own callback is destroyed safely.
  template <typename T>
  void dispose(std::unique_ptr<T> object) {
    if (object) graveyard_.push_back(std::shared_ptr<void>(std::move(object)));
  }

  // Calls `callback` on the loop thread when `signal_number` arrives. Blocks the signal for the
  // calling thread (signalfd needs it blocked); call before starting other threads so they
  // inherit the mask. Child processes must unblock it before exec (see runtime/local_cluster).
  void watch_signal(int signal_number, std::function<void()> callback);

  // The time at the start of the current iteration's dispatch (refreshed each iteration).
  uint64_t now_ns() const { return now_ns_; }
  uint64_t iterations() const { return iterations_; }

 private:
  struct TimerEntry {
    uint64_t deadline_ns;
    TimerId id;
    bool operator>(const TimerEntry& other) const {
      return deadline_ns != other.deadline_ns ? deadline_ns > other.deadline_ns : id > other.id;
    }
  };
  struct Timer {
    std::function<void()> callback;
    uint64_t interval_ns;  // 0 for a one-shot timer
  };
  class Wakeup;
  class Signals;

  void run_iteration();
  int next_timeout_ms() const;
  void run_timers();
  void run_posted();
  void run_hooks();
  void run_flushes();

  int epoll_fd_ = -1;
  std::unique_ptr<Wakeup> wakeup_;
  std::unique_ptr<Signals> signals_;
  std::atomic<bool> stop_requested_{false};
  uint64_t now_ns_ = 0;
  uint64_t iterations_ = 0;

  std::priority_queue<TimerEntry, std::vector<TimerEntry>, std::greater<>> timer_heap_;
  std::unordered_map<TimerId, Timer> timers_;
  TimerId next_timer_id_ = 1;

  std::vector<std::pair<HookId, std::function<void()>>> hooks_;
  HookId next_hook_id_ = 1;

  std::vector<Flushable*> flush_queue_;
  std::vector<Flushable*> flushing_;  // the batch being flushed, swapped with flush_queue_

  std::mutex posted_mutex_;
  std::vector<std::function<void()>> posted_;
  std::vector<std::function<void()>> running_posted_;
  std::atomic<bool> posted_pending_{false};

  std::vector<std::shared_ptr<void>> graveyard_;
  std::vector<epoll_event> events_;
};

}  // namespace lockstep::net
