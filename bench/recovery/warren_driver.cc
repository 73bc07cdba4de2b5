// Recovery benchmark driver for warren's async engine (engine/async/engine.h), run by
// bench/recovery beside the Java and Node drivers of bench/peers, speaking the same contract
// (bench/recovery/README.md, "Driver contract"): persistent messages with confirms (window
// --window) to one durable queue, a sequence number in every body, JSON event lines on standard
// output, commands ("fault EPOCH_MS", "stop") on standard input, and a per-publish trace.
//
//   warren_driver --uris URI[,URI...] --queue NAME [--queue-type quorum|classic] [--duration S]
//                 [--window N] [--size B] [--drain S] [--trace FILE]
//                 [--recovery default|off|on] [--republish] [--recovery-interval-ms MS]
//
// What the engine does is measured as it is, with the bookkeeping an application would write:
// each publish's confirm_callback records its outcome. Recovery is the engine's business, so the
// driver never reconnects by itself: when the connection is lost and the engine does not recover,
// the driver stops publishing, reports, and exits with status 1 (as an application whose broker
// went away would). The recovery flags map to the engine's options in connection_options_for();
// this engine has none, so they are refused with exit status 2 rather than silently ignored.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "codec/content.h"
#include "codec/field_table.h"
#include "engine/async/engine.h"
#include "engine/options.h"

namespace {

using std::chrono::steady_clock;

// What the application was told about one publish (the trace's names; README, "Trace file").
enum outcome : std::uint8_t {
  none,             // nothing yet: no callback ran
  ack,              // confirm_result::outcome::ack
  nack,             // confirm_result::outcome::nack
  fail,             // the publish was refused (closed, too_large): not sent
  timeout,          // confirm_result::outcome::timeout (no confirm timeout is set: not expected)
  in_doubt,  // confirm_result::outcome::in_doubt: sent, no verdict
  channel_closed,   // confirm_result::outcome::channel_closed: sent, no verdict
};
constexpr const char* outcome_names[] = {
    "none", "ack", "nack", "fail", "timeout", "in_doubt", "channel_closed"};
constexpr int outcome_count = 7;

struct driver_options {
  std::vector<std::string> uris;
  std::string queue;
  std::string queue_type = "quorum";
  double duration_s = 20;
  std::uint32_t window = 500;
  std::uint32_t size = 100;
  double drain_s = 5;
  std::string trace;
  // Recovery, as the harness asks for it; mapped to engine options in connection_options_for().
  std::string recovery = "default";  // default: whatever the engine does unless told
  bool republish = false;
  std::optional<long> recovery_interval_ms;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "warren_driver: %s\n"
               "usage: warren_driver --uris URI[,URI...] --queue NAME [--queue-type "
               "quorum|classic] [--duration S] [--window N] [--size B] [--drain S] [--trace FILE] "
               "[--recovery default|off|on] [--republish] [--recovery-interval-ms MS]\n",
               why.c_str());
  std::exit(2);
}

double number(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(d) || d < 0) {
    usage(flag + " takes a non-negative number, not '" + v + "'");
  }
  return d;
}

driver_options parse_args(int argc, char** argv) {
  driver_options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--republish") {
      o.republish = true;
      continue;
    }
    if (i + 1 >= argc) usage("missing value of " + a);
    const std::string v = argv[++i];
    if (a == "--uris") {
      std::stringstream ss(v);
      for (std::string u; std::getline(ss, u, ',');) {
        if (!u.empty()) o.uris.push_back(u);
      }
    } else if (a == "--queue") {
      o.queue = v;
    } else if (a == "--queue-type") {
      if (v != "quorum" && v != "classic") usage("--queue-type quorum|classic");
      o.queue_type = v;
    } else if (a == "--duration") {
      o.duration_s = number(a, v);
    } else if (a == "--window") {
      o.window = static_cast<std::uint32_t>(number(a, v));
    } else if (a == "--size") {
      o.size = static_cast<std::uint32_t>(number(a, v));
    } else if (a == "--drain") {
      o.drain_s = number(a, v);
    } else if (a == "--trace") {
      o.trace = v;
    } else if (a == "--recovery") {
      if (v != "default" && v != "off" && v != "on") usage("--recovery default|off|on");
      o.recovery = v;
    } else if (a == "--recovery-interval-ms") {
      o.recovery_interval_ms = static_cast<long>(number(a, v));
    } else {
      usage("unknown option " + a);
    }
  }
  if (o.uris.empty() || o.queue.empty()) usage("--uris and --queue are required");
  if (o.size < 20) usage("--size must be at least 20 (the sequence number is at octets 12-19)");
  if (o.window < 1) usage("--window must be at least 1");
  return o;
}

