// The workload over warren's blocking API (engine/client): one connection and one thread per
// producer and per consumer, since a blocking connection belongs to one thread. Confirms,
// returns and deliveries are handled inside drain_events() on that same thread.
#include <map>
#include <set>
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
  struct producer_channel {
    channel* ch = nullptr;
    std::string routing_key;
    std::set<std::uint64_t> unconfirmed;
  };

  void producer_main(unsigned index) override {
    const producer_plan& plan = plan_.producers[index];
    stats_slot& slot = producer_slot(index);
    connection conn(
        connection_for(options_, plan.uri, "perf-producer-" + std::to_string(index + 1)));
    conn.connect();
    std::vector<producer_channel> channels(options_.producer_channels);
    for (std::size_t c = 0; c < channels.size(); ++c) {
      producer_channel& pc = channels[c];
      pc.ch = &conn.channel();
      pc.routing_key = plan.routing_keys[c];
      pc.ch->events().basic_return.push_back([&slot](const amqp_error&, std::string_view,
                                                     std::string_view,
                                                     message&) { stats_slot::add(slot.returned); });
      if (!options_.confirms()) continue;
      pc.ch->confirm_select();
      auto settle = [&pc, &slot](bool ack) {
        return [&pc, &slot, ack](std::uint64_t tag, bool multiple) {
          auto end = multiple ? pc.unconfirmed.upper_bound(tag) : pc.unconfirmed.find(tag);
          if (!multiple && end != pc.unconfirmed.end()) ++end;
          auto begin = multiple ? pc.unconfirmed.begin() : pc.unconfirmed.find(tag);
          const auto n = static_cast<std::uint64_t>(std::distance(begin, end));
          pc.unconfirmed.erase(begin, end);
          slot.settle(ack ? settlement::confirmed : settlement::nacked, n);
        };
      };
      pc.ch->events().basic_ack.push_back(settle(true));
      pc.ch->events().basic_nack.push_back(settle(false));
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
    properties props;
    if (options_.persistent) props.delivery_mode = 2;
    publish_options popts;
    popts.mandatory = options_.mandatory;
    std::string body(static_cast<std::size_t>(options_.message_size), '\0');
    rate_limiter limiter(options_.producer_rate);
    const std::uint64_t count = options_.producer_message_count;
    auto stopping = [this] { return producers_stopping(); };
    clock::time_point last_read = clock::now();
    std::uint64_t sent = 0;
    for (std::size_t next = 0; !stopping() && (count == 0 || sent < count);
         next = (next + 1) % channels.size()) {
      if (limiter.limited()) sleep_unless(limiter.acquire(clock::now()), stopping);
      producer_channel& pc = channels[next];
      while (options_.confirms() && pc.unconfirmed.size() >= options_.confirm_window &&
             !stopping()) {
        pump(conn, milliseconds(100));
      }
      if (stopping()) break;
      const std::uint64_t seq = pc.ch->next_publish_seq_no();
      stamp_body(body, index, steady_now_ns());
      pc.ch->basic_publish(message(body, props), plan_.exchange, pc.routing_key, popts);
      if (options_.confirms()) pc.unconfirmed.insert(seq);
      stats_slot::add(slot.published);
      ++sent;
      // Without confirms nothing else reads the socket: returns and heartbeats need it.
      const clock::time_point now = clock::now();
      if (now - last_read > milliseconds(20)) {
        pump(conn, std::chrono::duration<double>(0));
        if (conn.heartbeat() > 0) conn.heartbeat_tick();
        last_read = now;
      }
    }
    if (count != 0 && sent >= count) producer_finished();
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
    std::uint32_t unacked = 0;
    std::uint64_t last_tag = 0;
  };

  void consumer_main(unsigned index) override {
    const consumer_plan& plan = plan_.consumers[index];
    stats_slot& slot = consumer_slot(index);
    connection conn(
        connection_for(options_, plan.uri, "perf-consumer-" + std::to_string(index + 1)));
    conn.connect();
    std::vector<consumer_channel> channels(options_.consumer_channels);
    const bool timestamps = options_.timestamps();
    const std::uint64_t count = options_.consumer_message_count;
    const std::uint32_t multi = options_.multi_ack_every;
    rate_limiter limiter(options_.consumer_rate);
    std::uint64_t received = 0;
    auto stopping = [this] { return consumers_stopping(); };
    for (std::size_t c = 0; c < channels.size(); ++c) {
      consumer_channel& cc = channels[c];
      cc.ch = &conn.channel();
      if (options_.prefetch) cc.ch->basic_qos(0, options_.prefetch, false);
      std::string queue = plan.queues[c];
      if (queue.empty()) {
        queue_declare_options q;
        q.exclusive = true;
        q.arguments = queue_arguments_table(options_);
        queue = cc.ch->queue_declare("", q).queue;
        cc.ch->queue_bind(queue, plan_.exchange, plan_.routing_key);
      }
      consume_options copts;
      copts.no_ack = options_.auto_ack;
      cc.ch->basic_consume(
          queue,
          [&, this](message& m) {
            // What one read brought in after the stop (a rate-limited backlog): not the run's.
            if (stopping()) return;
            count_received(slot, m.body(), timestamps);
            ++received;
            if (!options_.auto_ack) {
              if (multi > 1) {
                cc.last_tag = m.delivery_tag();
                if (++cc.unacked >= multi) {
                  cc.ch->basic_ack(cc.last_tag, true);
                  cc.unacked = 0;
                }
              } else {
                cc.ch->basic_ack(m.delivery_tag());
              }
            }
            if (limiter.limited()) sleep_unless(limiter.acquire(clock::now()), stopping);
          },
          copts);
    }
    ready();
    while (!stopping() && (count == 0 || received < count)) {
      pump(conn, milliseconds(100));
      if (conn.heartbeat() > 0) conn.heartbeat_tick();
    }
    if (count != 0 && received >= count) consumer_finished();
    for (consumer_channel& cc : channels) {
      if (cc.unacked > 0) cc.ch->basic_ack(cc.last_tag, true);
    }
    conn.close();
  }
};

}  // namespace

std::unique_ptr<workload> make_blocking_workload(const perf_options& o, const topology_plan& plan,
                                                 run_stats& stats) {
  return std::make_unique<blocking_workload>(o, plan, stats);
}

}  // namespace warren::perf
