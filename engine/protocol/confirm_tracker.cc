#include "engine/protocol/confirm_tracker.h"

#include <bit>

namespace warren::protocol {

confirm_tracker::confirm_tracker(confirm_tracker_options options)
    : window_(options.window ? options.window : 1),
      timeout_(options.timeout.count() > 0 ? options.timeout : std::chrono::nanoseconds{0}),
      mask_(std::bit_ceil(window_) - 1),
      slots_(mask_ + 1) {}

std::uint64_t confirm_tracker::on_publish(std::uint64_t token, time_point now, bool mandatory,
                                          std::string_view exchange, std::string_view routing_key) {
  if (full()) return 0;
  const std::uint64_t sequence = next_++;
  slot& s = at(sequence);
  s.sequence = sequence;
  s.token = token;
  s.published = now;
  s.state = slot_state::outstanding;
  s.mandatory = mandatory;
  s.returned = false;
  s.reply_code = 0;
  if (mandatory) {
    if (routes_.empty()) routes_.resize(slots_.size());
    route& r = routes_[sequence & mask_];
    r.exchange.assign(exchange);
    r.routing_key.assign(routing_key);
    ++unreturned_mandatory_;
  }
  ++outstanding_;
  return sequence;
}

std::uint64_t confirm_tracker::on_return(std::string_view exchange, std::string_view routing_key,
                                         std::uint16_t reply_code, std::string_view reply_text) {
  if (unreturned_mandatory_ == 0) return 0;
  // Timed-out publishes stay candidates: the broker still routes them in order, so skipping one
  // would pin its return on a later publish.
  for (std::uint64_t sequence = base_; sequence < next_; ++sequence) {
    slot& s = at(sequence);
    if (!live(sequence) || !s.mandatory || s.returned) continue;
    route& r = routes_[sequence & mask_];
    if (r.exchange != exchange || r.routing_key != routing_key) continue;
    s.returned = true;
    s.reply_code = reply_code;
    r.reply_text.assign(reply_text);
    --unreturned_mandatory_;
    return sequence;
  }
  return 0;
}

time_point confirm_tracker::next_deadline() const noexcept {
  if (timer_ >= next_) return time_point::max();
  return deadline_of(at(timer_));
}

void confirm_tracker::reset() {
  for (slot& s : slots_) s = slot{};
  base_ = next_ = timer_ = 1;
  outstanding_ = 0;
  unreturned_mandatory_ = 0;
}

void confirm_tracker::end(std::uint64_t sequence, confirm_outcome outcome, bool release,
                          confirm_event& event, std::string& text) noexcept {
  slot& s = at(sequence);
  event.sequence = sequence;
  event.token = s.token;
  event.outcome = outcome;
  event.published = s.published;
  event.returned = s.returned;
  if (s.returned) {
    event.reply_code = s.reply_code;
    // A move, not a copy: no allocation, and the slot may be reused from the completion.
    text = std::move(routes_[sequence & mask_].reply_text);
    event.reply_text = text;
    // Timed out but kept: a late return cannot apply twice, and the text is gone.
    if (!release) s.reply_code = 0;
  } else if (s.mandatory && release) {
    --unreturned_mandatory_;
  }
  if (s.state == slot_state::outstanding) --outstanding_;
  s.state = release ? slot_state::free : slot_state::timed_out;
}

void confirm_tracker::forget(std::uint64_t sequence) noexcept {
  slot& s = at(sequence);
  if (s.mandatory && !s.returned) --unreturned_mandatory_;
  s.state = slot_state::free;
}

void confirm_tracker::advance() noexcept {
  while (base_ < next_ && !live(base_)) ++base_;
  if (timer_ < base_) timer_ = base_;
  while (timer_ < next_ && !(live(timer_) && at(timer_).state == slot_state::outstanding)) {
    ++timer_;
  }
}

}  // namespace warren::protocol
