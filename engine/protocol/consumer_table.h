// The consumers of one channel, sans-I/O: consumer tag -> the face's consumer, and the rule for
// a delivery whose tag names none of them.
//
// The unknown-consumer rule. A basic.deliver for a tag with no consumer here arrives when a
// consumer was cancelled (by us or by the broker) while deliveries were in flight. The broker
// still holds such a delivery unless its consumer was no-ack, so it is rejected with requeue (the
// broker gives it to another consumer), except:
//   - the tag belongs to a no-ack consumer cancelled recently: the delivery is already settled, and
//     rejecting it would name a tag the broker does not hold (a channel error). The table
//     remembers the last `cancelled_memory` such tags (FIFO): deliveries can follow a cancel only
//     while they were in flight, so a short memory suffices, and a service that consumes and
//     cancels forever keeps a bounded table;
//   - a server-named basic.consume is still waiting for its consume-ok: the tag may be that
//     consumer's, whose no-ack flag nobody knows yet, so the delivery is dropped (never
//     rejected). The broker sends consume-ok before a consumer's first delivery, so this is a
//     safety net, not a path a conforming broker takes.
//
// No threads, no clock. Threading: one thread at a time (the channel's owner). Cost: a map lookup
// per delivery, skipped when the delivery is for the same consumer as the one before (deliveries
// come in runs); the unknown-tag path is O(cancelled_memory).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/metrics/metrics.h"
#include "engine/protocol/streams.h"

namespace warren::protocol {

// A consumer as the channel core knows it. Faces derive their own (handler, mailbox, ...) and
// get it back, as the same object, when it leaves the table.
class consumer {
 public:
  virtual ~consumer() = default;
  std::string tag;      // the broker's tag (set from consume-ok when the broker named it)
  bool no_ack = false;  // deliveries need no decision from the application
  // Set by the channel core when it registers the consumer, if its channel records metrics
  // (channel_core_options::metrics); null otherwise. The face's workers record handled
  // deliveries into them (consumer_metrics::on_handled, channel_metrics::record_handled).
  std::shared_ptr<metrics::consumer_metrics> metrics;
  std::shared_ptr<metrics::channel_metrics> channel_metrics;
  // Set for a stream consumer (the face sets it at basic.consume): the channel core feeds it each
  // delivery's x-stream-offset and each accepted decision, so that last_handled() is the offset a
  // recovery resumes after (stream_progress::resume_from()).
  std::optional<stream_progress> stream;
};

class consumer_table {
 public:
  enum class unknown_verdict : std::uint8_t {
    reject,  // give it back: basic.reject with requeue
    drop,    // nothing to send (a cancelled no-ack consumer's, or a consume-ok is pending)
  };

  explicit consumer_table(std::size_t cancelled_memory = 64)
      : cancelled_memory_(cancelled_memory == 0 ? 1 : cancelled_memory) {}

  // The consumer registered under `tag`, or null.
  consumer* find(std::string_view tag) noexcept {
    if (last_ != nullptr && last_->tag == tag) return last_;
    auto it = by_tag_.find(tag);
    last_ = it == by_tag_.end() ? nullptr : it->second.get();
    return last_;
  }

  // Registers `c` under c->tag (not empty). Returns the consumer it replaces under the same tag,
  // or null; a tag registered again is no longer remembered as cancelled.
  std::unique_ptr<consumer> add(std::unique_ptr<consumer> c);

  // Removes the consumer under `tag` (null when there is none). A no-ack consumer's tag is
  // remembered (see the rule above).
  std::unique_ptr<consumer> remove(std::string_view tag);

  // Remembers `tag` as a cancelled no-ack consumer's without a consumer object (a consumer the
  // face never registered, e.g. one whose consume-ok came after its call gave up).
  void remember_cancelled(std::string_view tag);

  // What to do with a delivery for `tag`, which find() did not know.
  unknown_verdict on_unknown(std::string_view tag) const noexcept;

  // basic.consume calls with a server-named tag still waiting for consume-ok.
  void named_consume_pending(int delta) noexcept { pending_named_ += delta; }
  int named_consumes_pending() const noexcept { return pending_named_; }

  // Removes every consumer, in tag order, into `f(std::unique_ptr<consumer>)`, and forgets the
  // cancelled tags and pending consumes (a channel's life ended). `f` may add consumers (a new
  // life); they are kept.
  template <class F>
  void clear(F&& f) {
    std::map<std::string, std::unique_ptr<consumer>, std::less<>> all;
    all.swap(by_tag_);
    last_ = nullptr;
    cancelled_.clear();
    cancelled_next_ = 0;
    pending_named_ = 0;
    for (auto& [tag, c] : all) f(std::move(c));
  }

  // Every registered consumer, in tag order: `f(consumer&)`. `f` must not add or remove.
  template <class F>
  void for_each(F&& f) const {
    for (const auto& [tag, c] : by_tag_) f(std::as_const(*c));
  }
  template <class F>
  void for_each(F&& f) {
    for (auto& [tag, c] : by_tag_) f(*c);
  }

  std::size_t size() const noexcept { return by_tag_.size(); }
  bool empty() const noexcept { return by_tag_.empty(); }
  // Cancelled no-ack tags remembered (at most cancelled_memory).
  std::size_t cancelled_remembered() const noexcept { return cancelled_.size(); }

 private:
  void forget_cancelled(std::string_view tag) noexcept;

  std::map<std::string, std::unique_ptr<consumer>, std::less<>> by_tag_;
  consumer* last_ = nullptr;  // find()'s cache
  // A ring of the last cancelled_memory_ tags; cancelled_next_ is the slot written next once full.
  std::vector<std::string> cancelled_;
  std::size_t cancelled_next_ = 0;
  std::size_t cancelled_memory_;
  int pending_named_ = 0;
};

}  // namespace warren::protocol
