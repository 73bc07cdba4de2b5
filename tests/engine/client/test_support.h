// Helpers for the integration tests of the blocking API against the broker of tools/setup.sh.
//
// Thread rules: the free functions may be called from any thread; run_command() and
// management_get() block until the child process or the HTTP exchange ends.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "engine/client/connection.h"

namespace warren::test {

// Options for a plain connection to the test broker as guest on vhost "/".
connection_options broker_options();

// A name no other test (or test run, or engineer sharing the broker) uses: prefix, the test's
// name, the process id and a counter.
std::string unique_name(std::string_view prefix = "warren");

// Runs `command` through /bin/sh and returns its standard output; `exit_status` receives the
// exit status (or -1 when the shell could not be started).
std::string run_command(const std::string& command, int* exit_status = nullptr);

// `rabbitmqctl <args>`; fails the current test (non-fatally) when the command fails.
std::string rabbitmqctl(const std::string& args);

// GET http://127.0.0.1:15672<path> with guest:guest; returns the response body, or "" after
// adding a test failure when the request fails.
std::string management_get(std::string_view path);

// Calls conn.drain_events() with short timeouts until `done` returns true or `timeout` passes;
// returns done(). Other errors propagate.
bool drain_until(connection& conn, const std::function<bool()>& done,
                 std::chrono::milliseconds timeout = std::chrono::seconds(5));

// Deletes `queue` on a fresh connection, ignoring errors (cleanup after a failed test).
void delete_queue_quietly(std::string_view queue);

}  // namespace warren::test
