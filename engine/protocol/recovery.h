// Automatic recovery of a connection, sans-I/O: whether a loss is recovered, when and where to
// reconnect, what to replay once connected and in which order, and the report of it all. Both
// faces drive it; it opens no socket, starts no thread and reads no clock (`now` is passed in).
//
// The parts, each usable alone:
//   - classify_loss(): what ended a connection (a transport failure, missed heartbeats, a write
//     deadline, the broker's connection.close, a refused login, or the client's own close), and
//     should_recover() for a policy;
//   - endpoint_list: the endpoints of a connection and where a connection starts among them
//     (in order, shuffled, round-robin per connection: the Java client's address list and
//     PerfTest's --connection-allocation);
//   - recovery_schedule: the attempts of one recovery: which endpoint, and when. After a loss the
//     next endpoint is tried at once (the lost one last); a delay (exponential backoff with
//     jitter) comes only between rounds that failed on every endpoint;
//   - replay_plan: what a recovered connection sends again, in order: every channel that was open
//     (same id), its qos (global and per consumer), confirm mode, tx mode and client flow; then the
//     recorded topology: exchanges, queues (a server-named queue gets a new name; the bindings and
//     consumers that named the old one follow it), bindings (queue and exchange-to-exchange),
//     consumers. A step that fails is reported and the others go on;
//   - recovery_report: what a recovery did, for the application's on_recovered hook.
//
// Late events: every attempt carries a number; an answer for an attempt that is no longer the
// current one (a connect that completes after it was given up, a frame of a dead connection) is
// refused by recovery_schedule::current(), so it never counts for the recovered connection.
//
// Threading: none; one thread at a time per object.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/protocol/channel_core.h"
#include "engine/protocol/connection_machine.h"
#include "engine/protocol/time.h"
#include "engine/protocol/topology.h"

namespace warren::protocol {

// What ended a connection, as far as recovery cares.
enum class recovery_trigger : std::uint8_t {
  none,               // the client closed it (or is closing it): never recovered
  transport,          // socket error or EOF
  missed_heartbeats,  // nothing from the broker for two heartbeat intervals
  write_deadline,     // the face gave up writing to a peer that stopped reading
  broker_close,       // connection.close from the broker: 320 (forced, node shutdown), 541
  refused_login,      // 403 / 530 at the handshake: recovered only when the policy asks
  fatal,              // anything else (a protocol error, 540, 402, ...): retrying repeats it
};
std::string_view to_string(recovery_trigger t) noexcept;

// `closed_by_client`: the face had begun its own close (connection::close), or the application
// closed it. A machine's close_reason says the rest: transport failures are 320 by the peer with
// "connection lost", missed heartbeats 320 by this side, a broker's close by the peer with its
// code, a refused login 403 (or 530 for a vhost the user may not open).
recovery_trigger classify_loss(const close_reason& why, bool closed_by_client) noexcept;

// How a face recovers a connection. Filled with designated initializers.
struct recovery_policy {
  bool enabled = true;
  // Backoff between failed rounds: initial_delay after the first, multiplied by `multiplier`
  // after each further one, at most max_delay; then `jitter` (0..1) takes a random fraction of up
  // to that much off, so that many clients do not come back in step. Never above max_delay.
  std::chrono::milliseconds initial_delay{100};
  std::chrono::milliseconds max_delay{2000};
  double multiplier = 2.0;
  double jitter = 0.5;
  // Connection attempts before giving up (on_recovery_failed); 0: forever.
  std::uint32_t max_attempts = 0;
  // Recover after the broker refused the login (403, 530): off, since retrying with the same
  // credentials usually repeats the refusal.
  bool on_refused_login = false;
  // Keep the encoded frames of unconfirmed publishes and publish them again on the recovered
  // channel, before any new publish (at-least-once: the broker may then hold a duplicate).
  // Off: they complete as in_doubt.
  bool republish = false;
};

bool should_recover(recovery_trigger t, const recovery_policy& p) noexcept;

// The bounds of the n-th backoff (n >= 1): [lowest, highest] in which the jittered delay falls.
std::pair<std::chrono::nanoseconds, std::chrono::nanoseconds> backoff_bounds(
    const recovery_policy& p, std::uint32_t n) noexcept;

// A small deterministic generator (splitmix64), so that a test seeds the jitter.
class recovery_random {
 public:
  explicit recovery_random(std::uint64_t seed) noexcept : state_(seed) {}
  std::uint64_t next() noexcept;
  // Uniform in [0, 1).
  double unit() noexcept;

 private:
  std::uint64_t state_;
};

// In engine/options.h, since connection_options names it.
using endpoint_allocation = warren::endpoint_allocation;

// The endpoints of one connection (host[:port] strings, as the face parses them) in the order
// this connection tries them.
class endpoint_list {
 public:
  // Empty `endpoints`: invalid (size() 0). `connection_index` counts connections of the same
  // engine (round_robin); `seed` orders a shuffled list.
  endpoint_list(std::vector<std::string> endpoints, endpoint_allocation a,
                std::uint64_t connection_index, std::uint64_t seed);
  std::size_t size() const noexcept { return order_.size(); }
  // The i-th endpoint in this connection's order (i < size()).
  const std::string& at(std::size_t i) const noexcept { return order_[i]; }
  const std::vector<std::string>& order() const noexcept { return order_; }

