#include "net/event_loop.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace lockstep::net {
namespace {

TEST(EventLoopTest, TimersFireInDeadlineOrder) {
  EventLoop loop;
  std::vector<int> fired;
  loop.schedule(30'000'000, [&] {
    fired.push_back(3);
    loop.stop();
  });
  loop.schedule(10'000'000, [&] { fired.push_back(1); });
  loop.schedule(20'000'000, [&] { fired.push_back(2); });
  const uint64_t start = monotonic_now_ns();
  loop.run();
  EXPECT_EQ(fired, (std::vector<int>{1, 2, 3}));
  EXPECT_GE(monotonic_now_ns() - start, 30'000'000u);
}

TEST(EventLoopTest, CancelledTimerDoesNotFire) {
  EventLoop loop;
  bool cancelled_fired = false;
  EventLoop::TimerId id = loop.schedule(5'000'000, [&] { cancelled_fired = true; });
  loop.schedule(20'000'000, [&] { loop.stop(); });
  loop.cancel(id);
  loop.run();
  EXPECT_FALSE(cancelled_fired);
}

TEST(EventLoopTest, PeriodicTimerRepeatsUntilItCancelsItself) {
  EventLoop loop;
  int count = 0;
  EventLoop::TimerId id = 0;
  id = loop.schedule_every(1'000'000, [&] {
    if (++count == 5) loop.cancel(id);
  });
  loop.schedule(50'000'000, [&] { loop.stop(); });
  loop.run();
  EXPECT_EQ(count, 5);
}

TEST(EventLoopTest, PostAndStopFromAnotherThreadWakeTheLoop) {
  EventLoop loop;
  std::thread::id ran_on;
  std::thread other([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    loop.post([&] { ran_on = std::this_thread::get_id(); });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    loop.stop();
  });
  // No timers: without the wakeup the loop would sleep in epoll_wait forever.
  loop.run();
  other.join();
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

class RecordingFlush final : public Flushable {
 public:
  explicit RecordingFlush(std::vector<std::string>& log) : log_(log) {}
  void flush() override { log_.push_back("flush"); }

 private:
  std::vector<std::string>& log_;
};

TEST(EventLoopTest, HooksRunAfterTimersAndFlushesRunOnceAfterHooks) {
  EventLoop loop;
  std::vector<std::string> log;
  RecordingFlush target(log);
  loop.add_iteration_hook([&] {
    log.push_back("hook");
    // Requested twice in one iteration: flushed once.
    loop.request_flush(&target);
    loop.request_flush(&target);
  });
  loop.schedule(1'000'000, [&] {
    log.clear();
    log.push_back("timer");
    loop.stop();
  });
  loop.run();
  EXPECT_EQ(log, (std::vector<std::string>{"timer", "hook", "flush"}));
}

TEST(EventLoopTest, CancelledFlushDoesNotRun) {
  EventLoop loop;
  std::vector<std::string> log;
  RecordingFlush target(log);
  loop.post([&] {
    loop.request_flush(&target);
    loop.cancel_flush(&target);
    loop.stop();
  });
  loop.run();
  EXPECT_TRUE(log.empty());
}

TEST(EventLoopTest, DisposedObjectsLiveUntilTheEndOfTheIteration) {
  EventLoop loop;
  auto alive = std::make_shared<int>(7);
  std::weak_ptr<int> watch = alive;
  bool alive_in_hook = false;
  loop.post([&] {
    loop.dispose(std::make_unique<std::shared_ptr<int>>(std::move(alive)));
    loop.stop();
  });
  loop.add_iteration_hook([&] { alive_in_hook = !watch.expired(); });
  loop.run();
  EXPECT_TRUE(alive_in_hook);
  EXPECT_TRUE(watch.expired());
}

TEST(EventLoopTest, WatchedSignalRunsOnTheLoop) {
  EventLoop loop;
  int received = 0;
  loop.watch_signal(SIGUSR1, [&] {
    ++received;
    loop.stop();
  });
  loop.schedule(1'000'000, [] { raise(SIGUSR1); });
  loop.schedule(5'000'000'000, [&] { loop.stop(); });  // a failing test must not hang
  loop.run();
  EXPECT_EQ(received, 1);
}

TEST(EventLoopTest, RunCanBeCalledAgainAfterStop) {
  EventLoop loop;
  int runs = 0;
  for (int i = 0; i < 3; ++i) {
    loop.post([&] {
      ++runs;
      loop.stop();
    });
    loop.run();
  }
  EXPECT_EQ(runs, 3);
}

}  // namespace
}  // namespace lockstep::net
