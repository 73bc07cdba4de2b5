// The publish path. Any thread may publish on any channel, concurrently: a publish takes the
// connection's publish lock once, checks the gates (channel state and flow, connection.blocked,
// the confirm window, the outgoing bytes), encodes its frames straight into the publish staging,
// and in confirm mode registers with the channel's confirm tracker under the same lock, so that
// sequence numbers follow wire order. Only the empty-to-non-empty transition wakes the I/O
// thread. Confirms come back on the I/O thread (channel_impl::on_confirm, under the lock) and their
// callbacks run outside it (complete_confirms).
#include <algorithm>
#include <bit>

#include "codec/publish.h"
#include "engine/async/channel_impl.h"

namespace warren::async::detail {

using protocol::clock;
using protocol::time_point;

namespace {
constexpr std::uint64_t max_body_size = std::uint64_t{512} << 20;

// Whole frames in `frames` (a publish's, as encoded): for the metrics of a republish.
std::uint64_t frame_count(std::string_view frames) noexcept {
  std::uint64_t n = 0;
  for (std::size_t at = 0; at + codec::frame_header_size <= frames.size(); ++n) {
    const auto* p = reinterpret_cast<const unsigned char*>(frames.data() + at);
    const std::size_t size =
        std::size_t{p[3]} << 24 | std::size_t{p[4]} << 16 | std::size_t{p[5]} << 8 | p[6];
    at += codec::frame_header_size + size + 1;
  }
  return n;
}
}  // namespace

publish_status channel_impl::try_publish(std::string_view exchange, std::string_view routing_key,
                                         const codec::basic_properties& props,
                                         std::string_view body, const publish_options& o,
                                         confirm_callback& on_confirm) {
  if (body.size() > max_body_size) return publish_status::too_large;
  codec::basic_publish m;
  m.exchange = exchange;
  m.routing_key = routing_key;
  m.mandatory = o.mandatory;
  m.immediate = o.immediate;
  const std::size_t need = codec::publish_size(m, props, body.size(), frame_max_);
  bool wake = false;
  {
    std::lock_guard lock(staging_.lock());
    // The channel may be open again while the replay goes on: nothing overtakes the republished.
    if (staging_.recovering() && awaits_recovery_flag()) return publish_status::recovering;
    const protocol::channel_core::publish_gate gate = core_.can_publish();
    if (gate == protocol::channel_core::publish_gate::closed) return publish_status::closed;
    if (staging_.blocked() || gate == protocol::channel_core::publish_gate::blocked) {
      return publish_status::blocked;
    }
    if (gate == protocol::channel_core::publish_gate::window_full) {
      return publish_status::window_full;
    }
    if (!staging_.has_room(need)) return publish_status::buffer_full;
    char* at = staging_.reserve(need);
    std::size_t written = 0;
    if (codec::encode_publish(at, need, written, id(), m, props, body, frame_max_) !=
        codec::errc::ok) {
      staging_.unreserve(need);
      return publish_status::too_large;
    }
    core_.note_published();
    if (staging_.counting())
      staging_.count_frames(2 + codec::body_frame_count(body.size(), frame_max_));
    if (protocol::confirm_tracker* t = core_.confirms()) {
      // A time for the confirm timeout, or (metrics) for the confirm latency; none otherwise.
      const time_point now = has_timeout_          ? clock::now()
                             : staging_.counting() ? staging_.batch_time()
                                                   : time_point{};
      const std::uint64_t seq =
          t->on_publish(t->next_sequence(), now, o.mandatory, exchange, routing_key);
      callbacks_[seq & mask_] = std::move(on_confirm);
      if (republish_) frames_[seq & mask_].assign(at, written);
      outstanding_.store(t->outstanding(), std::memory_order_relaxed);
    }
    wake = staging_.staged();
  }
  if (wake) io_.wake();
  return publish_status::ok;
}

publish_status channel_impl::publish(std::string_view exchange, std::string_view routing_key,
                                     const codec::basic_properties& props, std::string_view body,
                                     time_point deadline, const publish_options& o,
                                     confirm_callback& on_confirm) {
  while (true) {
    const publish_status s = try_publish(exchange, routing_key, props, body, o, on_confirm);
    if (s == publish_status::ok || s == publish_status::closed || s == publish_status::too_large) {
      return s;
    }
    if (io_thread::current() != nullptr) return s;  // an I/O thread must never wait for itself
    if (clock::now() >= deadline) return publish_status::timeout;
    std::unique_lock lock(staging_.lock());
    staging_.wait_for_room(lock, deadline);
  }
}

std::future<confirm_result> channel_impl::publish_confirmed(std::string_view exchange,
                                                            std::string_view routing_key,
                                                            const codec::basic_properties& props,
                                                            std::string_view body,
                                                            const publish_options& o) {
  auto p = std::make_shared<std::promise<confirm_result>>();
  std::future<confirm_result> f = p->get_future();
  {
    std::lock_guard lock(staging_.lock());
    if (core_.confirms() == nullptr) {
      p->set_exception(
          std::make_exception_ptr(std::logic_error("publish_confirmed: not in confirm mode")));
      return f;
    }
  }
  confirm_callback cb = [p](const confirm_result& r) { p->set_value(r); };
  const publish_status s = try_publish(exchange, routing_key, props, body, o, cb);
  if (s != publish_status::ok) p->set_exception(std::make_exception_ptr(publish_rejected(s)));
  return f;
}

void channel_impl::confirm_select(std::size_t window, std::chrono::milliseconds timeout) {
  {
    std::lock_guard lock(staging_.lock());
    if (core_.confirms() != nullptr) return;
  }
  auto c = std::make_shared<rpc_call>(this, rpc_call::kind::confirm_select,
                                      codec::confirm_select_ok::id);
  c->confirms.window = std::max<std::size_t>(window, 1);
  c->confirms.timeout = timeout;
  call(codec::confirm_select{}, std::move(c));
}

void channel_impl::start_confirm_select(std::shared_ptr<rpc_call> c, out_buffer frame) {
  // Sized before the lock is taken: publishers spin on it.
  std::vector<confirm_callback> cbs(std::bit_ceil(c->confirms.window + 1));
  {
    std::lock_guard lock(staging_.lock());
    if (core_.confirms() != nullptr) {
      // Another thread's confirm_select went first.
      c->done.set_value(protocol::command{});
      return;
    }
    mask_ = cbs.size() - 1;
    if (republish_) frames_.assign(cbs.size(), std::string());
    callbacks_ = std::move(cbs);
    has_timeout_ = c->confirms.timeout.count() > 0;
    // The method joins the publish stream: every publish staged after it is numbered by the
    // broker, and by the tracker started here.
    staging_.append(frame.view());
    staging_.count_frames(1);
    staging_.staged();  // this is the I/O thread: its service round writes it
    core_.confirm_select_sent(c->confirms, c);
    // A recovered channel: the publishes kept from the lost connection go first, in their order,
    // numbered by the new tracker; their answers complete the original publishes.
    if (!kept_.empty()) {
      protocol::confirm_tracker* t = core_.confirms();
      const time_point now = clock::now();
      std::size_t n = 0;
      for (; n < kept_.size(); ++n) {
        kept_publish& k = kept_[n];
        const std::uint64_t seq = t->on_publish(k.token, now);
        if (seq == 0) break;  // not expected: they were kept under the same window
        staging_.append(k.frames);
        staging_.count_frames(frame_count(k.frames));
        // A nack refuses the copy, not the original: that one may have been stored before the
        // loss, so its outcome stays unknown (in doubt), never a nack. An ack settles both.
        callbacks_[seq & mask_] = [cb = std::move(k.callback)](const confirm_result& r) {
          if (r.what != confirm_result::outcome::nack) return cb(r);
          confirm_result d = r;
          d.what = confirm_result::outcome::in_doubt;
          cb(d);
        };
        frames_[seq & mask_] = std::move(k.frames);
      }
      kept_.erase(kept_.begin(), kept_.begin() + static_cast<std::ptrdiff_t>(n));
      republished_.fetch_add(n, std::memory_order_relaxed);
      if (metrics::channel_metrics* m = core_.metrics()) m->on_republished(n);
      outstanding_.store(t->outstanding(), std::memory_order_relaxed);
    }
  }
}

bool channel_impl::wait_for_confirms(time_point deadline) {
  check_not_io("wait_for_confirms");  // the confirms it waits for come on that thread
  std::unique_lock lock(staging_.lock());
  // Done means settled AND its callback has returned (callbacks run outside the lock).
  auto busy = [&] {
    const protocol::confirm_tracker* t = core_.confirms();
    return (t != nullptr && t->outstanding() != 0 && core_.is_open()) || undelivered_ != 0 ||
           !kept_.empty();
  };
  while (busy()) {
    if (clock::now() >= deadline) return false;
    staging_.wait_for_room(lock, deadline);
  }
  return true;
}

void channel_impl::set_on_return(std::function<void(const returned_message&)> f) {
  if (io_.on_this_thread()) {
    on_return_ = std::move(f);
    return;
  }
  auto fn = std::make_shared<std::function<void(const returned_message&)>>(std::move(f));
  io_.run_and_wait([this, fn] { on_return_ = std::move(*fn); });
}

}  // namespace warren::async::detail
