// The workload over warren's async engine (engine/async): one engine for the run (--io-threads
// I/O threads, --workers handler threads), one connection per producer and per consumer.
// Producers publish from their own thread with publish() (blocking only while there is no
// room: back-pressure, confirm window, connection.blocked); confirms are counted on the I/O
// thread. Consumer threads only set up and wait: deliveries are handled on the engine's
// workers, acks coalesce in the engine.
#include <thread>

#include "engine/async/engine.h"
#include "tools/perf/confirm_outcome.h"
#include "tools/perf/rate_limiter.h"
#include "tools/perf/thread_workload.h"

namespace warren::perf {
namespace {

using std::chrono::milliseconds;
using clock = std::chrono::steady_clock;

// Why `ch` cannot publish: its own error, else (once the connection has closed) the
// connection's close reason, else just that it is closed.
std::string channel_error(const async::channel& ch, const async::connection& conn,
                          std::string_view what) {
  if (std::exception_ptr e = ch.error()) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      return std::string(what) + ": " + x.what();
    }
  }
  const protocol::close_reason why = conn.close_reason();
  if (!why.reply_text.empty()) {
    return std::string(what) + ": " + std::to_string(why.reply_code) + " " + why.reply_text;
  }
  return std::string(what) + ": channel closed";
}

// A publish the engine did not accept (closed, too_large): the producer's error is worded once
// the connection is closed, when its reason is known.
struct publish_failed : std::runtime_error {
  publish_failed(std::size_t c, async::publish_status s)
      : std::runtime_error("publish failed"), channel(c), status(s) {}
  std::size_t channel;
  async::publish_status status;
};

// A consume rate limit sleeps in the handler, holding a worker: give each consumer channel one
// (unless --workers says otherwise) so that limited consumers do not queue behind each other.
unsigned workers_for(const perf_options& o) {
  if (o.workers != 0 || o.consumer_rate <= 0) return o.workers;
  return std::max(std::thread::hardware_concurrency(), o.consumers * o.consumer_channels);
}

class async_workload final : public thread_workload {
 public:
  async_workload(const perf_options& o, const topology_plan& plan, run_stats& stats)
      : thread_workload(o, plan, stats),
        engine_(async::engine_options{
            .io_threads = o.io_threads,
            .workers = workers_for(o),
            .rx_batching = {o.rx_batch_bytes, std::chrono::microseconds(o.rx_batch_wait_us)}}) {}
  ~async_workload() override { stop(milliseconds(0)); }

 private:
  void producer_main(unsigned index) override {
    const producer_plan& plan = plan_.producers[index];
    stats_slot& slot = producer_slot(index);
    auto conn = engine_.connect(
        connection_for(options_, plan.uri, "perf-producer-" + std::to_string(index + 1)));
    std::vector<std::shared_ptr<async::channel>> channels;
    for (std::size_t c = 0; c < options_.producer_channels; ++c) {
      channels.push_back(conn->open_channel());
      channels.back()->on_return(
          [&slot](const async::returned_message&) { stats_slot::add(slot.returned); });
      if (options_.confirms()) channels.back()->confirm_select(options_.confirm_window);
    }
    ready();
    if (!wait_for_go()) return conn->close();
    try {
      publish_until_done(index, channels);
    } catch (const publish_failed& e) {
      conn->close();
      throw run_error(channel_error(*channels[e.channel], *conn,
                                    "publish " + std::string(async::to_string(e.status))));
    } catch (...) {
      // Outstanding confirms complete (in doubt) inside close(): counted before this producer
      // is reported finished, so the summary has an outcome for every publish.
      conn->close();
      throw;
    }
    conn->close();
  }

  void publish_until_done(unsigned index, std::vector<std::shared_ptr<async::channel>>& channels) {
    const producer_plan& plan = plan_.producers[index];
    stats_slot& slot = producer_slot(index);
    codec::basic_properties props;
    if (options_.persistent) props.delivery_mode = 2;
    async::publish_options popts;
    popts.mandatory = options_.mandatory;
    // Small enough for std::function's inline storage: no allocation per publish.
    auto on_confirm = [&slot](const async::confirm_result& r) {
      slot.settle(settlement_of(r.what));
    };
    std::string body(static_cast<std::size_t>(options_.message_size), '\0');
    // The null broker's sink discards every body: stamping would only measure the clock.
    const bool stamp = options_.mode != run_mode::sink;
    rate_limiter limiter(options_.producer_rate);
    const std::uint64_t count = options_.producer_message_count;
    auto stopping = [this] { return producers_stopping(); };
    std::uint64_t sent = 0;
    for (std::size_t next = 0; !stopping() && (count == 0 || sent < count);
         next = (next + 1) % channels.size()) {
      if (limiter.limited()) sleep_unless(limiter.acquire(clock::now()), stopping);
      async::channel& ch = *channels[next];
      if (stamp) stamp_body(body, index, steady_now_ns());
      // Counted first: a confirm may be counted on the I/O thread before publish() returns.
      stats_slot::add_owned(slot.published);
      // try_publish first: the clock is read for a deadline only when there is no room.
      async::publish_status s =
          ch.try_publish(plan_.exchange, plan.routing_keys[next], props, body, popts, on_confirm);
      if (s == async::publish_status::buffer_full || s == async::publish_status::window_full ||
          s == async::publish_status::blocked) {
        do {
          s = ch.publish(plan_.exchange, plan.routing_keys[next], props, body,
                         clock::now() + milliseconds(100), popts, on_confirm);
        } while (s == async::publish_status::timeout && !stopping());
      }
      if (s != async::publish_status::ok) {
        stats_slot::add_owned(slot.published, -1);
        if (s == async::publish_status::timeout) break;
        throw publish_failed(next, s);
      }
      ++sent;
    }
    if (count != 0 && sent >= count) producer_finished();
    if (options_.confirms()) {
      // Until every confirm came (while the run goes on), or the stop's grace ends.
      for (auto& ch : channels) {
        while (!ch->wait_for_confirms(clock::now() + milliseconds(50))) {
          if (stopping()) {
            ch->wait_for_confirms(clock::now() + confirm_grace());
            break;
          }
        }
      }
    }
  }

