// The workload over warren's async engine (engine/async): one engine for the run (--io-threads
// I/O threads, --workers handler threads), one connection per producer and per consumer.
// Producers publish from their own thread with publish() (blocking only while there is no
// room: back-pressure, confirm window, connection.blocked); confirms are counted on the I/O
// thread. Consumer threads set up and wait (or, with --polling, loop on basic.get):
// deliveries are handled on the engine's workers, acks coalesce in the engine.
#include <atomic>
#include <cstdio>
#include <thread>

#include "codec/field_table.h"
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

// Handlers that sleep (-R, -L) or wait for the broker (-n commits) hold a worker: give each
// consumer channel one (unless --workers says otherwise) so that consumers do not queue behind
// each other.
unsigned workers_for(const perf_options& o) {
  const bool holds = o.consumer_rate > 0 || o.consumer_latency_us > 0 || o.consumer_tx_size > 0;
  if (o.workers != 0 || !holds) return o.workers;
  return std::max(std::thread::hardware_concurrency(), o.consumers * o.consumer_channels);
}

// The x-perf-stamp header of a delivery, when it has one (-B, --json-body).
std::optional<std::string_view> header_stamp_of(const codec::basic_properties& p) {
  if (!p.has_headers()) return std::nullopt;
  codec::field_view v;
  codec::errc ec = codec::errc::ok;
  if (!codec::find_in_table(p.headers, stamp_header, v, ec)) return std::nullopt;
  return v.as_string();
}

// Publish times of one channel's outstanding publishes, by sequence number, for the
// publish-to-confirm latency. The engine's confirm callback must fit std::function's inline
// storage (no allocation per publish), so it carries only this ring's address; the producer
// writes an entry before the publish that takes its sequence number, the I/O thread reads it
// at the confirm. Entries are reused (a ring of at least 4 x the window): each is a small
// seqlock, and a confirm whose entry was already reused is counted but not timed.
class confirm_ring {
 public:
  confirm_ring(stats_slot& slot, std::uint32_t window) : slot_(slot) {
    std::size_t n = 64;
    while (n < std::size_t{window} * 4 && n < (std::size_t{1} << 22)) n <<= 1;
    entries_ = std::make_unique<entry[]>(n);
    mask_ = n - 1;
  }

  // Before the publish that will take sequence number `seq` on this channel.
  void sent(std::uint64_t seq, std::int64_t sent_ns, std::uint32_t lag_us) noexcept {
    entry& e = entries_[seq & mask_];
    e.seq.store(0, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    e.sent_ns.store(sent_ns, std::memory_order_relaxed);
    e.lag_us.store(lag_us, std::memory_order_relaxed);
    e.seq.store(seq, std::memory_order_release);
  }

  // On the I/O thread, once per publish.
  void complete(const async::confirm_result& r) noexcept {
    const settlement s = settlement_of(r.what);
    slot_.settle(s);
    if (s == settlement::in_doubt) return;  // no answer from the broker: nothing to time
    const entry& e = entries_[r.sequence & mask_];
    const std::uint64_t before = e.seq.load(std::memory_order_acquire);
    const std::int64_t sent_ns = e.sent_ns.load(std::memory_order_relaxed);
    const std::uint32_t lag_us = e.lag_us.load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (before != r.sequence || e.seq.load(std::memory_order_relaxed) != before) return;
    const std::int64_t d = steady_now_ns() - sent_ns;
    const auto ns = static_cast<std::uint64_t>(d > 0 ? d : 0);
    slot_.confirm_latency.record(ns);
    slot_.confirm_latency_intended.record(ns + std::uint64_t{lag_us} * 1000);
  }

 private:
  struct entry {
    std::atomic<std::uint64_t> seq{0};
    std::atomic<std::int64_t> sent_ns{0};
    std::atomic<std::uint32_t> lag_us{0};
  };
  stats_slot& slot_;
  std::unique_ptr<entry[]> entries_;
  std::size_t mask_ = 0;
};

class async_workload final : public thread_workload {
 public:
  async_workload(const perf_options& o, const topology_plan& plan, run_stats& stats,
                 std::shared_ptr<const body_source> bodies,
                 std::shared_ptr<metrics::registry> registry)
      : thread_workload(o, plan, stats, std::move(bodies)),
        rings_(o.producers),
        lost_at_(std::make_unique<std::atomic<std::int64_t>[]>(o.producers)),
        engine_(async::engine_options{
            .io_threads = o.io_threads,
            .workers = workers_for(o),
            .rx_batching = {o.rx_batch_bytes, std::chrono::microseconds(o.rx_batch_wait_us)},
            .recovery = {.enabled = o.connection_recovery},
            .metrics = std::move(registry)}) {}
  ~async_workload() override { stop(milliseconds(0)); }

