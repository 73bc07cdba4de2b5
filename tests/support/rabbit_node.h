// RabbitMQ nodes of a test's own: start, stop, kill -9, restart, memory alarm, clusters, cleanup.
//
// A thin layer over tools/rabbit_node.sh, the one implementation of owning nodes (the benchmark
// drivers call the same script): each call runs the script and waits for it. A node has its own
// name (warren-<pid>-<n>@localhost), AMQP and distribution ports (claimed free at start, kept
// across restarts), data, log and HOME directories with its own Erlang cookie, all under
// /tmp/warren-nodes (WARREN_NODE_ROOT overrides). It never touches the shared broker of
// tools/setup.sh. The destructor kills and deletes the node, however the test ends; a process that
// dies without running it leaves a record that the next start (by anyone) or tools/test.sh's
// setup phase sweeps away.
//
// The script is found in the test's runfiles (add "//tests/support:rabbit_node" to deps; it
// carries the script as data), or at $WARREN_RABBIT_NODE when that is set.
//
// Errors: every operation that fails throws rabbit_node_error, whose what() names the command, its
// exit status and its output (with the tail of the node's log when a boot failed): thrown in a
// gtest fixture or test body, it fails the test with that message. The destructors never throw.
//
// Thread rules: a rabbit_node or rabbit_cluster belongs to one thread at a time; different
// objects may be used from different threads. Every call blocks until the script returns:
// start/restart until the node answers AMQP (about 3-10 s, bounded by boot_timeout), a cluster
// until every node has joined (about 10-30 s for 3 nodes on 2 cores), rabbitmqctl about 0.3-2 s,
// kill until the process is gone (milliseconds).
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace warren::test {

class rabbit_node_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct rabbit_node_options {
  // Soft open-files limit of the node's VM. RabbitMQ's usual 1024 runs out near 1,000
  // connections; lowered (with a warning from the script) to the hard limit when that is lower
  // and this process may not raise it.
  std::uint32_t nofile = 65536;
  // How long start/restart wait for the node to answer AMQP.
  std::chrono::seconds boot_timeout{120};
  // Erlang cookie (letters and digits); empty: a random one. A cluster's nodes share one.
  std::string cookie;
  // Erlang's net_ticktime in seconds (0: RabbitMQ's 60): a peer node that went silent (a
  // partition) is declared down within about 1 to 1.25 times this.
  int net_ticktime = 0;
  // Lines added to the node's rabbitmq.conf, e.g. "cluster_partition_handling = pause_minority".
  std::vector<std::string> config;
  // In a network namespace of its own (a cluster: one for all its nodes), reached through a veth
  // pair at 10.251.K.i; needed for partition(). Root only.
  bool netns = false;
};

// Runs tools/rabbit_node.sh with `args` (no shell: each element is one argument) and returns
// what it printed (standard output and error together). Throws rabbit_node_error when it exits
// non-zero or cannot be run.
std::string run_rabbit_node_script(const std::vector<std::string>& args);

class rabbit_node {
 public:
  // Starts a node owned by this process and waits until it answers AMQP.
  explicit rabbit_node(const rabbit_node_options& options = {});
  // Kills the node (SIGKILL: its data is deleted anyway) and deletes its directory.
  ~rabbit_node();
  rabbit_node(const rabbit_node&) = delete;
  rabbit_node& operator=(const rabbit_node&) = delete;

  // "warren-<pid>-<n>@localhost".
  const std::string& name() const { return name_; }
  // The IPv4 address its AMQP listener is on: 127.0.0.1, or 10.251.K.i in a namespace.
  const std::string& address() const { return address_; }
  std::uint16_t amqp_port() const { return amqp_port_; }
  // "<address>:<amqp port>", for connection_options::host.
  std::string host() const;
  // The node's log file (RabbitMQ's own, not the console output).
  const std::string& log_path() const { return log_; }

  // Pid of the node's VM, or 0 when it does not run.
  int pid() const;
  bool running() const { return pid() != 0; }
  // The running VM's soft open-files limit (from /proc/<pid>/limits).
  std::uint64_t open_files_limit() const;

  // Graceful stop (rabbitmqctl stop; returns once the VM has exited). Data kept.
  void stop();
  // kill -9 of the VM (by the pid the script recorded at launch); returns once it is gone.
  void kill();
  // Starts the stopped or killed node again on the same data, name, ports and cookie; waits
  // until it answers AMQP unless `wait` is false.
  void restart(bool wait = true);
  // Waits until the node answers AMQP (after restart(false)).
  void wait_until_serving();

  // Memory alarm on this node (node-wide: blocks every publishing connection of this node).
  void raise_memory_alarm();
  void clear_memory_alarm();

  // Writes the node's metadata (queues, exchanges, bindings) to disk now. RabbitMQ 3.10 logs a
  // declaration without waiting for the disk: a kill -9 within about a second of a
  // queue.declare lost the durable queue itself in 3 of 32 runs here, although a persistent
  // message published to it had been confirmed. Call it before kill() when the topology must
  // survive.
  void sync_metadata();

  // Only for a node started with options.netns: every packet between its address and any other
  // is dropped (nftables in the namespace), a black hole for the other nodes and for clients
  // alike; heal() removes the rule. rabbitmqctl still reaches the node.
  void partition();
  void heal();

  // rabbitmqctl -n <this node> <args>, e.g. rabbitmqctl({"list_queues", "name", "messages"}).
  // Returns its output; throws rabbit_node_error when it fails.
  std::string rabbitmqctl(const std::vector<std::string>& args);
  // rabbitmq-diagnostics, rabbitmq-queues, rabbitmq-streams, rabbitmq-plugins or
  // rabbitmq-upgrade -n <this node> <args>.
  std::string tool(const std::string& program, const std::vector<std::string>& args);

 private:
  friend class rabbit_cluster;
  struct adopt_tag {};
  // Takes over a node the script started (for rabbit_cluster); load_info() comes next.
  rabbit_node(adopt_tag, std::string name, const rabbit_node_options& options);
  void load_info();

  rabbit_node_options options_;
  std::string name_;
  std::string address_;
  std::uint16_t amqp_port_ = 0;
  std::string log_;
};

// N nodes with one cookie, joined to the first (rabbitmqctl join_cluster), owned by this process.
class rabbit_cluster {
 public:
  explicit rabbit_cluster(int nodes, const rabbit_node_options& options = {});
  // Kills and deletes every node.
  ~rabbit_cluster() = default;
  rabbit_cluster(const rabbit_cluster&) = delete;
  rabbit_cluster& operator=(const rabbit_cluster&) = delete;

  std::size_t size() const { return nodes_.size(); }
  rabbit_node& operator[](std::size_t i) { return *nodes_.at(i); }
  // "127.0.0.1:<port>" of every node, in order.
  std::vector<std::string> hosts() const;

 private:
  std::vector<std::unique_ptr<rabbit_node>> nodes_;
};

// Success once a connection to `address`:`port` (IPv4) that sends the AMQP 0-9-1 protocol header
// gets a method frame back (the broker's connection.start) within `timeout`, trying again every
// 50 ms; otherwise a failure saying what the last attempt saw.
::testing::AssertionResult wait_for_amqp(const std::string& address, std::uint16_t port,
                                         std::chrono::milliseconds timeout);
// The same on 127.0.0.1.
::testing::AssertionResult wait_for_amqp(std::uint16_t port, std::chrono::milliseconds timeout);

}  // namespace warren::test