// The engine's options for the harness's flags: the one place to change when the engine gains
// recovery (a list of endpoints, recovery on or off, its initial delay, republish). This engine
// connects to one host and never recovers, so a request for recovery is refused (exit 2) instead
// of producing a row that looks like recovery was measured; "default" and "off" both mean what
// the engine does by itself, i.e. nothing.
warren::connection_options connection_options_for(const driver_options& o) {
  if (o.recovery == "on" || o.republish || o.recovery_interval_ms) {
    usage(
        "this engine has no recovery (engine/async/engine.h): --recovery on, --republish and "
        "--recovery-interval-ms have nothing to map to");
  }
  warren::connection_options c = warren::connection_options::from_uri(o.uris.front());
  c.connect_timeout = warren::seconds_f(10);
  c.heartbeat = 10;  // dead peers are found by the socket here (kill -9 resets it)
  return c;
}

// Wall-clock epoch milliseconds with sub-millisecond resolution, from a steady clock.
class wall_clock {
 public:
  wall_clock()
      : base_wall_ms_(std::chrono::duration<double, std::milli>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count()),
        base_(steady_clock::now()) {}
  double now_ms() const {
    return base_wall_ms_ +
           std::chrono::duration<double, std::milli>(steady_clock::now() - base_).count();
  }

