// The workload over warren's blocking API (engine/client): one connection and one thread per
// producer and per consumer, since a blocking connection belongs to one thread. Confirms,
// returns and deliveries are handled inside drain_events() on that same thread.
#include <map>
#include <thread>

#include "engine/client/connection.h"
#include "tools/perf/rate_limiter.h"
#include "tools/perf/thread_workload.h"

namespace warren::perf {
namespace {

using std::chrono::milliseconds;
using clock = std::chrono::steady_clock;

// Reads whatever has arrived (confirms, returns, deliveries) for up to `wait`.
void pump(connection& conn, std::chrono::duration<double> wait) {
  try {
    conn.drain_events(wait);
  } catch (const amqp_timeout&) {
    // Nothing arrived in time: not an error here.
  }
}

class blocking_workload final : public thread_workload {
 public:
  using thread_workload::thread_workload;
  ~blocking_workload() override { stop(milliseconds(0)); }

 private:
  struct sent_times {
    std::int64_t sent_ns = 0;  // 0: not measured (the null broker's sink)
    std::uint32_t lag_us = 0;
  };

  struct producer_channel {
    channel* ch = nullptr;
    std::string routing_key;
    std::map<std::uint64_t, sent_times> unconfirmed;  // by publish sequence number
    std::uint32_t uncommitted = 0;
  };

  void producer_main(unsigned index) override {
    const producer_plan& plan = plan_.producers[index];
    stats_slot& slot = producer_slot(index);
    connection conn(
        connection_for(options_, plan.uri, connection_name(options_, "producer", index)));
    conn.connect();
    std::vector<producer_channel> channels(options_.producer_channels);
    for (std::size_t c = 0; c < channels.size(); ++c) {
      producer_channel& pc = channels[c];
      pc.ch = &conn.channel();
      pc.routing_key = plan.routing_keys[c];
      pc.ch->events().basic_return.push_back([&slot](const amqp_error&, std::string_view,
                                                     std::string_view,
                                                     message&) { stats_slot::add(slot.returned); });
      if (options_.producer_tx_size > 0) pc.ch->tx_select();
      if (!options_.confirms()) continue;
      pc.ch->confirm_select();
      auto settle = [&pc, &slot](settlement s) {
        return [&pc, &slot, s](std::uint64_t tag, bool multiple) {
          auto end = multiple ? pc.unconfirmed.upper_bound(tag) : pc.unconfirmed.find(tag);
          if (!multiple && end != pc.unconfirmed.end()) ++end;
          auto begin = multiple ? pc.unconfirmed.begin() : pc.unconfirmed.find(tag);
          const std::int64_t now = steady_now_ns();
          std::uint64_t n = 0;
          for (auto it = begin; it != end; ++it, ++n) {
            if (it->second.sent_ns == 0) continue;
            const std::int64_t d = now - it->second.sent_ns;
            const auto ns = static_cast<std::uint64_t>(d > 0 ? d : 0);
            slot.confirm_latency.record(ns);
            slot.confirm_latency_intended.record(ns + std::uint64_t{it->second.lag_us} * 1000);
          }
          pc.unconfirmed.erase(begin, end);
          slot.settle(s, n);
        };
      };
      pc.ch->events().basic_ack.push_back(settle(settlement::confirmed));
      pc.ch->events().basic_nack.push_back(settle(settlement::nacked));
    }
    ready();
    if (!wait_for_go()) return;
    auto unconfirmed = [&] {
      std::uint64_t n = 0;
      for (const producer_channel& pc : channels) n += pc.unconfirmed.size();
      return n;
    };
    try {
      publish_until_done(index, conn, channels);
    } catch (...) {
      // The connection went with these publishes unconfirmed: their outcome is unknown.
      slot.settle(settlement::in_doubt, unconfirmed());
      throw;
    }
    // Left unconfirmed when the stop's grace ended: nobody will know what became of them.
    slot.settle(settlement::in_doubt, unconfirmed());
    conn.close();
  }

