#include "engine/protocol/consumer_table.h"

#include <algorithm>
#include <utility>

namespace warren::protocol {

std::unique_ptr<consumer> consumer_table::add(std::unique_ptr<consumer> c) {
  forget_cancelled(c->tag);
  auto [it, inserted] = by_tag_.try_emplace(c->tag);
  std::unique_ptr<consumer> replaced = std::move(it->second);
  it->second = std::move(c);
  last_ = nullptr;
  return replaced;
}

std::unique_ptr<consumer> consumer_table::remove(std::string_view tag) {
  auto it = by_tag_.find(tag);
  if (it == by_tag_.end()) return nullptr;
  std::unique_ptr<consumer> c = std::move(it->second);
  by_tag_.erase(it);
  last_ = nullptr;
  if (c->no_ack) remember_cancelled(c->tag);
  return c;
}

void consumer_table::remember_cancelled(std::string_view tag) {
  if (cancelled_.size() < cancelled_memory_) {
    cancelled_.emplace_back(tag);
    return;
  }
  // Full: the oldest goes (its string's capacity is reused).
  cancelled_[cancelled_next_].assign(tag);
  cancelled_next_ = (cancelled_next_ + 1) % cancelled_memory_;
}

void consumer_table::forget_cancelled(std::string_view tag) noexcept {
  // An emptied slot stays in the ring: it matches no tag (consumer tags are never empty).
  for (std::string& t : cancelled_) {
    if (t == tag) t.clear();
  }
}

consumer_table::unknown_verdict consumer_table::on_unknown(std::string_view tag) const noexcept {
  if (pending_named_ > 0) return unknown_verdict::drop;
  const bool cancelled_no_ack =
      !tag.empty() && std::find(cancelled_.begin(), cancelled_.end(), tag) != cancelled_.end();
  return cancelled_no_ack ? unknown_verdict::drop : unknown_verdict::reject;
}

}  // namespace warren::protocol
