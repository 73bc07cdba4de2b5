#include "engine/metrics/metrics.h"

#include <algorithm>

namespace warren::metrics {

publish_counts& publish_counts::operator+=(const publish_counts& o) noexcept {
  published += o.published;
  confirmed += o.confirmed;
  nacked += o.nacked;
  in_doubt += o.in_doubt;
  returned += o.returned;
  republished += o.republished;
  return *this;
}

delivery_counts& delivery_counts::operator+=(const delivery_counts& o) noexcept {
  delivered += o.delivered;
  acked += o.acked;
  nacked += o.nacked;
  rejected += o.rejected;
  return *this;
}

consumer_snapshot consumer_metrics::snapshot() const {
  // pending before delivered: a delivery is counted delivered before it can be handled.
  consumer_snapshot s;
  s.tag = tag_;
  s.pending = pending_.load();
  s.delivered = delivered_.load();
  return s;
}

namespace {

// Drops the entries only the list still holds: no one else can record into them any more.
template <typename T, typename F>
void drop_unreferenced(std::vector<std::shared_ptr<T>>& list, F&& on_drop) {
  std::erase_if(list, [&](const std::shared_ptr<T>& p) {
    if (p.use_count() != 1) return false;
    on_drop(*p);
    return true;
  });
}

}  // namespace

std::shared_ptr<consumer_metrics> channel_metrics::add_consumer(std::string tag) {
  auto c = std::make_shared<consumer_metrics>(std::move(tag));
  std::lock_guard lock(consumers_mu_);
  drop_unreferenced(consumers_, [](const consumer_metrics&) {});
  std::erase_if(consumers_, [&](const auto& p) { return p->tag() == c->tag(); });
  consumers_.push_back(c);
  return c;
}

void channel_metrics::remove_consumer(const consumer_metrics& c) noexcept {
  std::lock_guard lock(consumers_mu_);
  std::erase_if(consumers_, [&](const auto& p) { return p.get() == &c; });
}

channel_snapshot channel_metrics::snapshot(bool with_consumers) const {
  channel_snapshot s;
  s.id = id_;
  // Effects before causes (counter.h): a decision is counted after its delivery, a verdict
  // after its publish.
  s.deliveries.acked = io_.acked.load();
  s.deliveries.nacked = io_.delivery_nacked.load();
  s.deliveries.rejected = io_.rejected.load();
  s.deliveries.delivered = io_.delivered.load();
  s.publishes.confirmed = io_.confirmed.load();
  s.publishes.nacked = io_.nacked.load();
  s.publishes.in_doubt = io_.in_doubt.load();
  s.publishes.returned = io_.returned.load();
  s.publishes.republished = io_.republished.load();
  s.publishes.published = pub_.published.load();
  confirm_latency_.snapshot_into(s.publish_to_confirm);
  handled_latency_.snapshot_into(s.delivery_to_handled);
  if (with_consumers) {
    std::lock_guard lock(consumers_mu_);
    drop_unreferenced(consumers_, [](const consumer_metrics&) {});
    s.consumers.reserve(consumers_.size());
    for (const auto& c : consumers_) s.consumers.push_back(c->snapshot());
  }
  return s;
}

void connection_metrics::on_blocked(clock::time_point now) noexcept {
  std::lock_guard lock(blocked_mu_);
  if (!blocked_since_) blocked_since_ = now;
}

void connection_metrics::on_unblocked(clock::time_point now) noexcept {
  std::lock_guard lock(blocked_mu_);
  if (!blocked_since_) return;
  blocked_total_ += std::max(clock::duration::zero(), now - *blocked_since_);
  blocked_since_.reset();
}

void connection_metrics::retire(const channel_metrics& gone) const {
  const channel_snapshot s = gone.snapshot(false);
  retired_publishes_ += s.publishes;
  retired_deliveries_ += s.deliveries;
  retired_confirm_latency_.merge(s.publish_to_confirm);
  retired_handled_latency_.merge(s.delivery_to_handled);
}

std::shared_ptr<channel_metrics> connection_metrics::add_channel(std::uint16_t id) {
  auto c = std::make_shared<channel_metrics>(id);
  std::lock_guard lock(channels_mu_);
  drop_unreferenced(channels_, [this](const channel_metrics& gone) { retire(gone); });
  for (const auto& other : channels_)
    if (other->id() == id) other->mark_closed();
  channels_.push_back(c);
  return c;
}

connection_snapshot connection_metrics::snapshot(clock::time_point now, bool with_channels) const {
  connection_snapshot s;
  s.id = id_;
  s.name = name_;
  {
    std::lock_guard lock(blocked_mu_);
    auto total = blocked_total_;
    if (blocked_since_) total += std::max(clock::duration::zero(), now - *blocked_since_);
    s.blocked = blocked_since_.has_value();
    s.blocked_time = std::chrono::duration_cast<std::chrono::nanoseconds>(total);
  }
  s.recoveries = io_.recoveries.load();
  s.heartbeats_missed = io_.heartbeats_missed.load();
  s.transport.bytes_received = io_.bytes_in.load();
  s.transport.socket_reads = io_.reads.load();
  s.transport.bytes_sent = io_.bytes_out.load();
  s.transport.socket_writes = io_.writes.load();
  s.transport.frames_received = io_.frames_in.load();
  s.transport.frames_sent = io_.frames_out.load() + pub_.frames_out.load();

  std::lock_guard lock(channels_mu_);
  // Fold first: what is left is referenced, and is read once, below.
  drop_unreferenced(channels_, [this](const channel_metrics& gone) { retire(gone); });
  s.publishes = retired_publishes_;
  s.deliveries = retired_deliveries_;
  s.publish_to_confirm = retired_confirm_latency_;
  s.delivery_to_handled = retired_handled_latency_;
  for (const auto& ch : channels_) {
    const bool open = !ch->closed();
    const bool listed = with_channels && open;
    s.open_channels += open ? 1 : 0;
    channel_snapshot c = ch->snapshot(listed);
    s.publishes += c.publishes;
    s.deliveries += c.deliveries;
    s.publish_to_confirm.merge(c.publish_to_confirm);
    s.delivery_to_handled.merge(c.delivery_to_handled);
    if (listed) s.channels.push_back(std::move(c));
  }
  std::stable_sort(s.channels.begin(), s.channels.end(),
                   [](const auto& a, const auto& b) { return a.id < b.id; });
  return s;
}

std::shared_ptr<connection_metrics> registry::add_connection(std::string name) {
  std::lock_guard lock(mu_);
  if (!keep_) drop_unreferenced(connections_, [](const connection_metrics&) {});
  auto c = std::make_shared<connection_metrics>(next_id_++, std::move(name));
  connections_.push_back(c);
  return c;
}

snapshot registry::take(clock::time_point now) const {
  std::vector<std::shared_ptr<connection_metrics>> list;
  {
    std::lock_guard lock(mu_);
    if (!keep_) drop_unreferenced(connections_, [](const connection_metrics&) {});
    list = connections_;
  }
  snapshot s;
  s.taken = now;
  s.connections.reserve(list.size());
  // Outside the registry's lock: a connection's snapshot locks only its own lists.
  for (const auto& c : list) s.connections.push_back(c->snapshot(now));
  return s;
}

}  // namespace warren::metrics
