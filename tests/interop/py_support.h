// Running the py-amqp peer script and reading what it prints, for the interoperability tests.
//
// Thread rules: the functions share no state and may be called from any thread; finish() and
// run_peer() block until the child exits (or its deadline passes).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace warren::test {

// A parsed JSON document. Numbers keep their source text (the peer prints large integers as
// strings anyway, but nothing here rounds). Object members keep their order.
struct json {
  enum class kind { null, boolean, number, string, array, object };
  kind type = kind::null;
  bool boolean = false;
  std::string text;  // a string's value (UTF-8) or a number's text
  std::vector<json> items;
  std::vector<std::pair<std::string, json>> members;

  // The member named `key`, or nullptr (also when this is not an object).
  const json* find(std::string_view key) const noexcept;
  // The member named `key`; throws std::out_of_range when there is none.
  const json& at(std::string_view key) const;
};

// Parses one JSON value (surrounding white space allowed). Throws std::runtime_error naming the
// offset of the first malformed character.
json parse_json(std::string_view text);

// Decodes standard base64 (with padding). Throws std::runtime_error on any other character.
std::string base64_decode(std::string_view in);

// The path of a file of this test's runfiles, given relative to the workspace root.
std::string runfile(std::string_view workspace_path);

// A running `/usr/bin/python3 tests/interop/py_amqp_peer.py <args...>`, its stdout on a pipe.
// Its stderr goes to the test's own stderr (the test log).
struct peer_process {
  pid_t pid = -1;
  int stdout_fd = -1;
};

// Starts the peer; throws std::runtime_error when it cannot be spawned.
peer_process start_peer(const std::vector<std::string>& args);

struct peer_result {
  int exit_status = -1;  // the exit code, or -1 when killed or not exited normally
  std::string out;       // everything written to stdout
};

// Reads the peer's stdout to the end and reaps it. After `timeout` the peer is killed (its
// exit_status is then -1) so that a hung peer fails the test instead of hanging it.
peer_result finish(peer_process& p, std::chrono::milliseconds timeout = std::chrono::seconds(60));

// start_peer() then finish().
peer_result run_peer(const std::vector<std::string>& args);

// A queue name no other test, run or engineer sharing the broker uses.
std::string unique_queue(std::string_view what);

}  // namespace warren::test
