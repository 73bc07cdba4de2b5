// Running the built perf binary (tools/perf/perf, from the test's runfiles) as a user would,
// and looking at the broker's queues with warren's blocking client to check what it did.
//
// Threads: the test's thread.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "engine/client/connection.h"

namespace warren::perf::test {

struct outcome {
  int status = -1;
  std::string out, err;
  double seconds = 0;
};

inline std::string temp_dir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir ? dir : "/tmp";
}

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

inline std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// Runs tools/perf/perf with `args` (no shell quoting needed: none of the tests' arguments
// hold a quote), stdout captured, stderr through a file.
inline outcome perf(const std::string& args) {
  const std::string err_path = temp_dir() + "/perf.stderr." + std::to_string(::getpid());
  const auto start = std::chrono::steady_clock::now();
  FILE* p = ::popen(("tools/perf/perf " + args + " 2>" + err_path + " </dev/null").c_str(), "r");
  outcome o;
  if (p == nullptr) return o;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) o.out.append(buf, n);
  const int st = ::pclose(p);
  o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  o.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  o.err = slurp(err_path);
  return o;
}

inline nlohmann::json summary_of(const std::string& json_path) {
  return nlohmann::json::parse(slurp(json_path)).at("summary");
}

// A queue name no other test process uses: `what`, the pid and a counter.
inline std::string unique_queue(const std::string& what) {
  static int n = 0;
  return "perf-e2e-" + what + "-" + std::to_string(::getpid()) + "-" + std::to_string(++n);
}

// A connection of the test's own to the broker on 127.0.0.1:5672.
class broker_probe {
 public:
  broker_probe() : conn_(connection_options::from_uri("amqp://guest:guest@127.0.0.1:5672")) {
    conn_.connect();
  }
  ~broker_probe() { conn_.close(); }

  // Every message in `queue`, taken with basic.get and acknowledged.
  std::vector<message> take_all(const std::string& queue) {
    std::vector<message> out;
    channel& ch = conn_.channel();
    while (std::optional<message> m = ch.basic_get(queue, true)) out.push_back(std::move(*m));
    return out;
  }
  std::uint32_t message_count(const std::string& queue) {
    queue_declare_options passive;
    passive.passive = true;
    return conn_.channel().queue_declare(queue, passive).message_count;
  }
  // True when `queue` exists as a durable queue of `type` with `arguments` besides (a declare
  // with other arguments would be refused with 406, which closes only the channel used here).
  bool is_durable_of_type(const std::string& queue, const std::string& type,
                          codec::field_table arguments = {}) {
    queue_declare_options q;
    q.durable = true;
    q.auto_delete = false;
    q.arguments = std::move(arguments);
    q.arguments.set("x-queue-type", codec::field_value::long_string(type));
    try {
      channel& ch = conn_.channel(next_channel());
      ch.queue_declare(queue, q);
      return true;
    } catch (const amqp_error&) {
      return false;
    }
  }
  void remove(const std::string& queue) { conn_.channel().queue_delete(queue); }

 private:
  std::uint16_t next_channel() { return ++channel_id_; }
  connection conn_;
  std::uint16_t channel_id_ = 100;
};

}  // namespace warren::perf::test
