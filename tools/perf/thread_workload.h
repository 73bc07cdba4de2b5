// The part of a workload that does not depend on the client library: one thread per producer
// and per consumer, a start barrier (consumers set up before producers publish), a go signal,
// the first failure, and an orderly stop. Backends implement producer_main/consumer_main.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "tools/perf/workload.h"

namespace warren::perf {

class thread_workload : public workload {
 public:
  thread_workload(const perf_options& o, const topology_plan& plan, run_stats& stats,
                  std::shared_ptr<const body_source> bodies)
      : options_(o),
        plan_(plan),
        stats_(stats),
        bodies_(std::move(bodies)),
        trackers_(std::size_t{o.consumers} * o.consumer_channels),
        tracker_queues_(trackers_.size()) {}
  ~thread_workload() override;

  void start() override;
  unsigned producers_finished() const override { return producers_finished_.load(); }
  unsigned consumers_finished() const override { return consumers_finished_.load(); }
  std::optional<std::string> failure() const override;
  void stop(std::chrono::milliseconds confirm_grace) override;
  std::vector<sequence_record> sequence_records() const override;

 protected:
  // Each runs on its own thread. Call ready() once connected and set up (a producer then
  // waits in wait_for_go()), return once stopping() or the -C/-D count is reached (then call
  // finished() first). Throw on failure: the message becomes the run's error (one line).
  virtual void producer_main(unsigned index) = 0;
  virtual void consumer_main(unsigned index) = 0;

  void ready();
  // False when the run stops before it started.
  bool wait_for_go();
  // True once the producers were let go (consumers start --exit-when's idle clock then, not
  // while the producers still connect).
  bool started() const noexcept { return started_.load(std::memory_order_acquire); }
  bool producers_stopping() const noexcept {
    return stop_producers_.load(std::memory_order_relaxed);
  }
  bool consumers_stopping() const noexcept {
    return stop_consumers_.load(std::memory_order_relaxed);
  }
  void producer_finished() { ++producers_finished_; }
  void consumer_finished() { ++consumers_finished_; }
  std::chrono::milliseconds confirm_grace() const noexcept { return confirm_grace_.load(); }

  stats_slot& producer_slot(unsigned i) noexcept { return stats_.slot(i); }
  stats_slot& consumer_slot(unsigned j) noexcept { return stats_.slot(options_.producers + j); }
  // Consumer j's channel c: its sequence record, and the queue it consumes (set once known,
  // before ready()).
  sequence_tracker& tracker(unsigned j, std::size_t c) noexcept {
    return trackers_[j * options_.consumer_channels + c];
  }
  void set_tracker_queue(unsigned j, std::size_t c, std::string queue) {
    tracker_queues_[j * options_.consumer_channels + c] = std::move(queue);
  }

  const perf_options& options_;
  const topology_plan& plan_;
  run_stats& stats_;
  std::shared_ptr<const body_source> bodies_;

 private:
  void launch(bool producers);
  void fail(std::string what);
  // Waits until `count` threads called ready() or one failed; false on failure.
  bool wait_ready(unsigned count);
  void join(std::vector<std::thread>& threads);

  std::vector<std::thread> producers_, consumers_;
  std::atomic<unsigned> producers_finished_{0}, consumers_finished_{0};
  std::atomic<bool> stop_producers_{false}, stop_consumers_{false};
  std::atomic<std::chrono::milliseconds> confirm_grace_{std::chrono::milliseconds(0)};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  unsigned ready_ = 0;
  bool go_ = false;
  std::atomic<bool> started_{false};
  std::optional<std::string> failure_;
  std::vector<sequence_tracker> trackers_;
  std::vector<std::string> tracker_queues_;
};

}  // namespace warren::perf
