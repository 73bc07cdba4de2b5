#include "engine/protocol/recovery.h"

#include <algorithm>
#include <cmath>

namespace warren::protocol {

std::string_view to_string(recovery_trigger t) noexcept {
  switch (t) {
    case recovery_trigger::none:
      return "closed by client";
    case recovery_trigger::transport:
      return "connection lost";
    case recovery_trigger::missed_heartbeats:
      return "missed heartbeats";
    case recovery_trigger::write_deadline:
      return "write deadline";
    case recovery_trigger::broker_close:
      return "closed by broker";
    case recovery_trigger::refused_login:
      return "login refused";
    case recovery_trigger::fatal:
      return "fatal error";
  }
  return "unknown";
}

recovery_trigger classify_loss(const close_reason& why, bool closed_by_client) noexcept {
  if (closed_by_client) return recovery_trigger::none;
  switch (why.reply_code) {
    case 0:
      return recovery_trigger::transport;
    case 320:
      // The machine reports a transport failure as 320 by the peer with "connection lost", and
      // missed heartbeats as its own 320; the broker's CONNECTION_FORCED (a forced close, a node
      // shutting down) is 320 by the peer.
      if (!why.by_peer) return recovery_trigger::missed_heartbeats;
      if (why.reply_text.find("connection lost") != std::string::npos) {
        return recovery_trigger::transport;
      }
      return recovery_trigger::broker_close;
    case 541:  // INTERNAL_ERROR: the broker's trouble, not the client's
      return why.by_peer ? recovery_trigger::broker_close : recovery_trigger::fatal;
    case 403:  // ACCESS_REFUSED
    case 530:  // NOT_ALLOWED: the vhost is closed to the user
      return recovery_trigger::refused_login;
    default:
      return recovery_trigger::fatal;
  }
}

bool should_recover(recovery_trigger t, const recovery_policy& p) noexcept {
  if (!p.enabled) return false;
  switch (t) {
    case recovery_trigger::transport:
    case recovery_trigger::missed_heartbeats:
    case recovery_trigger::write_deadline:
    case recovery_trigger::broker_close:
      return true;
    case recovery_trigger::refused_login:
      return p.on_refused_login;
    case recovery_trigger::none:
    case recovery_trigger::fatal:
      return false;
  }
  return false;
}

std::pair<std::chrono::nanoseconds, std::chrono::nanoseconds> backoff_bounds(
    const recovery_policy& p, std::uint32_t n) noexcept {
  using ns = std::chrono::nanoseconds;
  const double max = static_cast<double>(ns(p.max_delay).count());
  double d = static_cast<double>(ns(p.initial_delay).count());
  const double m = std::max(1.0, p.multiplier);
  for (std::uint32_t i = 1; i < n && d < max; ++i) d *= m;
  d = std::min(d, max);
  const double j = std::clamp(p.jitter, 0.0, 1.0);
  return {ns(static_cast<std::int64_t>(d * (1.0 - j))), ns(static_cast<std::int64_t>(d))};
}

std::uint64_t recovery_random::next() noexcept {
  std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double recovery_random::unit() noexcept {
  return static_cast<double>(next() >> 11) * 0x1.0p-53;
}

// endpoint_list
// ------------------------------------------------------------------------------------

endpoint_list::endpoint_list(std::vector<std::string> endpoints, endpoint_allocation a,
                             std::uint64_t connection_index, std::uint64_t seed)
    : order_(std::move(endpoints)) {
  const std::size_t n = order_.size();
  if (n < 2) return;
  switch (a) {
    case endpoint_allocation::in_order:
      break;
    case endpoint_allocation::round_robin:
      std::rotate(order_.begin(),
                  order_.begin() + static_cast<std::ptrdiff_t>(connection_index % n), order_.end());
      break;
    case endpoint_allocation::shuffled: {
      recovery_random r(seed ^ (connection_index * 0x9e3779b97f4a7c15ULL));
      for (std::size_t i = n - 1; i > 0; --i) {
        std::swap(order_[i], order_[static_cast<std::size_t>(r.next() % (i + 1))]);
      }
      break;
    }
  }
}

// recovery_schedule
// --------------------------------------------------------------------------------

recovery_schedule::recovery_schedule(const recovery_policy& p, std::size_t endpoints,
                                     std::size_t lost_endpoint, time_point lost_at,
                                     std::uint64_t seed)
    : policy_(p),
      endpoints_(std::max<std::size_t>(endpoints, 1)),
      first_((lost_endpoint + 1) % std::max<std::size_t>(endpoints, 1)),
      lost_at_(lost_at),
      failed_at_(lost_at),
      random_(seed) {}

std::optional<recovery_schedule::attempt> recovery_schedule::next() {
  if (done_) return std::nullopt;
  if (policy_.max_attempts != 0 && number_ >= policy_.max_attempts) {
    done_ = true;
    return std::nullopt;
  }
  attempt a;
  if (in_round_ == endpoints_) {
    ++round_;
    in_round_ = 0;
  }
  a.round = round_;
  a.endpoint = (first_ + in_round_) % endpoints_;
  if (round_ == 1 || in_round_ != 0) {
    // Within a round the next endpoint is tried as soon as the previous one failed.
    a.at = round_ == 1 && in_round_ == 0 ? lost_at_ : failed_at_;
  } else {
    const auto [low, high] = backoff_bounds(policy_, round_ - 1);
    const double u = random_.unit();
    const auto wait = low + std::chrono::nanoseconds(static_cast<std::int64_t>(
                                static_cast<double>((high - low).count()) * u));
    a.at = failed_at_ + std::chrono::duration_cast<clock::duration>(wait);
  }
  ++in_round_;
  a.number = ++number_;
  return a;
}

void recovery_schedule::failed(std::uint64_t number, time_point now) {
  if (number != number_) return;
  failed_at_ = std::max(failed_at_, now);
}

bool recovery_schedule::succeeded(std::uint64_t number) {
  if (!current(number)) return false;
  done_ = true;
  return true;
}

// replay_plan
// --------------------------------------------------------------------------------------

std::string_view to_string(replay_step::kind k) noexcept {
  using kind = replay_step::kind;
  switch (k) {
    case kind::channel_open:
      return "channel.open";
    case kind::qos_global:
      return "basic.qos global";
    case kind::qos_per_consumer:
      return "basic.qos";
    case kind::confirm_select:
      return "confirm.select";
    case kind::tx_select:
      return "tx.select";
    case kind::client_flow:
      return "channel.flow";
    case kind::exchange:
      return "exchange.declare";
    case kind::queue:
      return "queue.declare";
    case kind::binding:
      return "bind";
    case kind::consumer:
      return "basic.consume";
  }
  return "unknown";
}

replay_plan::replay_plan(std::vector<channel_replay> channels, const topology_record& topology,
                         const topology_filter& filter)
    : channels_(std::move(channels)) {
  std::sort(channels_.begin(), channels_.end(),
            [](const channel_replay& a, const channel_replay& b) { return a.id < b.id; });
  // The filter is topology::snapshot's rule, applied to a copy of the record.
  topo_ = topology;
  auto keep = [](const auto& pred, const auto& r) { return !pred || pred(r); };
  std::erase_if(topo_.exchanges, [&](const auto& r) { return !keep(filter.exchanges, r); });
  std::erase_if(topo_.queues, [&](const auto& r) { return !keep(filter.queues, r); });
  std::erase_if(topo_.bindings, [&](const auto& r) { return !keep(filter.bindings, r); });
  std::erase_if(topo_.consumers, [&](const auto& r) {
    if (!keep(filter.consumers, r)) return true;
    return std::none_of(channels_.begin(), channels_.end(),
                        [&](const channel_replay& c) { return c.id == r.channel; });
  });
  using kind = replay_step::kind;
  for (std::size_t i = 0; i < channels_.size(); ++i) {
    const channel_replay& c = channels_[i];
    const channel_settings& s = c.settings;
    steps_.push_back({kind::channel_open, c.id, i});
    if (s.qos_global) steps_.push_back({kind::qos_global, c.id, i});
    if (s.qos_per_consumer) steps_.push_back({kind::qos_per_consumer, c.id, i});
    if (s.confirms) steps_.push_back({kind::confirm_select, c.id, i});
    if (s.tx) steps_.push_back({kind::tx_select, c.id, i});
    if (!s.client_flow) steps_.push_back({kind::client_flow, c.id, i});
  }
  for (std::size_t i = 0; i < topo_.exchanges.size(); ++i) steps_.push_back({kind::exchange, 0, i});
  for (std::size_t i = 0; i < topo_.queues.size(); ++i) steps_.push_back({kind::queue, 0, i});
  for (std::size_t i = 0; i < topo_.bindings.size(); ++i) steps_.push_back({kind::binding, 0, i});
  for (std::size_t i = 0; i < topo_.consumers.size(); ++i) {
    steps_.push_back({kind::consumer, topo_.consumers[i].channel, i});
  }
}

std::string_view replay_plan::declare_name(const replay_step& s) const {
  const queue_record& q = topo_.queues[s.index];
  return q.server_named ? std::string_view() : std::string_view(q.name);
}

void replay_plan::succeeded(const replay_step& s, std::string_view broker_name) {
  using kind = replay_step::kind;
  switch (s.what) {
    case kind::channel_open:
      ++report_.channels;
      return;
    case kind::qos_global:
    case kind::qos_per_consumer:
    case kind::confirm_select:
    case kind::tx_select:
    case kind::client_flow:
      return;
    case kind::exchange:
      ++report_.exchanges;
      return;
    case kind::binding:
      ++report_.bindings;
      return;
    case kind::consumer:
      ++report_.consumers;
      return;
    case kind::queue:
      break;
  }
  ++report_.queues;
  queue_record& q = topo_.queues[s.index];
  if (broker_name.empty() || broker_name == q.name) return;
  const std::string old = q.name;
  const std::string now(broker_name);
  report_.renamed_queues.emplace_back(old, now);
  q.name = now;
  for (binding_record& b : topo_.bindings) {
    if (b.what == binding_record::kind::queue && b.destination == old) b.destination = now;
  }
  for (consumer_record& c : topo_.consumers) {
    if (c.queue == old) c.queue = now;
  }
}

void replay_plan::failed(const replay_step& s, std::uint16_t reply_code,
                         std::string_view reply_text) {
  report_.failures.push_back({describe(s), reply_code, std::string(reply_text)});
}

std::string replay_plan::describe(const replay_step& s) const {
  using kind = replay_step::kind;
  switch (s.what) {
    case kind::exchange:
      return "exchange '" + topo_.exchanges[s.index].name + "'";
    case kind::queue:
      return "queue '" + topo_.queues[s.index].name + "'";
    case kind::binding: {
      const binding_record& b = topo_.bindings[s.index];
      return std::string(b.what == binding_record::kind::queue ? "queue" : "exchange") +
             " binding '" + b.source + "' -> '" + b.destination + "' ('" + b.routing_key + "')";
    }
    case kind::consumer: {
      const consumer_record& c = topo_.consumers[s.index];
      return "consumer '" + c.consumer_tag + "' of queue '" + c.queue + "' on channel " +
             std::to_string(c.channel);
    }
    default:
      return std::string(to_string(s.what)) + " on channel " + std::to_string(s.channel);
  }
}

}  // namespace warren::protocol
