#include "tools/perf/thread_workload.h"

namespace warren::perf {

thread_workload::~thread_workload() {
  stop(std::chrono::milliseconds(0));
}

void thread_workload::launch(bool producers) {
  const unsigned n = producers ? options_.producers : options_.consumers;
  auto& threads = producers ? producers_ : consumers_;
  for (unsigned i = 0; i < n; ++i) {
    threads.emplace_back([this, i, producers] {
      try {
        if (producers) {
          producer_main(i);
        } else {
          consumer_main(i);
        }
      } catch (const std::exception& e) {
        const std::size_t uri = producers ? plan_.producers[i].uri : plan_.consumers[i].uri;
        fail(std::string(producers ? "producer " : "consumer ") + std::to_string(i + 1) + " (" +
             redact_uri(options_.uris[uri]) + "): " + e.what());
      }
    });
  }
}

void thread_workload::start() {
  launch(false);
  if (!wait_ready(options_.consumers)) {
    stop(std::chrono::milliseconds(0));
    throw run_error(*failure());
  }
  launch(true);
  if (!wait_ready(options_.consumers + options_.producers)) {
    stop(std::chrono::milliseconds(0));
    throw run_error(*failure());
  }
  std::lock_guard lock(mu_);
  go_ = true;
  started_.store(true, std::memory_order_release);
  cv_.notify_all();
}

void thread_workload::ready() {
  std::lock_guard lock(mu_);
  ++ready_;
  cv_.notify_all();
}

bool thread_workload::wait_for_go() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return go_ || stop_producers_.load(); });
  return go_ && !stop_producers_.load();
}

bool thread_workload::wait_ready(unsigned count) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return ready_ >= count || failure_.has_value(); });
  return !failure_;
}

void thread_workload::fail(std::string what) {
  std::lock_guard lock(mu_);
  if (!failure_) failure_ = one_line(std::move(what));
  cv_.notify_all();
}

std::vector<sequence_record> thread_workload::sequence_records() const {
  std::vector<sequence_record> out;
  for (std::size_t i = 0; i < trackers_.size(); ++i) {
    out.push_back({tracker_queues_[i], &trackers_[i]});
  }
  return out;
}

std::optional<std::string> thread_workload::failure() const {
  std::lock_guard lock(mu_);
  return failure_;
}

void thread_workload::join(std::vector<std::thread>& threads) {
  for (std::thread& t : threads) {
    if (t.joinable()) t.join();
  }
  threads.clear();
}

void thread_workload::stop(std::chrono::milliseconds grace) {
  confirm_grace_ = grace;
  {
    std::lock_guard lock(mu_);
    stop_producers_ = true;
    cv_.notify_all();
  }
  join(producers_);
  stop_consumers_ = true;
  join(consumers_);
}

}  // namespace warren::perf
