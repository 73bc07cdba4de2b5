// bazel run -c opt //tools:null_broker -- --mode sink|firehose [--host 127.0.0.1] [--port 0]
//     [--body-size 16] [--frame-max 131072] [--heartbeat 0] [--seconds N]
//
// Prints "null_broker listening on HOST:PORT" (flushed, so that scripts can read an ephemeral
// port), serves until SIGINT/SIGTERM or --seconds, then prints what it counted.
#include <signal.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <string>
#include <string_view>

#include "tools/null_broker/server.h"

namespace {

namespace nb = warren::null_broker;

constexpr const char* usage =
    "usage: null_broker --mode sink|firehose [--host 127.0.0.1] [--port 0] [--body-size 16]\n"
    "                   [--frame-max 131072] [--heartbeat 0] [--seconds N]\n"
    "  sink      discard publishes (counted; confirms acked once per read)\n"
    "  firehose  flood every consumer with pre-encoded deliveries of --body-size octets\n";

template <class T>
bool parse_number(std::string_view s, T& out) {
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

struct cli {
  nb::server_options server;
  long seconds = 0;  // 0: until a signal
};

// Returns false (after printing why) on bad arguments.
bool parse(int argc, char** argv, cli& c) {
  bool have_mode = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "null_broker: %s needs a value\n", argv[i]);
      return false;
    }
    const std::string_view value = argv[++i];
    bool ok = true;
    if (flag == "--mode") {
      have_mode = true;
      if (value == "sink") {
        c.server.session.mode = nb::mode::sink;
      } else if (value == "firehose") {
        c.server.session.mode = nb::mode::firehose;
      } else {
        ok = false;
      }
    } else if (flag == "--host") {
      c.server.host = std::string(value);
    } else if (flag == "--port") {
      ok = parse_number(value, c.server.port);
    } else if (flag == "--body-size") {
      ok = parse_number(value, c.server.session.body_size) &&
           c.server.session.body_size <= (std::size_t{1} << 30);
    } else if (flag == "--frame-max") {
      ok = parse_number(value, c.server.session.frame_max) && c.server.session.frame_max >= 4096 &&
           c.server.session.frame_max <= (1u << 24);
    } else if (flag == "--heartbeat") {
      ok = parse_number(value, c.server.session.heartbeat);
    } else if (flag == "--seconds") {
      ok = parse_number(value, c.seconds) && c.seconds >= 0;
    } else {
      std::fprintf(stderr, "null_broker: unknown option %s\n%s", argv[i - 1], usage);
      return false;
    }
    if (!ok) {
      std::fprintf(stderr, "null_broker: bad value for %s: %s\n", argv[i - 1], argv[i]);
      return false;
    }
  }
  if (!have_mode) std::fprintf(stderr, "null_broker: --mode is required\n%s", usage);
  return have_mode;
}

}  // namespace

int main(int argc, char** argv) {
  cli c;
  if (!parse(argc, argv, c)) return 2;

  // Blocked before any thread starts, so every thread inherits the mask and only sigtimedwait
  // below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  try {
    nb::server server(c.server);
    std::printf("null_broker listening on %s:%u\n", c.server.host.c_str(), server.port());
    std::fflush(stdout);
    if (c.seconds > 0) {
      const timespec limit{c.seconds, 0};
      sigtimedwait(&stop_signals, nullptr, &limit);
    } else {
      int sig = 0;
      sigwait(&stop_signals, &sig);
    }
    server.stop();
    const nb::server_totals t = server.totals();
    std::printf(
        "null_broker: %llu connections, messages received %llu, messages sent %llu, "
        "confirms sent %llu, acks received %llu, octets received %llu\n",
        static_cast<unsigned long long>(t.connections),
        static_cast<unsigned long long>(t.sessions.published),
        static_cast<unsigned long long>(t.sessions.delivered),
        static_cast<unsigned long long>(t.sessions.acks_sent),
        static_cast<unsigned long long>(t.sessions.acks_received),
        static_cast<unsigned long long>(t.sessions.octets_received));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "null_broker: %s\n", e.what());
    return 1;
  }
}
