#include "tools/perf/plan.h"

#include <random>

namespace warren::perf {

topology_plan make_plan(const perf_options& o, std::string_view run_key, std::uint64_t seed) {
  topology_plan p;
  std::mt19937_64 rng(seed);
  p.run_tag = static_cast<std::uint16_t>(rng());
  const std::size_t n_uris = std::max<std::size_t>(1, o.uris.size());
  std::uniform_int_distribution<std::size_t> any_uri(0, n_uris - 1);
  // Connection number `i` (producers first, then consumers).
  auto uri_for = [&](std::size_t i) {
    return o.allocation == connection_allocation::random ? any_uri(rng) : i % n_uris;
  };
  p.exchange = o.exchange;
  p.exchange_type = o.exchange_type;
  p.declare = o.mode == run_mode::broker;
  p.declare_exchange = p.declare && !o.exchange.empty() && !o.exchange.starts_with("amq.");
  p.routing_key = o.routing_key.empty() ? std::string(run_key) : o.routing_key;
  const std::vector<std::string> pattern = o.pattern_queues();
  if (!pattern.empty()) {
    p.shared_queues = pattern;
    p.bind_shared_by_name = true;
  } else if (!o.queue.empty()) {
    p.shared_queues = {o.queue};
    if (o.exchange.empty()) p.routing_key = o.queue;
  }
  if (o.mode == run_mode::firehose) {
    p.shared_queues.clear();
    if (pattern.empty() && o.queue.empty())
      p.shared_queues = {"perf-firehose"};
    else if (!pattern.empty())
      p.shared_queues = pattern;
    else
      p.shared_queues = {o.queue};
  }
  for (unsigned i = 0; i < o.producers; ++i) {
    producer_plan pp;
    pp.uri = uri_for(i);
    for (unsigned c = 0; c < o.producer_channels; ++c) {
      const std::size_t k = static_cast<std::size_t>(i) * o.producer_channels + c;
      pp.routing_keys.push_back(p.bind_shared_by_name ? pattern[k % pattern.size()]
                                                      : p.routing_key);
    }
    p.producers.push_back(std::move(pp));
  }
  for (unsigned j = 0; j < o.consumers; ++j) {
    consumer_plan cp;
    cp.uri = uri_for(o.producers + j);
    for (unsigned c = 0; c < o.consumer_channels; ++c) {
      const std::size_t k = static_cast<std::size_t>(j) * o.consumer_channels + c;
      cp.queues.push_back(p.shared_queues.empty() ? std::string()
                                                  : p.shared_queues[k % p.shared_queues.size()]);
    }
    p.consumers.push_back(std::move(cp));
  }
  return p;
}

std::uint64_t random_seed() {
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}

std::string random_routing_key() {
  std::random_device rd;
  std::uint64_t v = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  static constexpr char hex[] = "0123456789abcdef";
  std::string key = "perf-";
  for (int i = 0; i < 16; ++i, v >>= 4) key += hex[v & 15];
  return key;
}

namespace {
void set_arguments(codec::field_table& t, const std::vector<queue_argument>& args) {
  for (const queue_argument& a : args) {
    if (const auto* n = std::get_if<std::int64_t>(&a.value)) {
      t.set(a.key, codec::field_value::i64(*n));
    } else if (const auto* b = std::get_if<bool>(&a.value)) {
      t.set(a.key, codec::field_value::boolean(*b));
    } else {
      t.set(a.key, codec::field_value::long_string(std::get<std::string>(a.value)));
    }
  }
}
}  // namespace

codec::field_table queue_arguments_table(const perf_options& o) {
  codec::field_table t;
  set_arguments(t, o.queue_arguments);
  return t;
}

codec::field_table consumer_arguments_table(const perf_options& o) {
  codec::field_table t;
  set_arguments(t, o.consumer_arguments);
  if (o.consumer_offset) t.set("x-stream-offset", o.consumer_offset->to_field());
  return t;
}

std::string connection_name(const perf_options& o, std::string_view role, unsigned index) {
  return (o.id.empty() ? std::string("perf") : o.id) + "-" + std::string(role) + "-" +
         std::to_string(index + 1);
}

queue_declare_options shared_queue_options(const perf_options& o) {
  queue_declare_options q;
  q.durable = true;
  q.auto_delete = o.auto_delete;
  q.arguments = queue_arguments_table(o);
  // Quorum queues and streams refuse auto-delete (406).
  for (const queue_argument& a : o.queue_arguments) {
    if (a.key == "x-queue-type" && a.value != queue_argument_value(std::string("classic"))) {
      q.auto_delete = false;
    }
  }
  return q;
}

connection_options connection_for(const perf_options& o, std::size_t uri_index,
                                  std::string_view name) {
  connection_options c = connection_options::from_uri(o.uris.at(uri_index % o.uris.size()));
  if (o.frame_max) c.frame_max = o.frame_max;
  if (o.heartbeat) c.heartbeat = *o.heartbeat;
  if (!c.connect_timeout) c.connect_timeout = seconds_f(5);
  if (!o.tls_ca.empty() || !o.tls_cert.empty() || o.tls_no_verify) {
    io::tls_options t = c.ssl.value_or(io::tls_options{});
    if (!o.tls_ca.empty()) t.ca_file = o.tls_ca;
    if (!o.tls_cert.empty()) t.cert_file = o.tls_cert;
    if (!o.tls_key.empty()) t.key_file = o.tls_key;
    if (o.tls_no_verify) t.verify_peer = false;
    c.ssl = std::move(t);
  }
  c.client_properties.set("connection_name", codec::field_value::long_string(std::string(name)));
  return c;
}

}  // namespace warren::perf