 private:
  // One line per recovery of `conn` (reason, time taken, endpoint), counted in `slot`.
  void watch_recovery(async::connection& conn, stats_slot& slot, const char* role, unsigned index) {
    const std::string who = options_.id.empty() ? std::string() : options_.id + ": ";
    conn.on_recovered([&slot, who, role, index](const async::recovery_report& r) {
      stats_slot::add(slot.recoveries);
      stats_slot::add(slot.republished, r.republished);
      std::fprintf(stdout,
                   "%srecovered %s %u: %s (%s); took %.0f ms, endpoint %s, %llu attempt(s), "
                   "%zu in doubt, %zu republished\n",
                   who.c_str(), role, index + 1,
                   std::string(protocol::to_string(r.trigger)).c_str(), r.reason.c_str(),
                   std::chrono::duration<double, std::milli>(r.took).count(), r.endpoint.c_str(),
                   static_cast<unsigned long long>(r.attempts), r.in_doubt, r.republished);
      std::fflush(stdout);
    });
    conn.on_recovery_failed([who, role, index](const protocol::close_reason& why) {
      std::fprintf(stdout, "%srecovery of %s %u failed: %s\n", who.c_str(), role, index + 1,
                   why.reply_text.c_str());
      std::fflush(stdout);
    });
  }

