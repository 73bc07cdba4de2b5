// Own RabbitMQ nodes (tests/support/rabbit_node.h over tools/rabbit_node.sh), with the blocking
// client against them: start, kill -9 and restart with durable data kept, graceful stop, the
// memory alarm, a 3-node cluster replicating a quorum queue, the open-files limit, cleanup by the
// destructor and by the sweeper, and errors. Never the shared broker of tools/setup.sh.
#include "tests/support/rabbit_node.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "engine/client/connection.h"

extern char** environ;

namespace warren::test {
namespace {

using namespace std::chrono_literals;

connection_options node_options(const rabbit_node& node) {
  connection_options o;
  o.host = node.host();
  o.connect_timeout = seconds_f(10);
  return o;
}

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// True if `pid` is a process that has not exited (a zombie has).
bool process_runs(int pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto paren = all.rfind(") ");
  return paren != std::string::npos && all[paren + 2] != 'Z';
}

// The node's directory (the parent of its log directory).
std::string node_dir(const rabbit_node& node) {
  std::string d = node.log_path();
  d = d.substr(0, d.rfind('/'));
  return d.substr(0, d.rfind('/'));
}

// Drains `c` until `done` or `timeout`.
bool drain_until(connection& c, const std::function<bool()>& done, std::chrono::seconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!done() && std::chrono::steady_clock::now() < until) {
    try {
      c.drain_events(seconds_f(0.1));
    } catch (const amqp_timeout&) {
    }
  }
  return done();
}

TEST(rabbit_node_test, a_node_keeps_confirmed_durable_messages_across_kill_minus_9_and_restart) {
  rabbit_node node;
  EXPECT_EQ(node.name().rfind("warren-" + std::to_string(::getpid()) + "-", 0), 0u) << node.name();
  EXPECT_NE(node.amqp_port(), 5672);
  const int first_pid = node.pid();
  ASSERT_GT(first_pid, 0);
  {
    connection_options o = node_options(node);
    client_options co;
    co.confirm_publish = true;
    connection c(o, co);
    c.connect();
    channel& ch = c.channel();
    ch.queue_declare("kept", {.durable = true, .auto_delete = false});
    properties persistent;
    persistent.delivery_mode = 2;
    ch.basic_publish(message("survivor", persistent), "", "kept");  // waits for the ack
    // Without it, the durable queue itself was lost in 2 of 20 runs (see sync_metadata()).
    node.sync_metadata();

    const auto t0 = std::chrono::steady_clock::now();
    node.kill();
    std::cout << "kill -9: "
              << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
              << " s\n";
    EXPECT_FALSE(node.running());
    // The client sees the connection end (EOF or reset), not a hang.
    EXPECT_THROW(c.drain_events(seconds_f(10)), connection_error);
  }
  EXPECT_FALSE(wait_for_amqp(node.amqp_port(), 200ms));

  const auto t0 = std::chrono::steady_clock::now();
  node.restart();
  std::cout << "restart until AMQP answers: "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
            << " s\n";
  EXPECT_TRUE(wait_for_amqp(node.amqp_port(), 1s));
  EXPECT_NE(node.pid(), first_pid);
  connection c(node_options(node));
  c.connect();
  std::optional<message> m = c.channel().basic_get("kept", true);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->body_copy(), "survivor");
}

TEST(rabbit_node_test, a_graceful_stop_and_restart_keep_the_name_port_and_open_files_limit) {
  rabbit_node node({.nofile = 1024});
  const std::string name = node.name();
  const std::uint16_t port = node.amqp_port();
  EXPECT_EQ(node.open_files_limit(), 1024u);
  node.stop();
  EXPECT_FALSE(node.running());
  EXPECT_THROW(node.open_files_limit(), rabbit_node_error);
  node.restart();
  EXPECT_EQ(node.name(), name);
  EXPECT_EQ(node.amqp_port(), port);
  EXPECT_EQ(node.open_files_limit(), 1024u);
  connection c(node_options(node));
  c.connect();
  EXPECT_TRUE(c.is_alive());
}

// A benchmark times the boot itself: restart(false) must return at the launch, not fail.
TEST(rabbit_node_test, restart_without_waiting_returns_at_the_launch_and_the_node_then_serves) {
  rabbit_node node;
  node.kill();
  EXPECT_FALSE(node.running());
  node.restart(false);
  node.wait_until_serving();
  EXPECT_TRUE(node.running());
  connection c(node_options(node));
  c.connect();
  EXPECT_TRUE(c.is_alive());
}

