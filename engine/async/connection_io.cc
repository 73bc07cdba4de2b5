// The connection's socket side, on its I/O thread: reading (receive batching, the read pause),
// writing (segments of whole frames, many in one call), the TLS handshake, the timers of each
// service round, and the teardown. Socket system calls are io::stream's (engine/io).
#include <sys/uio.h>

#include <algorithm>

#include "engine/async/channel_impl.h"
#include "engine/async/connection_impl.h"
#include "engine/async/engine_impl.h"

namespace warren::async::detail {

using protocol::clock;
using protocol::time_point;

void connection_impl::start(time_point now) {
  events_ = io::event_loop::readable;
  io_.loop().add(stream_.fd(), events_, this);
  close_deadline_ = opts_.connect_timeout
                        ? now + std::chrono::duration_cast<clock::duration>(*opts_.connect_timeout)
                        : time_point::max();
  if (stream_.handshaking()) {
    step_handshake(now);
  } else {
    machine_->start(now);
  }
}

void connection_impl::step_handshake(time_point now) {
  const io::stream_result r = stream_.handshake();
  if (r.status == io::stream_status::ok) {
    machine_->start(now);
  } else if (r.status != io::stream_status::would_block) {
    transport_failed(r.error);
  }
  update_events();  // the handshake's flight may wait for the socket to take it
}

void connection_impl::transport_failed(const io::io_error& e) {
  if (!machine_) return;
  machine_->transport_closed(e.message);
  after_feed();
}

void connection_impl::on_event(bool readable, bool writable, time_point now) {
  if (dead()) return;
  if (readable) read_some(now);
  if (writable && !dead()) write_some();
}

// Reading ---------------------------------------------------------------------------------------

std::size_t connection_impl::read_some(time_point now) {
  const std::size_t got = read_socket(now);
  const receive_batching& b = eng_.options.rx_batching;
  if (b.min_bytes == 0 || dead() || !stream_.valid()) return got;
  // A call waits for its reply: the socket stays idle (reply_awaited), and these reads do not
  // count towards making it busy (the deliveries read before a reply must not hold it back).
  if (replies_awaited() != 0) return got;
  if (got == 0) {
    // Nothing was waiting (or reading is paused): idle, so the next byte wakes us at once.
    if (rx_lowat_ != 1) set_rx_lowat(1);
    batch_read_at_ = time_point::max();
    return got;
  }
  const auto wait = std::chrono::duration_cast<clock::duration>(b.max_wait);
  // Read twice within max_wait: a stream, worth batching. A lone message or reply is not.
  if (rx_lowat_ == 1 && last_read_ != time_point::min() && now - last_read_ < wait) {
    set_rx_lowat(static_cast<int>(std::min<std::size_t>(b.min_bytes, 1u << 30)));
  }
  last_read_ = now;
  if (rx_lowat_ != 1) batch_read_at_ = now + wait;
  return got;
}

void connection_impl::reply_awaited() {
  // Idle at once: what is already queued below the low-water mark is read now (Linux re-checks
  // readiness when SO_RCVLOWAT changes), and the timer no longer matters.
  if (rx_lowat_ != 1 && stream_.valid()) set_rx_lowat(1);
  batch_read_at_ = time_point::max();
  last_read_ = time_point::min();  // reads while waiting (the reply's too) do not make it busy
}

void connection_impl::set_rx_lowat(int octets) {
  // Linux wakes the loop for a TCP socket only once this many octets are queued (or at EOF, an
  // error, or when its receive window runs short).
  stream_.set_receive_low_water(octets);
  rx_lowat_ = octets;
}

std::size_t connection_impl::read_socket(time_point now) {
  if (dead() || !stream_.valid() || !machine_) return 0;
  std::size_t got = 0;
  // Bounded per event so one busy connection cannot starve the others on this thread; TLS
  // plaintext held inside the session is read regardless, since nothing would wake us for it.
  for (int round = 0; !dead() && !paused_.load(std::memory_order_relaxed); ++round) {
    if (round >= 16 && !stream_.buffered()) return got;
    if (stream_.handshaking()) {
      step_handshake(now);
      if (stream_.handshaking()) return got;
      continue;
    }
    rx_.make_room();
    const io::stream_result r = stream_.read(rx_.space(), rx_.space_size());
    if (r.status == io::stream_status::ok) {
      rx_.received(r.bytes);
      got += r.bytes;
      feed(now);
      // A short read emptied the socket: another read would only say would_block (a system call
      // per wake-up). The socket is level-triggered, so bytes that arrive meanwhile wake us.
      if (r.drained) return got;
      continue;
    }
    if (r.status != io::stream_status::would_block) transport_failed(r.error);
    return got;
  }
  return got;
}

void connection_impl::feed(time_point now) {
  feed_now_ = now;
  const std::size_t used = machine_->feed(rx_.unconsumed(), rx_.owner(), now);
  rx_.consume(used);
  after_feed();
}

void connection_impl::after_feed() {
  for (consumer_entry* e : batch_owners_) {
    pending_deliveries_.fetch_add(static_cast<std::int64_t>(e->batch.size()),
                                  std::memory_order_relaxed);
    e->post_batch();
  }
  batch_owners_.clear();
  if (!to_retire_.empty()) {
    std::lock_guard lock(retired_mu_);
    for (auto& e : to_retire_) retired_.push_back(std::move(e));
    to_retire_.clear();
  }
  const auto max_pending = static_cast<std::int64_t>(max_pending_);
  if (pending_deliveries_.load(std::memory_order_relaxed) > max_pending &&
      !paused_.load(std::memory_order_relaxed)) {
    paused_.store(true, std::memory_order_release);
    update_events();
    // A worker may have brought the count down between the check and the store.
    if (pending_deliveries_.load(std::memory_order_acquire) <= max_pending / 2) resume_reading();
  }
  std::vector<std::function<void()>> run;
  run.swap(deferred_);
  for (auto& f : run) f();
}

void connection_impl::resume_reading() {
  resume_posted_.store(false, std::memory_order_release);
  if (!paused_.load(std::memory_order_acquire)) return;
  if (pending_deliveries_.load(std::memory_order_acquire) >
      static_cast<std::int64_t>(max_pending_) / 2) {
    return;
  }
  paused_.store(false, std::memory_order_release);
  update_events();
}

// Writing ---------------------------------------------------------------------------------------

void connection_impl::push_segment(out_buffer b) {
  staging_.add_unsent(b.size);
  segs_.push_back(std::move(b));
}

void connection_impl::seal(time_point now) {
  if (machine_ && machine_->has_output()) {
    const std::string_view o = machine_->output();
    out_buffer b;
    if (!spare_.empty()) {
      b = std::move(spare_.back());
      spare_.pop_back();
    }
    b.append(o);
    push_segment(std::move(b));
    machine_->consume_output(o.size(), now);
  }
  if (!staging_.pending()) return;  // nothing staged: no lock
  out_buffer b;
  if (!spare_.empty()) {
    b = std::move(spare_.back());
    spare_.pop_back();
  }
  if (staging_.take(b)) {
    segs_.push_back(std::move(b));  // counted as unsent by take()
  } else if (b.cap != 0) {
    spare_.push_back(std::move(b));
  }
}

void connection_impl::write_some() {
  if (!stream_.valid() || dead()) return;
  if (stream_.handshaking()) {
    step_handshake(clock::now());
    return;
  }
  std::size_t written_total = 0;
  bool failed = false;
  if (stream_.wants_write()) {
    const io::stream_result f = stream_.flush();
    failed = f.status == io::stream_status::error;
    if (failed) transport_failed(f.error);
  }
  while (!failed && !segs_.empty() && !stream_.wants_write()) {
    iovec iov[64];
    int count = 0;
    std::size_t skip = seg_head_;
    for (auto it = segs_.begin(); it != segs_.end() && count < 64; ++it, skip = 0) {
      iov[count].iov_base = it->data.get() + skip;
      iov[count].iov_len = it->size - skip;
      ++count;
    }
    const io::stream_result r = stream_.write(iov, count);
    if (r.status == io::stream_status::error) {
      transport_failed(r.error);
      break;
    }
    if (r.status == io::stream_status::would_block) break;
    std::size_t left = r.bytes;
    written_total += left;
    while (left > 0) {
      out_buffer& f = segs_.front();
      const std::size_t rest = f.size - seg_head_;
      if (left < rest) {
        seg_head_ += left;
        break;
      }
      left -= rest;
      seg_head_ = 0;
      f.size = 0;
      if (spare_.size() < 4) spare_.push_back(std::move(f));
      segs_.pop_front();
    }
  }
  if (written_total != 0) {
    staging_.written(written_total);
    staging_.notify_room();
  }
  update_events();
}

void connection_impl::update_events() {
  if (finished() || !stream_.valid()) return;
  std::uint32_t want = 0;
  if (!paused_.load(std::memory_order_relaxed)) want |= io::event_loop::readable;
  if (!segs_.empty() || stream_.wants_write()) want |= io::event_loop::writable;
  if (want == events_) return;
  events_ = want;
  io_.loop().modify(stream_.fd(), want, this);
}

// Timers and the service round ------------------------------------------------------------------

time_point connection_impl::next_deadline() const {
  const phase p = phase_.load(std::memory_order_relaxed);
  if (p == phase::torn_down) return time_point::max();
  if (p == phase::ended) return time_point::min();
  time_point t = close_deadline_;
  const bool paused = paused_.load(std::memory_order_relaxed);
  if (machine_ && machine_->state() != protocol::connection_state::initial) {
    t = std::min(t,
                 paused ? std::max(machine_->next_timer(), paused_check_) : machine_->next_timer());
  }
  for (const auto& [id, ch] : channels_) t = std::min(t, ch->next_deadline());
  if (!paused) t = std::min(t, batch_read_at_);
  return t;
}

void connection_impl::on_deadline() {
  close_deadline_ = time_point::max();
  if (!machine_) return;
  std::string why = phase_.load(std::memory_order_relaxed) == phase::handshake
                        ? "connection timed out"
                        : "close handshake timed out";
  // A peer that stopped reading (RabbitMQ blocks a publishing connection in a memory alarm)
  // leaves frames behind; without confirm mode nothing else would tell the caller.
  if (const std::size_t left = staging_.outgoing(); left != 0) {
    why += "; " + std::to_string(left) + " octets of frames (publishes) were never written";
  }
  close_note_ = why;
  machine_->transport_closed(why);
  after_feed();
}

void connection_impl::service(time_point now) {
  if (finished()) return;
  // A busy socket (receive batching) below its low-water mark is read max_wait after the last
  // read; nothing there makes it idle again.
  if (!ended() && now >= batch_read_at_ && !paused_.load(std::memory_order_relaxed)) {
    read_some(now);
  }
  const bool started = machine_ && machine_->state() != protocol::connection_state::initial;
  if (!ended()) {
    if (now >= close_deadline_) {
      on_deadline();
    } else if (started && paused_.load(std::memory_order_relaxed)) {
      // While reading is paused the peer's frames (heartbeats included) are not seen, so the
      // machine must not judge it dead; it only keeps sending its own heartbeats.
      if (now >= machine_->next_timer() && now >= paused_check_) {
        machine_->send_heartbeat_if_idle(now);
        paused_check_ = now + std::chrono::milliseconds(200);
      }
    } else if (started && now >= machine_->next_timer()) {
      machine_->on_timer(now);
      after_feed();
    }
  }
  for (auto& [id, ch] : channels_) ch->service(now);
  for (auto it = channels_.begin(); it != channels_.end();) {
    if (it->second->core().state() == protocol::channel_state::closed &&
        !it->second->awaits_recovery()) {
      table_.release(it->first);
      it = channels_.erase(it);
    } else {
      ++it;
    }
  }
  if (drop_transport_ && !ended()) {
    drop_transport();
    return;
  }
  if (!started && !stream_.handshaking() && !ended()) return;
  seal(now);
  write_some();
  // Finishing a TLS handshake while writing starts the machine, whose protocol header must not
  // wait for the next event.
  if (machine_ && machine_->has_output() && !ended()) {
    seal(now);
    write_some();
  }
  if (ended()) teardown();
}

void connection_impl::teardown() {
  if (finished()) return;
  set_phase(phase::torn_down);
  if (stream_.valid()) {
    io_.loop().remove(stream_.fd());
    stream_.close();
  }
  for (auto& [id, ch] : channels_) table_.release(id);
  channels_.clear();
  segs_.clear();
  spare_.clear();
  rx_.release();
  // The machine holds receive buffers of partial commands; they must go back to this thread's
  // pool while it exists.
  machine_.reset();
  staging_.clear();
}

}  // namespace warren::async::detail