 private:
  std::vector<std::string> order_;
};

// The attempts of one recovery. Begins at the loss: round 1 tries every endpoint once, at once,
// starting after the endpoint that was lost (which comes last); each later round waits its
// backoff first. max_attempts counts attempts over all rounds.
class recovery_schedule {
 public:
  struct attempt {
    std::uint64_t number = 0;  // 1, 2, ...: current() tells whether it is still the one
    std::size_t endpoint = 0;  // index into the endpoint_list
    time_point at{};           // not before this
    std::uint32_t round = 1;
  };

  recovery_schedule(const recovery_policy& p, std::size_t endpoints, std::size_t lost_endpoint,
                    time_point lost_at, std::uint64_t seed);

  // The next attempt, or nullopt once max_attempts were made. Call it once at the start and after
  // each failed attempt (failed() first).
  std::optional<attempt> next();
  // The current attempt failed at `now` (its `at` is where the next round's backoff counts from).
  void failed(std::uint64_t number, time_point now);
  // The current attempt connected. False for an attempt that is not the current one (a late
  // answer): the face drops that connection.
  bool succeeded(std::uint64_t number);
  bool current(std::uint64_t number) const noexcept { return number == number_ && !done_; }
  std::uint64_t attempts() const noexcept { return number_; }
  time_point lost_at() const noexcept { return lost_at_; }

 private:
  recovery_policy policy_;
  std::size_t endpoints_;
  std::size_t first_;  // the endpoint each round starts at
  time_point lost_at_;
  time_point failed_at_;
  recovery_random random_;
  std::uint64_t number_ = 0;
  std::size_t in_round_ = 0;  // attempts made in the current round
  std::uint32_t round_ = 1;
  bool done_ = false;
};

// One channel of the lost connection, as it is to be reopened.
struct channel_replay {
  std::uint16_t id = 0;
  channel_settings settings;
};

struct replay_step {
  enum class kind : std::uint8_t {
    channel_open,
    qos_global,
    qos_per_consumer,
    confirm_select,
    tx_select,
    client_flow,  // channel.flow(active=false) again
    exchange,
    queue,
    binding,
    consumer,
  };
  kind what = kind::channel_open;
  std::uint16_t channel = 0;  // the channel steps' and a consumer's channel; 0 for the others
  std::size_t index = 0;      // into the plan's channels() or the topology kind's records
};
std::string_view to_string(replay_step::kind k) noexcept;

struct recovery_failure {
  std::string entity;  // e.g. "queue 'orders'", "consumer 'ctag-1' on channel 2"
  std::uint16_t reply_code = 0;
  std::string reply_text;
};

struct recovery_report {
  recovery_trigger trigger = recovery_trigger::none;
  std::string reason;                // the close reason's text
  std::chrono::nanoseconds took{0};  // from the loss to the replay's end
  std::string endpoint;              // host[:port] reached
  std::uint64_t attempts = 0;
  std::size_t channels = 0, exchanges = 0, queues = 0, bindings = 0, consumers = 0;  // replayed
  std::vector<std::pair<std::string, std::string>> renamed_queues;                   // old, new
  std::vector<recovery_failure> failures;
  std::size_t republished = 0;  // publishes sent again (recovery_policy::republish)
  std::size_t in_doubt = 0;     // publishes reported in doubt at the loss
};

// What a recovered connection replays, in order (see the header comment). The face runs steps()
// in order, reading each step's record from the plan (names already follow renames), and reports
// each step's outcome; the plan keeps the counts, renames and failures for the report.
class replay_plan {
 public:
  // `topology` is the record at the loss; `filter` leaves entities out (an empty predicate keeps
  // its kind). Consumers on a channel not in `channels` are left out (their channel is gone).
  replay_plan(std::vector<channel_replay> channels, const topology_record& topology,
              const topology_filter& filter = {});

  const std::vector<replay_step>& steps() const noexcept { return steps_; }
  const channel_replay& channel(const replay_step& s) const { return channels_[s.index]; }
  const exchange_record& exchange(const replay_step& s) const { return topo_.exchanges[s.index]; }
  const queue_record& queue(const replay_step& s) const { return topo_.queues[s.index]; }
  const binding_record& binding(const replay_step& s) const { return topo_.bindings[s.index]; }
  const consumer_record& consumer(const replay_step& s) const { return topo_.consumers[s.index]; }
  // The name to declare a queue under: "" for a server-named one (the broker names it again).
  std::string_view declare_name(const replay_step& s) const;

  // The step went through. For a queue, `broker_name` is the name the broker answered with: for a
  // server-named queue that differs, the bindings and consumers still to replay follow it, and
  // the rename is reported.
  void succeeded(const replay_step& s, std::string_view broker_name = {});
  // The step failed (the broker closed the channel with this code, or it could not be sent).
  void failed(const replay_step& s, std::uint16_t reply_code, std::string_view reply_text);

  // Counts, renames and failures so far (the face adds time, endpoint, trigger, attempts).
  const recovery_report& report() const noexcept { return report_; }
  recovery_report& report() noexcept { return report_; }
  // How the step names its entity, for failures and logs.
  std::string describe(const replay_step& s) const;

 private:
  std::vector<channel_replay> channels_;
  topology_record topo_;
  std::vector<replay_step> steps_;
  recovery_report report_;
};

}  // namespace warren::protocol