TEST(rabbit_node_test, the_default_open_files_limit_is_well_above_rabbitmqs_usual_1024) {
  rabbit_node node;
  rlimit hard{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &hard), 0);
  // 65536, or this process's hard limit when that is lower and cannot be raised.
  const std::uint64_t expected =
      hard.rlim_max == RLIM_INFINITY ? 65536 : std::min<std::uint64_t>(65536, hard.rlim_max);
  EXPECT_GE(node.open_files_limit(), expected);
  EXPECT_GT(node.open_files_limit(), 1024u);
}

TEST(rabbit_node_test, a_memory_alarm_blocks_a_publisher_and_clearing_it_unblocks) {
  rabbit_node node;
  connection_options o = node_options(node);
  client_options co;
  int blocked = 0, unblocked = 0;
  co.on_blocked = [&](std::string_view) { ++blocked; };
  co.on_unblocked = [&] { ++unblocked; };
  connection c(o, co);
  c.connect();
  channel& ch = c.channel();
  node.raise_memory_alarm();
  EXPECT_NE(node.rabbitmqctl({"status"}).find("Memory alarm on node " + node.name()),
            std::string::npos);
  // RabbitMQ blocks a connection when it publishes during the alarm.
  ch.basic_publish(message("trigger"), "", "nowhere");
  ASSERT_TRUE(drain_until(
      c, [&] { return blocked == 1; }, 30s));
  EXPECT_TRUE(c.blocked());
  node.clear_memory_alarm();
  ASSERT_TRUE(drain_until(
      c, [&] { return unblocked == 1; }, 30s));
  EXPECT_FALSE(c.blocked());
}

TEST(rabbit_node_test, three_nodes_form_a_cluster_that_replicates_a_quorum_queue) {
  const auto t0 = std::chrono::steady_clock::now();
  rabbit_cluster cluster(3);
  std::cout << "3-node cluster booted and joined: "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
            << " s\n";
  ASSERT_EQ(cluster.size(), 3u);
  ASSERT_EQ(cluster.hosts().size(), 3u);
  const std::string status = cluster[0].rabbitmqctl({"cluster_status", "--formatter", "json"});
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_NE(status.find("\"" + cluster[i].name() + "\""), std::string::npos) << status;
  }
  // Declared and published through one node, read through another.
  {
    connection_options o = node_options(cluster[2]);
    client_options co;
    co.confirm_publish = true;
    connection c(o, co);
    c.connect();
    channel& ch = c.channel();
    codec::field_table args;
    args.set("x-queue-type", codec::field_value::long_string("quorum"));
    ch.queue_declare("replicated", {.durable = true, .auto_delete = false, .arguments = args});
    ch.basic_publish(message("everywhere"), "", "replicated");
  }
  const std::string members = cluster[1].tool("rabbitmq-queues", {"quorum_status", "replicated"});
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_NE(members.find(cluster[i].name()), std::string::npos) << members;
  }
  connection c(node_options(cluster[1]));
  c.connect();
  std::optional<message> m = c.channel().basic_get("replicated", true);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->body_copy(), "everywhere");
}

// The nodes `running_nodes` of `rabbitmqctl cluster_status --formatter json` lists.
std::string running_nodes(rabbit_node& node) {
  const std::string status = node.rabbitmqctl({"cluster_status", "--formatter", "json"});
  const auto at = status.find("\"running_nodes\"");
  if (at == std::string::npos) return "";
  const auto open = status.find('[', at);
  return status.substr(open, status.find(']', open) - open + 1);
}

bool eventually(const std::function<bool()>& cond, std::chrono::seconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(200ms);
  }
  return true;
}

TEST(rabbit_node_test, a_partitioned_node_drops_out_of_its_cluster_is_silent_to_clients_and_heals) {
  // net_ticktime 5: the majority declares the silent node down within 5-6.25 s.
  rabbit_cluster cluster(3, {.net_ticktime = 5,
                             .config = {"cluster_partition_handling = pause_minority"},
                             .netns = true});
  rabbit_node& lost = cluster[2];
  EXPECT_EQ(lost.address().rfind("10.251.", 0), 0u) << lost.address();
  connection c(node_options(lost));
  c.connect();
  ASSERT_NE(running_nodes(cluster[0]).find(lost.name()), std::string::npos);

  lost.partition();
  // A black hole, not a reset: the open connection hears nothing, a new one gets no answer.
  EXPECT_THROW(c.drain_events(seconds_f(0.5)), amqp_timeout);
  const auto probe = wait_for_amqp(lost.address(), lost.amqp_port(), 500ms);
  EXPECT_FALSE(probe);
  EXPECT_NE(std::string(probe.message()).find("no answer"), std::string::npos) << probe.message();
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(eventually(
      [&] { return running_nodes(cluster[0]).find(lost.name()) == std::string::npos; }, 60s))
      << running_nodes(cluster[0]);
  std::cout << "partition noticed by the majority after "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
            << " s\n";
  EXPECT_NE(running_nodes(cluster[0]).find(cluster[1].name()), std::string::npos);

  lost.heal();
  // pause_minority: the isolated node paused itself, and rejoins once it sees the others again.
  EXPECT_TRUE(eventually(
      [&] { return running_nodes(cluster[0]).find(lost.name()) != std::string::npos; }, 90s))
      << running_nodes(cluster[0]);
  EXPECT_TRUE(wait_for_amqp(lost.address(), lost.amqp_port(), 60s));
  connection again(node_options(lost));
  again.connect();
  EXPECT_TRUE(again.is_alive());
}