  void publish_until_done(unsigned index, connection& conn,
                          std::vector<producer_channel>& channels) {
    stats_slot& slot = producer_slot(index);
    auto stopping = [this] { return producers_stopping(); };
    publisher pub(options_, plan_, index, bodies_);
    sleep_unless(pub.start_delay(), stopping);
    pub.begin(clock::now());
    properties props;
    if (options_.persistent) props.delivery_mode = 2;
    if (!pub.content_type().empty()) props.content_type = pub.content_type();
    publish_options popts;
    popts.mandatory = options_.mandatory;
    const std::uint32_t tx = options_.producer_tx_size;
    const std::uint64_t count = options_.producer_message_count;
    clock::time_point last_read = clock::now();
    // Reads while waiting for a paced publish's turn, in slices so that a stop is seen. The
    // last 2 ms are slept instead: a read's timeout has millisecond steps, and the publish
    // would go late against its schedule by up to one.
    auto read_while_waiting = [&](clock::duration d) {
      const clock::time_point until = clock::now() + d;
      for (clock::time_point now = clock::now(); until - now > milliseconds(2) && !stopping();
           now = clock::now()) {
        pump(conn, std::min<clock::duration>(until - now - milliseconds(2), milliseconds(50)));
      }
      last_read = clock::now();
      sleep_unless(until - clock::now(), stopping);
    };
    // Confirms are timed when this thread reads them: with confirms it reads every
    // millisecond at least (a poll per millisecond), else every 20 ms (returns, heartbeats).
    const clock::duration read_every = options_.confirms() ? milliseconds(1) : milliseconds(20);
    std::uint64_t sent = 0;
    for (std::size_t next = 0; count == 0 || sent < count; next = (next + 1) % channels.size()) {
      if (!pub.wait_turn(stopping, read_while_waiting)) break;
      producer_channel& pc = channels[next];
      while (options_.confirms() && pc.unconfirmed.size() >= options_.confirm_window &&
             !stopping()) {
        pump(conn, milliseconds(100));
      }
      if (stopping()) break;
      const std::uint64_t seq = pc.ch->next_publish_seq_no();
      const publisher::message m = pub.next(next);
      if (!pub.header_stamp().empty()) {
        codec::field_table h;
        h.set(std::string(stamp_header),
              codec::field_value::long_string(std::string(pub.header_stamp())));
        props.headers = std::move(h);
      }
      pc.ch->basic_publish(message(std::string(m.body), props), plan_.exchange, pc.routing_key,
                           popts);
      if (options_.confirms()) pc.unconfirmed.emplace(seq, sent_times{m.sent_ns, m.lag_us});
      stats_slot::add(slot.published);
      ++sent;
      if (tx > 0 && ++pc.uncommitted >= tx) {
        pc.ch->tx_commit();
        pc.uncommitted = 0;
      }
      // Nothing else reads the socket while the window has room: confirms, returns and
      // heartbeats need it.
      const clock::time_point now = clock::now();
      if (now - last_read > read_every) {
        pump(conn, std::chrono::duration<double>(0));
        if (conn.heartbeat() > 0) conn.heartbeat_tick();
        last_read = now;
      }
    }
    if (count != 0 && sent >= count) producer_finished();
    // What was published is committed: the published count is what the broker got.
    for (producer_channel& pc : channels) {
      if (pc.uncommitted > 0) pc.ch->tx_commit();
    }
    if (options_.confirms()) {
      // Wait for the outstanding confirms: until the stop's grace ends, or indefinitely (as
      // long as confirms keep coming) when this producer ended by reaching -C.
      auto unconfirmed = [&] {
        std::size_t n = 0;
        for (const producer_channel& pc : channels) n += pc.unconfirmed.size();
        return n;
      };
      std::optional<clock::time_point> deadline;
      while (unconfirmed() > 0) {
        if (stopping()) {
          if (!deadline) deadline = clock::now() + confirm_grace();
          if (clock::now() >= *deadline) break;
        }
        pump(conn, milliseconds(50));
      }
    }
  }

  struct consumer_channel {
    channel* ch = nullptr;
    std::string queue;
    std::uint32_t unacked = 0, uncommitted = 0;
    std::uint64_t last_tag = 0;
    std::optional<receiver> recv;
  };

