// Who publishes where and who consumes from what, decided before any connection is made, and
// the connection settings of each participant. Pure: no I/O, any thread.
//
// Topology, as PerfTest does it:
//   default      each consumer channel declares its own exclusive server-named queue and binds
//                it to the exchange with the run's routing key: every consumer gets a copy of
//                every message;
//   -u QUEUE     one queue, declared once, bound with the routing key (or, on the default
//                exchange, reached by its name); consumers share its messages;
//   --queue-pattern  queues perf-1..perf-N, each bound with its own name as routing key;
//                producer channel i publishes to queue i mod N, consumer channel j consumes
//                queue j mod N.
// --sink and --firehose declare nothing: the null broker keeps no queues.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "engine/client/connection.h"
#include "tools/perf/options.h"

namespace warren::perf {

struct producer_plan {
  std::size_t uri = 0;                    // index into perf_options::uris
  std::vector<std::string> routing_keys;  // per channel
};

struct consumer_plan {
  std::size_t uri = 0;
  std::vector<std::string> queues;  // per channel; empty: declare an exclusive server-named one
};

struct topology_plan {
  std::uint16_t run_tag = 0;  // tags this run's sequence streams (stamp.h)
  std::string exchange, exchange_type;
  bool declare_exchange = false;
  std::vector<std::string> shared_queues;  // declared once before the run, durable
  std::string routing_key;                 // binds shared and per-consumer queues (not patterns)
  bool bind_shared_by_name = false;        // pattern queues: bound with their own names
  bool declare = true;                     // false against the null broker
  std::vector<producer_plan> producers;
  std::vector<consumer_plan> consumers;
};

// `run_key`: the routing key when -k is absent (random per run, so parallel runs never cross).
// `seed` draws the URIs of --connection-allocation random and the run's tag.
topology_plan make_plan(const perf_options& o, std::string_view run_key, std::uint64_t seed = 0);

// A fresh random seed for make_plan.
std::uint64_t random_seed();

// A fresh random routing key, "perf-" and 16 hex digits.
std::string random_routing_key();

// Settings for a connection to URI number `uri_index`: -M, -b, the TLS options, a 5 s connect
// timeout unless the URI sets one, and a connection_name client property (`name`) that shows
// in the management UI and in rabbitmqctl list_connections.
connection_options connection_for(const perf_options& o, std::size_t uri_index,
                                  std::string_view name);

// "perf-producer-3", or with --id "ID-producer-3": `role` is producer or consumer, `index`
// from 0.
std::string connection_name(const perf_options& o, std::string_view role, unsigned index);

// The arguments of declared queues as a field table (-qa).
codec::field_table queue_arguments_table(const perf_options& o);

// The consumers' basic.consume arguments: --consumer-args, and x-stream-offset from
// --stream-consumer-offset (first/last/next and intervals as strings, an offset as a signed
// 64-bit integer, a date-time as an AMQP timestamp, as RabbitMQ reads them).
codec::field_table consumer_arguments_table(const perf_options& o);
// Options for the shared (named) queues: durable; auto-delete unless their type forbids it.
queue_declare_options shared_queue_options(const perf_options& o);

}  // namespace warren::perf