  void consumer_main(unsigned index) override {
    const consumer_plan& plan = plan_.consumers[index];
    stats_slot& slot = consumer_slot(index);
    auto conn = engine_.connect(
        connection_for(options_, plan.uri, "perf-consumer-" + std::to_string(index + 1)));
    const bool timestamps = options_.timestamps();
    const std::uint64_t count = options_.consumer_message_count;
    const std::uint32_t multi = options_.multi_ack_every;
    const unsigned n = options_.consumer_channels;
    std::atomic<std::uint64_t> received{0};
    auto stopping = [this] { return consumers_stopping(); };
    std::vector<channel_state> channels(n);
    try {
      consume(*conn, plan, channels, [&](channel_state& cs) {
        return [&, this](async::delivery& d) {
          // Past -D, or the backlog a stop drains from the mailbox: not part of the run.
          if (stopping() || (count != 0 && received.load(std::memory_order_relaxed) >= count)) {
            return;
          }
          count_received(slot, d.body(), timestamps);
          received.fetch_add(1, std::memory_order_relaxed);
          if (!options_.auto_ack) {
            if (multi <= 1) {
              d.ack();
            } else if (++cs.unacked >= multi) {
              d.ack(true);
              cs.unacked = 0;
            }
          }
          if (cs.limiter.limited()) sleep_unless(cs.limiter.acquire(clock::now()), stopping);
        };
      });
      ready();
      while (!stopping() && (count == 0 || received.load() < count)) {
        if (!conn->is_open()) {
          throw run_error("connection closed: " + conn->close_reason().reply_text);
        }
        std::this_thread::sleep_for(milliseconds(20));
      }
    } catch (...) {
      // The handlers use this frame's state: none may run once it is gone.
      conn->close();
      throw;
    }
    if (count != 0 && received.load() >= count) consumer_finished();
    // Cancel first: the handlers in flight finish before the state they use goes away.
    for (channel_state& cs : channels) {
      if (cs.ch->is_open()) cs.ch->basic_cancel(cs.tag);
    }
    conn->close();
  }

  // Per channel: its consumer's handler runs one delivery at a time (concurrency 1), so this
  // state is never touched by two workers at once.
  struct channel_state {
    std::shared_ptr<async::channel> ch;
    std::string tag;
    std::uint32_t unacked = 0;
    rate_limiter limiter{0};
  };

  // Opens the consumer's channels, declares and binds its own queues, and starts consuming
  // with the handler make_handler(channel_state&) returns.
  template <class MakeHandler>
  void consume(async::connection& conn, const consumer_plan& plan,
               std::vector<channel_state>& channels, MakeHandler make_handler) {
    const std::size_t n = channels.size();
    for (std::size_t c = 0; c < n; ++c) {
      channel_state& cs = channels[c];
      cs.limiter = rate_limiter(options_.consumer_rate / static_cast<double>(n));
      cs.ch = conn.open_channel();
      if (options_.prefetch) cs.ch->basic_qos(0, options_.prefetch, false);
      std::string queue = plan.queues[c];
      if (queue.empty()) {
        queue_declare_options q;
        q.exclusive = true;
        q.arguments = queue_arguments_table(options_);
        queue = cs.ch->queue_declare("", q).queue;
        cs.ch->queue_bind(queue, plan_.exchange, plan_.routing_key);
      }
      async::consumer_options copts;
      copts.no_ack = options_.auto_ack;
      cs.tag = cs.ch->basic_consume(queue, make_handler(cs), copts);
    }
  }

  async::engine engine_;
};

}  // namespace

std::unique_ptr<workload> make_async_workload(const perf_options& o, const topology_plan& plan,
                                              run_stats& stats) {
  return std::make_unique<async_workload>(o, plan, stats);
}

}  // namespace warren::perf