  void consumer_main(unsigned index) override {
    const consumer_plan& plan = plan_.consumers[index];
    stats_slot& slot = consumer_slot(index);
    connection conn(
        connection_for(options_, plan.uri, connection_name(options_, "consumer", index)));
    conn.connect();
    std::vector<consumer_channel> channels(options_.consumer_channels);
    const std::uint64_t count = options_.consumer_message_count;
    rate_limiter limiter(options_.consumer_rate);
    std::uint64_t received = 0;
    bool done = false;  // --exit-when reached
    clock::time_point last_activity = clock::now();
    channel* probe = nullptr;  // --exit-when empty: passive declares
    auto stopping = [this] { return consumers_stopping(); };
    auto handle = [&, this](consumer_channel& cc, message& m) {
      // What one read brought in after the stop or the end (a rate-limited backlog, the rest
      // of a batch): not the run's.
      if (stopping() || done || (count != 0 && received >= count)) return;
      const codec::field_value* stamp = m.headers().find(stamp_header);
      const std::string* header = stamp ? stamp->as_long_string() : nullptr;
      cc.recv->count(m.body(), header ? std::optional<std::string_view>(*header) : std::nullopt);
      last_activity = clock::now();
      ++received;
      settle(cc, m.delivery_tag());
      if (options_.consumer_tx_size > 0 && ++cc.uncommitted >= options_.consumer_tx_size) {
        cc.ch->tx_commit();
        cc.uncommitted = 0;
      }
      if (limiter.limited()) sleep_unless(limiter.acquire(clock::now()), stopping);
      cc.recv->work();
    };
    for (std::size_t c = 0; c < channels.size(); ++c) {
      consumer_channel& cc = channels[c];
      cc.recv.emplace(options_, slot, tracker(index, c));
      cc.ch = &conn.channel();
      if (options_.prefetch) cc.ch->basic_qos(0, options_.prefetch, false);
      if (options_.consumer_tx_size > 0) cc.ch->tx_select();
      cc.queue = plan.queues[c];
      if (cc.queue.empty()) {
        queue_declare_options q;
        q.exclusive = true;
        q.arguments = queue_arguments_table(options_);
        cc.queue = cc.ch->queue_declare("", q).queue;
        cc.ch->queue_bind(cc.queue, plan_.exchange, plan_.routing_key);
      }
      set_tracker_queue(index, c, cc.queue);
      if (options_.polling) continue;
      consume_options copts;
      copts.no_ack = options_.auto_ack;
      copts.arguments = consumer_arguments_table(options_);
      cc.ch->basic_consume(
          cc.queue, [&handle, &cc](message& m) { handle(cc, m); }, copts);
    }
    ready();
    bool idle_clock = false;  // --exit-when counts idle time from the start of the run
    while (!stopping() && !done && (count == 0 || received < count)) {
      if (options_.polling) {
        for (consumer_channel& cc : channels) {
          if (std::optional<message> m = cc.ch->basic_get(cc.queue, options_.auto_ack)) {
            handle(cc, *m);
          }
          if (options_.polling_interval_ms > 0) {
            sleep_unless(milliseconds(options_.polling_interval_ms), stopping);
          }
        }
        pump(conn, std::chrono::duration<double>(0));
      } else {
        pump(conn, milliseconds(100));
      }
      if (conn.heartbeat() > 0) conn.heartbeat_tick();
      if (!idle_clock && started()) {
        last_activity = clock::now();
        idle_clock = true;
      }
      if (options_.exit != exit_when::never && idle_clock &&
          clock::now() - last_activity > std::chrono::seconds(1)) {
        if (options_.exit == exit_when::idle) {
          done = true;
        } else {
          if (probe == nullptr) probe = &conn.channel();
          queue_declare_options passive;
          passive.passive = true;
          done = true;
          for (const consumer_channel& cc : channels) {
            if (probe->queue_declare(cc.queue, passive).message_count != 0) done = false;
          }
        }
      }
    }
    if (done || (count != 0 && received >= count)) consumer_finished();
    // What was received is settled: the last multiple ack, the last commit.
    for (consumer_channel& cc : channels) {
      if (cc.unacked > 0) {
        if (options_.nack) {
          cc.ch->basic_nack(cc.last_tag, true, options_.requeue);
        } else {
          cc.ch->basic_ack(cc.last_tag, true);
        }
      }
      if (cc.uncommitted > 0) cc.ch->tx_commit();
    }
    conn.close();
  }

  // Acks (or nacks) one delivery, every -A deliveries at once when -A is given.
  void settle(consumer_channel& cc, std::uint64_t tag) {
    if (options_.auto_ack) return;
    const std::uint32_t multi = options_.multi_ack_every;
    if (multi <= 1) {
      if (options_.nack) {
        cc.ch->basic_nack(tag, false, options_.requeue);
      } else {
        cc.ch->basic_ack(tag);
      }
      return;
    }
    cc.last_tag = tag;
    if (++cc.unacked >= multi) {
      if (options_.nack) {
        cc.ch->basic_nack(tag, true, options_.requeue);
      } else {
        cc.ch->basic_ack(tag, true);
      }
      cc.unacked = 0;
    }
  }
};

}  // namespace

std::unique_ptr<workload> make_blocking_workload(const perf_options& o, const topology_plan& plan,
                                                 run_stats& stats,
                                                 std::shared_ptr<const body_source> bodies) {
  return std::make_unique<blocking_workload>(o, plan, stats, std::move(bodies));
}

}  // namespace warren::perf