TEST(rabbit_node_test, partition_needs_a_node_in_a_namespace) {
  rabbit_node node;
  EXPECT_EQ(node.address(), "127.0.0.1");
  try {
    node.partition();
    ADD_FAILURE() << "partition() of a node outside a namespace succeeded";
  } catch (const rabbit_node_error& e) {
    EXPECT_NE(std::string(e.what()).find("not in a namespace"), std::string::npos) << e.what();
  }
}

TEST(rabbit_node_test, the_destructor_kills_the_node_and_deletes_its_directory) {
  std::string dir;
  int pid = 0;
  std::uint16_t port = 0;
  {
    rabbit_node node;
    dir = node_dir(node);
    pid = node.pid();
    port = node.amqp_port();
    ASSERT_TRUE(exists(dir + "/home/.erlang.cookie"));
    struct stat st;
    ASSERT_EQ(::stat((dir + "/home/.erlang.cookie").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0400u);
  }
  EXPECT_FALSE(exists(dir));
  EXPECT_FALSE(process_runs(pid));
  EXPECT_FALSE(wait_for_amqp(port, 100ms));
}

// A process that starts a node and dies without cleaning up: the next sweep removes the node.
TEST(rabbit_node_test, the_sweeper_removes_a_node_whose_owner_died) {
  // The owner: a child that only sleeps.
  pid_t owner = 0;
  char sleep_path[] = "/bin/sleep";
  char sleep_arg[] = "600";
  char* argv[] = {sleep_path, sleep_arg, nullptr};
  ASSERT_EQ(::posix_spawn(&owner, "/bin/sleep", nullptr, nullptr, argv, environ), 0);
  std::string name;
  try {
    const std::string out = run_rabbit_node_script({"start", "--owner", std::to_string(owner)});
    name = out.substr(out.rfind("warren-"));
    name = name.substr(0, name.find('\n'));
  } catch (...) {
    ::kill(owner, SIGKILL);
    ::waitpid(owner, nullptr, 0);
    throw;
  }
  const std::string info = run_rabbit_node_script({"info", name});
  EXPECT_NE(info.find("running=1"), std::string::npos) << info;
  // While the owner lives, a sweep leaves the node alone.
  run_rabbit_node_script({"sweep"});
  EXPECT_NE(run_rabbit_node_script({"info", name}).find("running=1"), std::string::npos);

  ::kill(owner, SIGKILL);
  ::waitpid(owner, nullptr, 0);
  const std::string swept = run_rabbit_node_script({"sweep"});
  EXPECT_NE(swept.find("sweeping " + name.substr(0, name.find('@'))), std::string::npos) << swept;
  EXPECT_THROW(run_rabbit_node_script({"info", name}), rabbit_node_error);
}

TEST(rabbit_node_test, failures_throw_with_the_command_and_its_output) {
  rabbit_node node;
  try {
    node.rabbitmqctl({"no_such_command"});
    ADD_FAILURE() << "an unknown rabbitmqctl command succeeded";
  } catch (const rabbit_node_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("ctl " + node.name() + " no_such_command"), std::string::npos) << what;
    EXPECT_NE(what.find("exit status"), std::string::npos) << what;
  }
  EXPECT_THROW(run_rabbit_node_script({"info", "warren-0-0"}), rabbit_node_error);
  EXPECT_THROW(node.tool("rm", {"-rf", "/"}), rabbit_node_error);
}

TEST(rabbit_node_test, wait_for_amqp_names_the_port_where_nothing_answers) {
  // Port 1 (tcpmux) is privileged and unused here: nothing listens.
  const auto result = wait_for_amqp(1, 200ms);
  EXPECT_FALSE(result);
  EXPECT_NE(std::string(result.message()).find("127.0.0.1:1 "), std::string::npos)
      << result.message();
}

}  // namespace
}  // namespace warren::test
