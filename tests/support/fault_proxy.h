// A TCP proxy that injects network faults between a client and a broker, in-process.
//
// The kernel of this machine has no netem (no delay or loss by tc), so stalls, resets and cuts
// mid-stream are made here: the proxy listens on 127.0.0.1 (an ephemeral port), connects every
// accepted client to the target, and forwards bytes both ways through buffers of its own, until
// told otherwise:
//   freeze()             nothing more is read or written on any connection, and no new
//                        connection is accepted (the kernel still completes the handshake of up to
//                        a backlog of them): the client sees silence, never a reset or an EOF.
//   thaw()               everything resumes; bytes read before the freeze are delivered.
//   reset_connections()  every current connection is closed with SO_LINGER 0: both the client
//                        and the target get a RST (ECONNRESET), whatever was buffered is lost.
//   drop_after(f, n, m)  on every connection (those open now counting from the call, later ones
//                        from their start), once n more bytes have been forwarded in direction f
//                        the connection is cut: `silence` stops it for good in both directions
//                        (nothing read or written, sockets left open: a black hole), `reset`
//                        sends RSTs both ways. Exactly n bytes get through.
//   refuse_new(true)     connection attempts are refused (the listening socket stops listening:
//                        the client's connect fails with ECONNREFUSED; connections waiting in the
//                        backlog are reset); refuse_new(false) listens again on the same port.
//                        Open connections are not affected.
// A client whose target refuses or resets gets a RST; an EOF (shutdown) is passed on as an EOF.
//
// Thread rules: every member may be called from any thread. A control (freeze, thaw, reset,
// drop_after, clear_drop, refuse_new, set_target) returns once the proxy's thread has applied it:
// after freeze() returns, not one more byte is forwarded. The counters may be read at any time.
// The proxy owns one thread, which the destructor stops and joins after closing every socket.
// For tests and benchmarks with tens of connections (poll(), not epoll).
//
// Errors: the constructor throws std::system_error when it cannot listen or start its thread, and
// std::invalid_argument for a target that is not an IPv4 address or "localhost". Failures of
// single connections (the target down, a reset) close those connections, as a network would.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace warren::test {

enum class flow {
  to_target,  // what the client sends
  to_client,  // what the target sends back
};

enum class cut_mode {
  silence,  // the connection stops for good, sockets kept open: the peers see nothing
  reset,    // both peers get a RST
};

// Counters of a fault_proxy at one instant.
struct fault_proxy_stats {
  std::uint64_t accepted = 0;                  // connections accepted so far
  std::size_t open = 0;                        // open now (a connection cut by `silence` is open)
  std::uint64_t cut = 0;                       // cut by the drop_after rule so far
  std::uint64_t to_target = 0, to_client = 0;  // bytes written to the receiving side so far
};

struct fault_proxy_options {
  // Bytes the proxy holds per connection and direction (read but not yet written). A frozen
  // connection holds at most this much, then the kernel's socket buffers fill.
  std::size_t buffer_bytes = 64 * 1024;
};

class fault_proxy {
 public:
  fault_proxy(const std::string& target_host, std::uint16_t target_port,
              const fault_proxy_options& options = {});
  ~fault_proxy();
  fault_proxy(const fault_proxy&) = delete;
  fault_proxy& operator=(const fault_proxy&) = delete;

  // The port the proxy listens on (127.0.0.1), and "127.0.0.1:<port>".
  std::uint16_t port() const { return port_; }
  std::string address() const;

  void freeze();
  void thaw();
  void reset_connections();
  void drop_after(flow direction, std::uint64_t bytes, cut_mode mode);
  // Removes the rule of drop_after (connections it already cut stay cut).
  void clear_drop();
  void refuse_new(bool refuse);
  // Where connections accepted from now on go (open ones keep their target).
  void set_target(const std::string& host, std::uint16_t port);

  // Bytes written to the receiving side in that direction, over all connections so far. Updated
  // just after each write, so it may trail, for an instant, what the receiving peer has already
  // read; stats() does not.
  std::uint64_t bytes_forwarded(flow direction) const;
  // Connections accepted so far, and those open now (cut by `silence` counts as open).
  std::uint64_t accepted() const { return accepted_.load(); }
  std::size_t open_connections() const { return open_.load(); }
  // Connections cut by the drop_after rule so far.
  std::uint64_t cut() const { return cut_.load(); }
  // All counters, read on the proxy's thread (like a control): consistent with each other, and
  // every byte a peer has received before the call is counted.
  fault_proxy_stats stats();

 private:
  struct state;
  // Runs `change` on the proxy's thread and waits until it has.
  void apply(std::function<void(state&)> change);
  void run();

  fault_proxy_options options_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  std::uint16_t port_ = 0;

  std::mutex mu_;
  std::condition_variable applied_cv_;
  std::deque<std::function<void(state&)>> changes_;
  std::uint64_t submitted_ = 0, applied_ = 0;

  std::atomic<std::uint64_t> forwarded_[2] = {0, 0};
  std::atomic<std::uint64_t> accepted_{0}, cut_{0};
  std::atomic<std::size_t> open_{0};

  std::unique_ptr<state> state_;  // the proxy thread's alone (created before it starts)
  std::thread thread_;
};

}  // namespace warren::test