  void producer_main(unsigned index) override {
    const producer_plan& plan = plan_.producers[index];
    stats_slot& slot = producer_slot(index);
    auto conn = engine_.connect(
        connection_for(options_, plan.uri, connection_name(options_, "producer", index)));
    watch_recovery(*conn, slot, "producer", index);
    conn->on_recovery_started([this, index](const protocol::close_reason&) {
      lost_at_[index].store(steady_now_ns(), std::memory_order_relaxed);
    });
    std::vector<std::shared_ptr<async::channel>> channels;
    for (std::size_t c = 0; c < options_.producer_channels; ++c) {
      channels.push_back(conn->open_channel());
      channels.back()->on_return(
          [&slot](const async::returned_message&) { stats_slot::add(slot.returned); });
      if (options_.confirms()) {
        channels.back()->confirm_select(options_.confirm_window);
        rings_[index].push_back(std::make_unique<confirm_ring>(slot, options_.confirm_window));
      }
      if (options_.producer_tx_size > 0) channels.back()->tx_select();
    }
    ready();
    if (!wait_for_go()) return conn->close();
    try {
      publish_until_done(index, *conn, channels);
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

  void publish_until_done(unsigned index, async::connection& conn,
                          std::vector<std::shared_ptr<async::channel>>& channels) {
    const producer_plan& plan = plan_.producers[index];
    stats_slot& slot = producer_slot(index);
    auto stopping = [this] { return producers_stopping(); };
    publisher pub(options_, plan_, index, bodies_);
    sleep_unless(pub.start_delay(), stopping);
    pub.begin(clock::now());
    codec::basic_properties props;
    if (options_.persistent) props.set_delivery_mode(2);
    if (!pub.content_type().empty()) props.set_content_type(pub.content_type());
    // The header's stamp is rewritten in place for every publish.
    if (!pub.headers().empty()) props.set_headers(codec::table_view{pub.headers()});
    async::publish_options popts;
    popts.mandatory = options_.mandatory;
    // Small enough for std::function's inline storage: no allocation per publish.
    std::vector<async::confirm_callback> on_confirm;
    for (const auto& ring : rings_[index]) {
      on_confirm.emplace_back([r = ring.get()](const async::confirm_result& c) { r->complete(c); });
    }
    std::vector<std::uint64_t> next_sequence(channels.size(), 1);  // the engine's, from 1
    std::uint64_t recoveries_seen = 0;
    std::vector<std::uint32_t> uncommitted(channels.size(), 0);
    const std::uint32_t tx = options_.producer_tx_size;
    const std::uint64_t count = options_.producer_message_count;
    std::uint64_t sent = 0;
    for (std::size_t next = 0; count == 0 || sent < count; next = (next + 1) % channels.size()) {
      if (!pub.wait_turn(stopping)) break;
      async::channel& ch = *channels[next];
      const publisher::message m = pub.next(next);
      const async::confirm_callback none;
      const async::confirm_callback& cb = on_confirm.empty() ? none : on_confirm[next];
      if (!on_confirm.empty() && m.sent_ns != 0) {
        rings_[index][next]->sent(next_sequence[next], m.sent_ns, m.lag_us);
      }
      // try_publish first: the clock is read for a deadline only when there is no room.
      async::publish_status s =
          ch.try_publish(plan_.exchange, plan.routing_keys[next], props, m.body, popts, cb);
      if (s == async::publish_status::buffer_full || s == async::publish_status::window_full ||
          s == async::publish_status::blocked || s == async::publish_status::recovering) {
        do {
          s = ch.publish(plan_.exchange, plan.routing_keys[next], props, m.body,
                         clock::now() + milliseconds(100), popts, cb);
        } while (s == async::publish_status::timeout && !stopping());
      }
      if (s == async::publish_status::ok) {
        // The first publish after a loss: from the loss to here, this producer published nothing.
        if (const std::int64_t lost = lost_at_[index].load(std::memory_order_relaxed); lost != 0) {
          lost_at_[index].store(0, std::memory_order_relaxed);
          const std::int64_t d = steady_now_ns() - lost;
          stats_slot::add(slot.unpublished_ns, static_cast<std::uint64_t>(d > 0 ? d : 0));
        }
      }
      if (recoveries_seen != slot.recoveries.load(std::memory_order_relaxed)) {
        // A recovered channel numbers its publishes from 1 again (nothing is republished
        // unless asked): the latency ring follows. An entry taken by the wrong number is not
        // timed (confirm_ring::complete checks it).
        recoveries_seen = slot.recoveries.load(std::memory_order_relaxed);
        std::fill(next_sequence.begin(), next_sequence.end(), 1);
      }
      if (s != async::publish_status::ok) {
        if (s == async::publish_status::timeout) break;
        throw publish_failed(next, s);
      }
      // Counted once made (a refused publish was never counted): its confirm may have been
      // counted on the I/O thread already, which run_stats::snapshot() allows for.
      stats_slot::add_owned(slot.published);
      ++next_sequence[next];
      ++sent;
      if (tx > 0 && ++uncommitted[next] >= tx) {
        ch.tx_commit();
        uncommitted[next] = 0;
      }
    }
    if (count != 0 && sent >= count) producer_finished();
    // What was published is committed: the published count is what the broker got.
    for (std::size_t c = 0; c < channels.size(); ++c) {
      if (uncommitted[c] > 0 && conn.is_open()) channels[c]->tx_commit();
    }
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

  // Per channel: its consumer's handler runs one delivery at a time (concurrency 1), and the
  // consumer thread touches this state only while no handler runs (polling, or after cancel).
  struct channel_state {
    std::shared_ptr<async::channel> ch;
    std::string queue, tag;
    std::uint32_t unacked = 0, uncommitted = 0;
    std::optional<async::delivery> last;  // -A: the newest unsettled delivery
    rate_limiter limiter{0};
    std::optional<receiver> recv;
  };

  void consumer_main(unsigned index) override {
    const consumer_plan& plan = plan_.consumers[index];
    stats_slot& slot = consumer_slot(index);
    auto conn = engine_.connect(
        connection_for(options_, plan.uri, connection_name(options_, "consumer", index)));
    watch_recovery(*conn, slot, "consumer", index);
    const std::uint64_t count = options_.consumer_message_count;
    const unsigned n = options_.consumer_channels;
    std::atomic<std::uint64_t> received{0};
    std::atomic<bool> done{false};  // --exit-when reached
    std::atomic<std::int64_t> last_activity{steady_now_ns()};
    auto stopping = [this] { return consumers_stopping(); };
    std::vector<channel_state> channels(n);
    std::shared_ptr<async::channel> probe;  // --exit-when empty: passive declares
    // One delivery, from a consumer's handler or from basic.get.
    auto handle = [&, this](channel_state& cs, async::delivery& d) {
      // Past -D or the exit condition, or the backlog a stop drains from the mailbox: not part
      // of the run.
      if (stopping() || done.load(std::memory_order_relaxed) ||
          (count != 0 && received.load(std::memory_order_relaxed) >= count)) {
        return;
      }
      cs.recv->count(d.body(), header_stamp_of(d.properties()));
      last_activity.store(steady_now_ns(), std::memory_order_relaxed);
      received.fetch_add(1, std::memory_order_relaxed);
      settle(cs, d);
      if (options_.consumer_tx_size > 0 && ++cs.uncommitted >= options_.consumer_tx_size) {
        cs.ch->tx_commit();
        cs.uncommitted = 0;
      }
      if (cs.limiter.limited()) sleep_unless(cs.limiter.acquire(clock::now()), stopping);
      cs.recv->work();
    };
    try {
      for (std::size_t c = 0; c < n; ++c) {
        channel_state& cs = channels[c];
        cs.limiter = rate_limiter(options_.consumer_rate / static_cast<double>(n));
        cs.recv.emplace(options_, slot, tracker(index, c));
        cs.ch = conn->open_channel();
        if (options_.prefetch) cs.ch->basic_qos(0, options_.prefetch, false);
        if (options_.consumer_tx_size > 0) cs.ch->tx_select();
        cs.queue = plan.queues[c];
        if (cs.queue.empty()) {
          queue_declare_options q;
          q.exclusive = true;
          q.arguments = queue_arguments_table(options_);
          cs.queue = cs.ch->queue_declare("", q).queue;
          cs.ch->queue_bind(cs.queue, plan_.exchange, plan_.routing_key);
        }
        set_tracker_queue(index, c, cs.queue);
        if (options_.polling) continue;
        async::consumer_options copts;
        copts.no_ack = options_.auto_ack;
        copts.arguments = consumer_arguments_table(options_);
        cs.tag = cs.ch->basic_consume(
            cs.queue, [&, cs_ptr = &cs](async::delivery& d) { handle(*cs_ptr, d); }, copts);
      }
      ready();
      bool idle_clock = false;  // --exit-when counts idle time from the start of the run
      while (!stopping() && !done.load() && (count == 0 || received.load() < count)) {
        // Recovering is not closed: the consumer goes on once its connection is back.
        if (conn->state() == async::connection_state::closed) {
          throw run_error("connection closed: " + conn->close_reason().reply_text);
        }
        if (options_.polling) {
          for (channel_state& cs : channels) {
            std::optional<async::delivery> d;
            try {
              d = cs.ch->basic_get(cs.queue, options_.auto_ack);
            } catch (const recoverable_connection_error&) {
              if (conn->state() == async::connection_state::closed) throw;
              sleep_unless(milliseconds(20), stopping);  // recovering: basic.get waits for it
              continue;
            }
            if (d) handle(cs, *d);
            if (options_.polling_interval_ms > 0) {
              sleep_unless(milliseconds(options_.polling_interval_ms), stopping);
            }
          }
        } else {
          std::this_thread::sleep_for(milliseconds(20));
        }
        if (!idle_clock && started()) {
          last_activity.store(steady_now_ns());
          idle_clock = true;
        }
        if (options_.exit != exit_when::never && idle_clock &&
            steady_now_ns() - last_activity.load() > 1'000'000'000) {
          if (options_.exit == exit_when::idle || queues_empty(*conn, probe, channels)) {
            done.store(true);
          }
        }
      }
    } catch (...) {
      // The handlers use this frame's state: none may run once it is gone.
      conn->close();
      throw;
    }
    if (done.load() || (count != 0 && received.load() >= count)) consumer_finished();
    // Cancel first: the handlers in flight finish before the state they use goes away.
    for (channel_state& cs : channels) {
      if (cs.ch->is_open() && !cs.tag.empty()) cs.ch->basic_cancel(cs.tag);
    }
    // What was received is settled: the last multiple ack, the last commit.
    for (channel_state& cs : channels) {
      if (!cs.ch->is_open()) continue;
      if (cs.last) {
        if (options_.nack) {
          cs.last->nack(true, options_.requeue);
        } else {
          cs.last->ack(true);
        }
      }
      if (cs.uncommitted > 0) cs.ch->tx_commit();
    }
    conn->close();
  }

  // Acks (or nacks) one delivery, every -A deliveries at once when -A is given.
  void settle(channel_state& cs, async::delivery& d) {
    if (options_.auto_ack) return;
    const std::uint32_t multi = options_.multi_ack_every;
    if (multi <= 1) {
      if (options_.nack) {
        d.nack(false, options_.requeue);
      } else {
        d.ack();
      }
      return;
    }
    if (++cs.unacked >= multi) {
      if (options_.nack) {
        d.nack(true, options_.requeue);
      } else {
        d.ack(true);
      }
      cs.unacked = 0;
      cs.last.reset();
    } else {
      cs.last = d;
    }
  }

  // --exit-when empty: every queue of this consumer holds no message (a passive declare on a
  // channel of its own, so that a refusal cannot close a consuming channel).
  bool queues_empty(async::connection& conn, std::shared_ptr<async::channel>& probe,
                    const std::vector<channel_state>& channels) {
    if (!probe) probe = conn.open_channel();
    queue_declare_options passive;
    passive.passive = true;
    for (const channel_state& cs : channels) {
      if (probe->queue_declare(cs.queue, passive).message_count != 0) return false;
    }
    return true;
  }

  // Per producer, per channel (confirms only); kept until the engine is gone, so that no
  // confirm callback outlives its ring.
  std::vector<std::vector<std::unique_ptr<confirm_ring>>> rings_;
  // Per producer: when its connection was lost (steady ns), until its next publish is accepted.
  std::unique_ptr<std::atomic<std::int64_t>[]> lost_at_;
  async::engine engine_;
};

}  // namespace

std::unique_ptr<workload> make_async_workload(const perf_options& o, const topology_plan& plan,
                                              run_stats& stats,
                                              std::shared_ptr<const body_source> bodies,
                                              std::shared_ptr<metrics::registry> registry) {
  return std::make_unique<async_workload>(o, plan, stats, std::move(bodies), std::move(registry));
}

}  // namespace warren::perf
