// The engine: its I/O threads, its worker pool, and the connections it keeps until they are
// closed; connect() and adopt() make a connection and wait for its open-ok.
//
// Threading: connect/adopt from any thread but an I/O thread; the destructor from the thread
// that owns the engine.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "engine/async/engine.h"
#include "engine/async/io_thread.h"
#include "engine/options.h"
#include "engine/protocol/recovery.h"
#include "engine/workers/dispatcher.h"

namespace warren::async::detail {

class connection_impl;

class engine_impl {
 public:
  explicit engine_impl(engine_options o);
  // Closes the connections (each close bounded), drains their consumers, joins the threads.
  ~engine_impl();
  engine_impl(const engine_impl&) = delete;
  engine_impl& operator=(const engine_impl&) = delete;

  std::shared_ptr<connection_impl> connect(const connection_options& opts);
  std::shared_ptr<connection_impl> adopt(io::unique_fd fd, const connection_options& opts);

  const engine_options options;
  workers::worker_pool pool;

 private:
  // The connection over `fd`, connected to endpoint `index` of `endpoints` (adopt: recovery off).
  std::shared_ptr<connection_impl> start(io::unique_fd fd, const connection_options& opts,
                                         protocol::endpoint_list endpoints, std::size_t index,
                                         bool recover);
  io_thread& next_io() { return *ios_[rr_.fetch_add(1, std::memory_order_relaxed) % ios_.size()]; }

  // Declared before the connections: they go first.
  std::vector<std::unique_ptr<io_thread>> ios_;
  std::atomic<unsigned> rr_{0};
  std::atomic<std::uint64_t> connections_made_{0};  // endpoint_allocation::round_robin

 public:
  std::mutex conns_mu;
  std::vector<std::shared_ptr<connection_impl>> conns;  // until closed by the user or the end
};

}  // namespace warren::async::detail