 private:
  double base_wall_ms_;
  steady_clock::time_point base_;
};

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string ms(double t) {
  if (std::isnan(t)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", t);
  return buf;
}

std::mutex emit_mutex;
void emit(const std::string& line) {
  std::lock_guard<std::mutex> lock(emit_mutex);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

// One publish: the publisher writes pub_t before publishing; the callback (an I/O thread) writes
// out_t, then the outcome with release; the report reads the outcome with acquire.
struct record {
  double pub_t = 0;
  double out_t = 0;
  std::atomic<std::uint8_t> what{none};
};

class driver {
 public:
  explicit driver(driver_options o) : o_(std::move(o)) {
    // Room for the run at a rate far above what one channel with confirms reaches here
    // (~10-20k/s); a run that fills it stops publishing and says so in the summary.
    const double cap = std::max(1.0, o_.duration_s) * 200000.0;
    records_ = std::make_unique<record[]>(static_cast<std::size_t>(cap) + 1);
    capacity_ = static_cast<std::uint64_t>(cap);
  }

  int run() {
    const warren::connection_options copts = connection_options_for(o_);
    warren::async::engine eng(warren::async::engine_options{.io_threads = 1, .workers = 1});
    std::shared_ptr<warren::async::connection> conn = eng.connect(copts);
    const std::string port = copts.host.substr(copts.host.rfind(':') + 1);
    emit("{\"event\":\"connected\",\"t\":" + ms(clock_.now_ms()) + ",\"port\":" + port +
         ",\"client\":\"warren\",\"version\":" + json_string("warren async engine (no recovery)") +
         "}");
    conn->on_closed([this](const warren::protocol::close_reason& why) {
      lost_.store(true, std::memory_order_release);
      emit("{\"event\":\"lost\",\"t\":" + ms(clock_.now_ms()) + ",\"initiated_by_application\":" +
           (closing_.load(std::memory_order_acquire) ? "true" : "false") + ",\"reason\":" +
           json_string(std::to_string(why.reply_code) + " " + why.reply_text) + "}");
    });

    std::shared_ptr<warren::async::channel> ch = conn->open_channel();
    ch->confirm_select(o_.window);
    warren::queue_declare_options q{.durable = true, .auto_delete = false};
    if (o_.queue_type == "quorum")
      q.arguments.set("x-queue-type", warren::codec::field_value::long_string("quorum"));
    ch->queue_declare(o_.queue, q);

    std::thread commands([this] { read_commands(); });
    commands.detach();  // blocked in a read of standard input; the process ends without it

    const double start = clock_.now_ms();
    const double end = start + o_.duration_s * 1000;
    emit("{\"event\":\"ready\",\"t\":" + ms(start) + "}");
    const int rc = publish_until(*ch, end);

    // Drain: no new publishes; wait (bounded) for every outstanding publish to complete.
    ch->wait_for_confirms(steady_clock::now() + std::chrono::duration_cast<steady_clock::duration>(
                                                    std::chrono::duration<double>(o_.drain_s)));
    // The outcomes as the engine reported them by the end of the drain: the close below would
    // complete what is still outstanding as in doubt, which is this driver's doing, not
    // the engine's answer to the fault (the Java driver reports those as never reported too).
    const double stop_t = clock_.now_ms();
    report(stop_t);
    closing_.store(true, std::memory_order_release);
    try {
      conn->close();
    } catch (const std::exception&) {
      // Best effort: the broker may be gone; the summary above is what matters.
    }
    return rc;
  }

 private:
  // Publishes until `end`, a stop command, or a publish the engine refuses as closed. Returns
  // the exit status: 1 when the run ended because the connection or channel closed.
  int publish_until(warren::async::channel& ch, double end) {
    warren::codec::basic_properties props;
    props.set_delivery_mode(warren::codec::basic_properties::persistent);
    std::string body(o_.size, '\0');
    while (!stop_.load(std::memory_order_acquire) && clock_.now_ms() < end) {
      if (published_ >= capacity_) {
        capacity_reached_ = true;
        break;
      }
      const std::uint64_t seq = published_ + 1;
      record& r = records_[seq];
      // Octets 0-7 publish time (epoch microseconds), 8-11 producer number 0, 12-19 the
      // sequence number, all big-endian; the rest zeros.
      put_be64(body.data(), static_cast<std::uint64_t>(std::llround(clock_.now_ms() * 1000)));
      put_be64(body.data() + 12, seq);
      warren::async::publish_status s = warren::async::publish_status::timeout;
      while (!stop_.load(std::memory_order_acquire) && clock_.now_ms() < end) {
        // Short deadlines, so that a stop or the end of the run is seen while the window is full.
        s = ch.publish("", o_.queue, props, body,
                       steady_clock::now() + std::chrono::milliseconds(100), {},
                       [this, seq](const warren::async::confirm_result& c) { settle(seq, c); });
        if (s == warren::async::publish_status::ok || s == warren::async::publish_status::closed ||
            s == warren::async::publish_status::too_large) {
          break;
        }
      }
      // The publish counts as made when the engine took it, not when the driver began waiting
      // for room in the window (the callback may already have run: it does not read pub_t).
      r.pub_t = clock_.now_ms();
      if (s == warren::async::publish_status::ok) {
        published_ = seq;
        continue;
      }
      if (s == warren::async::publish_status::closed ||
          s == warren::async::publish_status::too_large) {
        // The engine said it was not sent: recorded as failed, and the run ends (no recovery).
        published_ = seq;
        r.out_t = r.pub_t;
        r.what.store(fail, std::memory_order_release);
        refused_ = std::string(warren::async::to_string(s));
        return 1;
      }
      // Stopped or out of time while waiting for room: that publish was never made.
    }
    return lost_.load(std::memory_order_acquire) ? 1 : 0;
  }

  static void put_be64(char* p, std::uint64_t v) {
    for (int i = 7; i >= 0; --i) {
      p[i] = static_cast<char>(v & 0xff);
      v >>= 8;
    }
  }

  // The confirm callback, on the engine's I/O thread.
  void settle(std::uint64_t seq, const warren::async::confirm_result& c) {
    record& r = records_[seq];
    if (r.what.load(std::memory_order_relaxed) != none) return;
    r.out_t = clock_.now_ms();
    std::uint8_t w = fail;
    switch (c.what) {
      case warren::async::confirm_result::outcome::ack:
        w = ack;
        break;
      case warren::async::confirm_result::outcome::nack:
        w = nack;
        break;
      case warren::async::confirm_result::outcome::timeout:
        w = timeout;
        break;
      case warren::async::confirm_result::outcome::in_doubt:
        w = in_doubt;
        break;
      case warren::async::confirm_result::outcome::channel_closed:
        w = channel_closed;
        break;
    }
    r.what.store(w, std::memory_order_release);
  }

  void read_commands() {
    for (std::string line; std::getline(std::cin, line);) {
      std::istringstream in(line);
      std::string word;
      in >> word;
      if (word == "fault") {
        double t = NAN;
        if (in >> t) {
          fault_t_.store(t, std::memory_order_release);
          emit("{\"event\":\"fault\",\"t\":" + ms(t) + "}");
          continue;
        }
      } else if (word == "stop") {
        break;
      } else if (word.empty()) {
        continue;
      }
      std::fprintf(stderr, "warren_driver: unknown command: %s\n", line.c_str());
    }
    // End of input means stop as well: the harness has gone.
    stop_.store(true, std::memory_order_release);
  }

  void report(double stop_t) {
    std::uint64_t count[outcome_count] = {};
    std::uint64_t at_fault[outcome_count] = {};
    const double fault_t = fault_t_.load(std::memory_order_acquire);
    double first_confirm_after = NAN;
    double first_publish_after = NAN;
    std::string trace;
    for (std::uint64_t s = 1; s <= published_; ++s) {
      const record& r = records_[s];
      const std::uint8_t w = r.what.load(std::memory_order_acquire);
      ++count[w];
      if (!o_.trace.empty()) {
        trace += "[" + std::to_string(s) + "," + ms(r.pub_t) + ",\"" + outcome_names[w] + "\"," +
                 (w == none ? std::string("null") : ms(r.out_t)) + "]\n";
      }
      if (std::isnan(fault_t)) continue;
      if (r.pub_t <= fault_t && (w == none || r.out_t >= fault_t)) ++at_fault[w];
      if (r.pub_t > fault_t && w != fail) {
        if (std::isnan(first_publish_after)) first_publish_after = r.pub_t;
        if (w == ack && (std::isnan(first_confirm_after) || r.out_t < first_confirm_after)) {
          first_confirm_after = r.out_t;
        }
      }
    }
    auto by_outcome = [](const std::uint64_t* n) {
      std::string out = "{";
      std::uint64_t total = 0;
      for (int i = 0; i < outcome_count; ++i) {
        out += std::string("\"") + outcome_names[i] + "\":" + std::to_string(n[i]) + ",";
        total += n[i];
      }
      return out + "\"total\":" + std::to_string(total) + "}";
    };
    emit(
        "{\"event\":\"summary\",\"client\":\"warren\",\"published\":" + std::to_string(published_) +
        ",\"outcomes\":" + by_outcome(count) + ",\"publish_refused\":" + json_string(refused_) +
        ",\"recoveries\":0,\"capacity_reached\":" + (capacity_reached_ ? "true" : "false") +
        ",\"fault_t\":" + ms(fault_t) + ",\"first_publish_after_fault_t\":" +
        ms(first_publish_after) + ",\"first_confirm_after_fault_t\":" + ms(first_confirm_after) +
        ",\"unconfirmed_at_fault\":" + by_outcome(at_fault) + ",\"stop_t\":" + ms(stop_t) + "}");
    if (o_.trace.empty()) return;
    std::FILE* f = std::fopen(o_.trace.c_str(), "w");
    if (f == nullptr || std::fwrite(trace.data(), 1, trace.size(), f) != trace.size() ||
        std::fclose(f) != 0) {
      std::fprintf(stderr, "warren_driver: cannot write the trace %s: %s\n", o_.trace.c_str(),
                   std::strerror(errno));
    }
  }

  driver_options o_;
  wall_clock clock_;
  std::unique_ptr<record[]> records_;
  std::uint64_t capacity_ = 0;
  std::uint64_t published_ = 0;  // the publisher thread's; read by report() after it ended
  bool capacity_reached_ = false;
  std::string refused_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> lost_{false};
  std::atomic<bool> closing_{false};
  std::atomic<double> fault_t_{NAN};
};

}  // namespace

int main(int argc, char** argv) {
  driver_options o = parse_args(argc, argv);
  const wall_clock clock;
  int rc = 0;
  try {
    rc = driver(std::move(o)).run();
  } catch (const std::exception& e) {
    emit("{\"event\":\"error\",\"t\":" + ms(clock.now_ms()) + ",\"what\":" + json_string(e.what()) +
         "}");
    rc = 1;
  }
  std::fflush(stdout);
  // The command reader may still be blocked reading standard input: end without joining it.
  std::_Exit(rc);
}
