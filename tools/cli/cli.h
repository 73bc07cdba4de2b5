// The `warren` command line tool: publish, consume, get, declare, bind, delete and purge
// against a broker, with messages as JSON lines (tools/cli/message_json.h).
//
//   warren [--uri URI] COMMAND [options]      warren --help      warren COMMAND --help
//
// Exit status: 0 on success (including `get` on an empty queue); 1 when the broker or the
// connection fails, with ONE line on stderr naming the AMQP reply, e.g.
// `warren: 404 NOT_FOUND - no queue 'x' in vhost '/' (queue.declare)`; 2 for bad usage, with
// one line on stderr. The password of the URI never appears in any output.
//
// Connecting is bounded (10 s, or the URI's connection_timeout), so an unreachable broker or a
// refused login is a one-line error, never a hang.
#pragma once

#include <iosfwd>
#include <span>
#include <string>
#include <string_view>

#include "engine/client/connection.h"

namespace warren::cli {

inline constexpr std::string_view default_uri = "amqp://guest:guest@127.0.0.1:5672/";

// Runs one command line (`args` without the program name), reading message JSON from `in`
// (for `--message-json -`), writing results to `out` and the error line to `err`. Returns the
// exit status. Not thread-safe with respect to the streams; otherwise self-contained.
int run(std::span<const std::string> args, std::istream& in, std::ostream& out, std::ostream& err);

// connection_options::from_uri (engine/client/connection.h) with the tool's two defaults: an
// empty vhost (as in `amqp://host/`, the spec's reading of a trailing slash) is "/", and without
// the URI's connection_timeout connecting gives up after 10 s. Throws uri_error (which never
// contains the password) for a malformed URI or an unsupported mechanism.
connection_options options_from_uri(std::string_view uri);

}  // namespace warren::cli
