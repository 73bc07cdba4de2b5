#include "engine/protocol/topology.h"

#include <utility>

namespace warren::protocol {
namespace {

template <class T, class F>
std::vector<T> kept(const std::vector<T>& all, const F& keep) {
  if (!keep) return all;
  std::vector<T> out;
  for (const T& e : all) {
    if (keep(e)) out.push_back(e);
  }
  return out;
}

}  // namespace

void topology::declare_exchange(std::string_view name, std::string_view type,
                                const exchange_declare_options& o) {
  if (o.passive) return;
  auto& xs = record_.exchanges;
  std::erase_if(xs, [&](const exchange_record& x) { return x.name == name; });
  xs.push_back({std::string(name), std::string(type), o});
  xs.back().options.nowait = false;
}

void topology::delete_exchange(std::string_view name) {
  std::erase_if(record_.exchanges, [&](const exchange_record& x) { return x.name == name; });
  std::erase_if(record_.bindings, [&](const binding_record& b) {
    return b.source == name || (b.what == binding_record::kind::exchange && b.destination == name);
  });
}

void topology::declare_queue(std::string_view name, const queue_declare_options& o,
                             bool server_named) {
  if (o.passive || name.empty()) return;
  auto& qs = record_.queues;
  std::erase_if(qs, [&](const queue_record& q) { return q.name == name; });
  qs.push_back({std::string(name), o, server_named});
  qs.back().options.nowait = false;
}

void topology::delete_queue(std::string_view name) {
  std::erase_if(record_.queues, [&](const queue_record& q) { return q.name == name; });
  std::erase_if(record_.bindings, [&](const binding_record& b) {
    return b.what == binding_record::kind::queue && b.destination == name;
  });
  std::erase_if(record_.consumers, [&](const consumer_record& c) { return c.queue == name; });
}

void topology::bind(binding_record::kind k, std::string_view destination, std::string_view source,
                    std::string_view routing_key, const codec::field_table& arguments) {
  unbind(k, destination, source, routing_key, arguments);
  record_.bindings.push_back(
      {k, std::string(destination), std::string(source), std::string(routing_key), arguments});
}

void topology::unbind(binding_record::kind k, std::string_view destination, std::string_view source,
                      std::string_view routing_key, const codec::field_table& arguments) {
  std::erase_if(record_.bindings, [&](const binding_record& b) {
    return b.what == k && b.destination == destination && b.source == source &&
           b.routing_key == routing_key && b.arguments == arguments;
  });
}

void topology::consume(consumer_record r) {
  cancel(r.channel, r.consumer_tag);
  record_.consumers.push_back(std::move(r));
}

void topology::cancel(std::uint16_t channel, std::string_view consumer_tag) {
  std::erase_if(record_.consumers, [&](const consumer_record& c) {
    return c.channel == channel && c.consumer_tag == consumer_tag;
  });
}

bool topology::stream_handled(std::uint16_t channel, std::string_view consumer_tag,
                              std::uint64_t offset) {
  for (consumer_record& c : record_.consumers) {
    if (c.channel == channel && c.consumer_tag == consumer_tag) {
      c.stream_last_handled = offset;
      return true;
    }
  }
  return false;
}

codec::field_table replay_arguments(const consumer_record& r) {
  codec::field_table t = r.arguments;
  if (r.stream_last_handled) {
    t.set(std::string(x_stream_offset), stream_offset::at(*r.stream_last_handled + 1).to_field());
  }
  return t;
}

void topology::close_channel(std::uint16_t channel) {
  std::erase_if(record_.consumers, [&](const consumer_record& c) { return c.channel == channel; });
}

bool topology::rename_queue(std::string_view from_name, std::string_view to_name) {
  // Copies: the caller may pass views of the records this changes.
  const std::string from(from_name), to(to_name);
  bool found = false;
  for (queue_record& q : record_.queues) {
    if (q.name == from) {
      q.name = to;
      found = true;
    }
  }
  if (!found) return false;
  for (binding_record& b : record_.bindings) {
    if (b.what == binding_record::kind::queue && b.destination == from) {
      b.destination = to;
    }
  }
  for (consumer_record& c : record_.consumers) {
    if (c.queue == from) c.queue = to;
  }
  return true;
}

topology_record topology::snapshot(const topology_filter& filter) const {
  topology_record out;
  out.exchanges = kept(record_.exchanges, filter.exchanges);
  out.queues = kept(record_.queues, filter.queues);
  out.bindings = kept(record_.bindings, filter.bindings);
  out.consumers = kept(record_.consumers, filter.consumers);
  return out;
}

bool topology::empty() const noexcept {
  return record_.exchanges.empty() && record_.queues.empty() && record_.bindings.empty() &&
         record_.consumers.empty();
}

}  // namespace warren::protocol
