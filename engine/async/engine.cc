#include "engine/async/engine.h"

#include <concurrentqueue/concurrentqueue.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "codec/publish.h"
#include "engine/async/publish_lock.h"
#include "engine/errors.h"
#include "engine/io/tls.h"
#include "engine/protocol/ack_coalescer.h"
#include "engine/protocol/confirm_tracker.h"
#include "engine/workers/dispatcher.h"

namespace warren::async {
namespace detail {

using protocol::clock;
using protocol::time_point;

namespace {

thread_local io_thread* current_io = nullptr;
thread_local int in_handler = 0;

constexpr std::chrono::seconds close_timeout{5};
constexpr std::uint64_t max_body_size = std::uint64_t{512} << 20;

void check_not_io(const char* what) {
  if (current_io != nullptr) {
    throw std::logic_error(std::string(what) + ": blocking call on an I/O thread");
  }
}

std::exception_ptr error_from(const protocol::close_reason& why) {
  if (why.reply_code == 0) {
    return std::make_exception_ptr(recoverable_connection_error(
        why.reply_text.empty() ? std::string("connection lost") : why.reply_text));
  }
  return make_error(why.reply_code, why.reply_text, why.class_id, why.method_id,
                    std::string(codec::method_name(why.class_id, why.method_id)));
}

std::exception_ptr channel_closed_error() {
  return std::make_exception_ptr(recoverable_connection_error("channel is closed"));
}

// What a blocking call throws when engine_options::rpc_timeout passes without its reply.
amqp_timeout rpc_timed_out(std::string_view what, std::chrono::milliseconds after) {
  return amqp_timeout(std::string(what) + ": no reply within " + std::to_string(after.count()) +
                      " ms");
}

std::string encode_args(const codec::field_table& t) {
  codec::errc e = codec::errc::ok;
  std::string s = codec::encode_table(t, &e);
  if (e != codec::errc::ok) throw std::invalid_argument("arguments table cannot be encoded");
  return s;
}

confirm_result to_result(const protocol::confirm_event& e) {
  confirm_result r{};
  r.what = static_cast<confirm_result::outcome>(e.outcome);
  r.sequence = e.sequence;
  r.returned = e.returned;
  r.reply_code = e.reply_code;
  r.reply_text = std::string(e.reply_text);
  return r;
}

std::size_t round_up_pow2(std::size_t n) {
  std::size_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

}  // namespace

// Bytes for the wire. Unlike std::string, growing it does not zero-fill, which matters on the
// publish path (each publish reserves its exact size and encodes into it).
struct out_buffer {
  std::unique_ptr<char[]> data;
  std::size_t size = 0;
  std::size_t cap = 0;

  char* grow(std::size_t n) {
    if (size + n > cap) {
      std::size_t c = std::max<std::size_t>(cap * 2, std::max<std::size_t>(size + n, 4096));
      std::unique_ptr<char[]> d(new char[c]);
      if (size != 0) std::memcpy(d.get(), data.get(), size);
      data = std::move(d);
      cap = c;
    }
    char* p = data.get() + size;
    size += n;
    return p;
  }
  void append(std::string_view s) { std::memcpy(grow(s.size()), s.data(), s.size()); }
  std::string_view view() const noexcept { return {data.get(), size}; }
};

struct ack_request {
  enum class kind : std::uint8_t { ack, nack, reject, idle };
  std::shared_ptr<channel_impl> ch;
  std::uint64_t tag = 0;
  kind what = kind::ack;
  bool multiple = false;
  bool requeue = false;
};

// A call's mark among those its connection counts as waiting for a reply (receive batching is off
// while any is counted: connection_impl::begin_wait). I/O thread only.
struct reply_wait {
  bool counted = false;
};

// connection.update-secret waiting for update-secret-ok.
struct secret_call {
  std::promise<void> done;
  reply_wait wait;
};

struct rpc_call {
  // 0: nowait, no reply comes; `done` is set once the frame is queued.
  std::uint32_t reply_id = 0;
  std::uint32_t alt_reply_id = 0;  // basic.get: get-empty answers it as well as get-ok
  std::promise<protocol::command> done;
  // basic.consume: registered on consume-ok (with nowait, when the frame is queued).
  std::unique_ptr<struct consumer_entry> consumer;
  // I/O thread, after the channel's held acks went and before the frame is queued: the
  // engine's own state the method changes (basic.recover forgets the tags it gives back).
  std::function<void(channel_impl&)> before_send;
  bool no_ack = false;  // basic.get: whether the get-ok delivery needs a decision
  reply_wait wait;      // counted from the frame's queueing until the wait ends (I/O thread)

  bool answered_by(std::uint32_t id) const noexcept {
    return id == reply_id || (alt_reply_id != 0 && id == alt_reply_id);
  }
};

// What a delivery needs to route its ack: the channel, and whether acks are expected at all.
struct consumer_impl {
  std::atomic<std::int64_t> refs{1};
  std::shared_ptr<channel_impl> ch;
  bool no_ack = false;
  void handled(std::size_t n) noexcept;  // a worker handled n of this consumer's deliveries
};

struct consumer_entry {
  std::string tag;
  consumer_ref route;
  std::size_t uncounted = 0;  // deliveries in `batch` whose reference is not yet counted
  std::unique_ptr<workers::mailbox<delivery>> box;
  std::function<void(std::string_view)> on_cancel;
  std::vector<delivery> batch;  // filled during one feed(), posted in bulk after it
  consumer_record record;
};

class io_thread {
 public:
  io_thread(engine_impl& eng, const engine_options& o);
  ~io_thread();

  void post(std::function<void()> f) {
    tasks_.enqueue(std::move(f));
    wake();
  }
  // Runs `f` on this thread and waits until it has run (from any other thread).
  void run_and_wait(const std::function<void()>& f) {
    std::promise<void> done;
    std::future<void> ran = done.get_future();
    post([&f, &done] {
      f();
      done.set_value();
    });
    ran.wait();
  }
  void post_ack(ack_request&& r) {
    acks_.enqueue(std::move(r));
    wake();
  }
  void schedule_flush(std::shared_ptr<connection_impl> c) {
    flushes_.enqueue(std::move(c));
    wake();
  }
  void wake() noexcept {
    if (!wake_pending_.exchange(true, std::memory_order_acq_rel)) {
      std::uint64_t one = 1;
      [[maybe_unused]] ssize_t r = ::write(ev_, &one, sizeof one);
    }
  }
  rx_pool& pool() noexcept { return pool_; }
  int epoll_fd() const noexcept { return ep_; }
  void add(std::shared_ptr<connection_impl> c);  // I/O thread
  bool on_this_thread() const noexcept { return current_io == this; }
  void stop();
  // I/O thread: applies the acks/nacks/rejects queued so far to their channels' coalescers and
  // sends those due. Also called before an RPC, so that a decision made before it goes first.
  void apply_acks(time_point now);
  // epoll_wait until `deadline` (max: no timeout; min or past: poll).
  int wait_events(epoll_event* evs, int max, time_point deadline);

 private:
  void run();

  engine_impl& eng_;
  int ep_ = -1;
  int ev_ = -1;
  rx_pool pool_;
  std::vector<std::shared_ptr<connection_impl>> conns_;
  moodycamel::ConcurrentQueue<std::function<void()>> tasks_;
  moodycamel::ConcurrentQueue<ack_request> acks_;
  moodycamel::ConcurrentQueue<std::shared_ptr<connection_impl>> flushes_;
  std::atomic<bool> wake_pending_{false};
  std::atomic<bool> stop_{false};
  bool no_pwait2_ = false;                              // the kernel said ENOSYS
  std::vector<std::shared_ptr<channel_impl>> touched_;  // kept alive until their acks are sent
  std::thread thread_;
};

class engine_impl {
 public:
  explicit engine_impl(engine_options o) : options(o), pool(o.workers) {
    const unsigned n = std::max(1u, o.io_threads);
    for (unsigned i = 0; i < n; ++i) ios.push_back(std::make_unique<io_thread>(*this, options));
  }
  io_thread& next_io() { return *ios[rr.fetch_add(1, std::memory_order_relaxed) % ios.size()]; }

  engine_options options;
  workers::worker_pool pool;
  std::vector<std::unique_ptr<io_thread>> ios;
  std::atomic<unsigned> rr{0};
  std::mutex conns_mu;
  std::vector<std::shared_ptr<connection_impl>> conns;  // until closed by the user or ~engine
};

class channel_impl : public std::enable_shared_from_this<channel_impl> {
 public:
  channel_impl(std::shared_ptr<connection_impl> c, std::uint16_t channel_id)
      : conn(std::move(c)), id(channel_id) {}

  // I/O thread ------------------------------------------------------------------------------
  void on_command(protocol::command& cmd, time_point now);
  void on_closed(confirm_result::outcome why, const protocol::close_reason& reason, bool by_peer);
  void apply(const ack_request& r, time_point now);
  void send_acks(time_point now, bool flush_all);
  void start_rpc(std::shared_ptr<rpc_call> call, out_buffer frame);
  void complete_confirms();
  void register_consumer(std::unique_ptr<consumer_entry> e);
  void drop_consumer(std::string_view tag);  // cancelled by this client
  // Cancelled no-ack consumers (see cancelled_no_ack): the tags whose late deliveries are owed
  // no decision.
  void remember_cancelled_no_ack(std::string_view tag);
  bool cancelled_with_no_ack(std::string_view tag) const;
  // An RPC on this channel got no reply in time: the channel closes with `why` as its error.
  // `call`, whose caller gave up, no longer counts as waiting for a reply.
  void abandon(std::exception_ptr why, rpc_call& call);
  // The fields basic.deliver and basic.get-ok share, viewing `cmd`'s buffers (any thread).
  template <class M>
  static void fill(delivery& d, const protocol::command& cmd, const M& m) {
    d.header_ = cmd.header;
    d.body_ = cmd.body;
    d.exchange_ = m.exchange;
    d.routing_key_ = m.routing_key;
    d.tag_ = m.delivery_tag;
    d.redelivered_ = m.redelivered;
  }

  // Any thread but an I/O thread -----------------------------------------------------------
  template <class M>
  protocol::command call(const M& m, std::uint32_t reply_id,
                         std::unique_ptr<consumer_entry> consumer = {});
  template <class M>
  protocol::command call(const M& m, std::shared_ptr<rpc_call> c);
  void throw_if_closed() const;
  // Posts abandon() and waits for it.
  void abandon_after_timeout(std::string_view what, rpc_call& call);

  publish_status try_publish(std::string_view exchange, std::string_view routing_key,
                             const codec::basic_properties& props, std::string_view body,
                             const publish_options& o, confirm_callback& on_confirm);

  std::shared_ptr<connection_impl> conn;
  const std::uint16_t id;

  enum class state : std::uint8_t { opening, open, closing, closed };
  state st = state::opening;  // I/O thread
  std::deque<std::shared_ptr<rpc_call>> rpcs;
  std::shared_ptr<rpc_call> close_call;
  protocol::ack_coalescer coalescer;
  std::map<std::string, std::unique_ptr<consumer_entry>, std::less<>> consumers;
  // Tags of no-ack consumers cancelled on this channel, most recent last. A delivery still in
  // flight for one is settled already: rejecting it would name a tag the broker no longer holds
  // (406, a channel error). Only deliveries in flight at the cancel can name a cancelled
  // consumer, so a short memory serves, as in the blocking client (engine/client/channel.cc):
  // the oldest tag is forgotten beyond cancelled_no_ack_max, keeping a service that consumes and
  // cancels for ever in constant memory. Nothing tells when the last of them has arrived (a
  // nowait cancel has no cancel-ok), so entries are not dropped on an event, except that a
  // consumer registered under a tag drops it: that tag's deliveries are then the new one's.
  static constexpr std::size_t cancelled_no_ack_max = 64;
  std::deque<std::string> cancelled_no_ack;
  consumer_entry* last_consumer = nullptr;  // deliveries come in runs for one consumer
  bool acks_touched = false;
  // basic.recover calls sent and not yet answered: the broker requeues every delivery that
  // reaches us meanwhile, so none of them is owed a decision.
  int recovering = 0;
  std::function<void(const returned_message&)> on_return;  // set on the I/O thread
  std::atomic<std::int64_t> pending{0};                    // deliveries posted, not handled

  // Publish state, guarded by conn->pub_mu.
  bool pub_open = false;
  bool flow = true;
  std::unique_ptr<protocol::confirm_tracker> tracker;
  std::vector<confirm_callback> callbacks;
  std::uint64_t mask = 0;
  bool has_timeout = false;
  std::uint64_t published = 0;  // publishes made in confirm mode
  std::size_t undelivered = 0;  // settled, callback not yet returned

  std::atomic<bool> open_flag{false};
  std::atomic<bool> flow_flag{true};
  std::atomic<std::size_t> outstanding{0};
  mutable std::mutex err_mu;
  std::exception_ptr error;

  struct done_confirm {
    confirm_result result;
    confirm_callback callback;
  };
  std::vector<done_confirm> done;  // I/O thread: completions gathered under the lock
};

class connection_impl : public protocol::connection_handler,
                        public std::enable_shared_from_this<connection_impl> {
 public:
  connection_impl(engine_impl& e, io_thread& t, const warren::connection_options& o,
                  io::unique_fd socket, std::unique_ptr<io::tls_session> session);
  ~connection_impl() override;

  // I/O thread ------------------------------------------------------------------------------
  void start(time_point now);
  void on_event(std::uint32_t events, time_point now);
  void service(time_point now);
  time_point next_deadline() const;
  bool finished() const noexcept { return torn_down_; }
  void seal(time_point now);  // staging and the machine's output into segments, in that order
  void push_segment(out_buffer b);
  void after_feed();
  void update_events();
  void notify_waiters();
  template <class M>
  void send(std::uint16_t channel, const M& m) {
    if (machine_ && machine_->is_open()) machine_->send(channel, m);
  }
  void resume_reading();
  void begin_close();
  // Receive batching never holds a reply back: while any call on this connection waits for one
  // (the handshake connect() waits for, an RPC on any channel, channel.open, channel.close,
  // update-secret, the connection's own close), the socket stays idle (SO_RCVLOWAT 1, no batching
  // timer) and reads do not make it busy, however many deliveries arrive before the reply.
  // begin_wait counts a call as its frame is queued; end_wait uncounts it on every path that ends
  // the wait: its reply, the close of its channel or connection, its caller giving up after
  // rpc_timeout. Idempotent per call (the mark says whether it is counted). I/O thread.
  void begin_wait(reply_wait& w);
  void end_wait(reply_wait& w);
  std::size_t replies_awaited() const noexcept { return replies_awaited_; }
  void batch_owners_push(consumer_entry* e) { batch_owners_.push_back(e); }
  std::vector<protocol::ack_action>& actions() { return actions_; }
  bool machine_open() const noexcept { return machine_ && machine_->is_open() && !dead_; }
  void machine_close_channel(std::uint16_t channel, std::uint16_t code, std::string_view text) {
    if (!machine_open()) return;
    seal(clock::now());
    machine_->close_channel(channel, code, text);
  }
  void force_close(std::string_view why);

  // connection_handler
  void on_open() override;
  void on_command(protocol::command& cmd) override;
  void on_channel_closed(std::uint16_t channel, const protocol::close_reason& why) override;
  void on_blocked(std::string_view reason) override;
  void on_unblocked() override;
  void on_closed(const protocol::close_reason& why) override;

  // Any thread ------------------------------------------------------------------------------
  std::shared_ptr<channel_impl> open_channel();
  void update_secret(std::string_view new_secret, std::string_view why);
  void close();
  void drain_retired();
  void retire(std::unique_ptr<consumer_entry> e) { to_retire_.push_back(std::move(e)); }
  void delivery_handled(std::size_t n) noexcept;

  engine_impl& eng;
  io_thread& io;
  warren::connection_options opts;
  const std::size_t max_out;
  const std::int64_t max_pending;

  std::promise<void> opened;
  std::atomic<bool> open_flag{false};
  std::atomic<bool> blocked_flag{false};
  std::uint32_t frame_max = 0;  // set before `opened` is fulfilled

  // Publish staging, guarded by pub_mu.
  mutable publish_lock pub_mu;
  std::condition_variable_any room_cv;
  std::atomic<int> waiters{0};
  out_buffer staging;
  // True from the first publish into an empty staging buffer until the I/O thread takes the
  // buffer: written under pub_mu, read without it to skip the lock when nothing is staged.
  std::atomic<bool> flush_scheduled{false};
  bool pub_open = false;
  bool blocked = false;
  std::atomic<std::size_t> unsent{0};    // bytes in segments, not yet written
  std::atomic<bool> any_timeout{false};  // some channel has a confirm timeout

  std::atomic<std::int64_t> pending_deliveries{0};
  std::atomic<bool> paused{false};
  std::atomic<bool> resume_posted{false};

  std::mutex cb_mu;
  std::function<void(std::string_view)> on_blocked_cb;
  std::function<void()> on_unblocked_cb;
  std::function<void(const protocol::close_reason&)> on_closed_cb;

  mutable std::mutex state_mu;
  protocol::close_reason reason;
  bool closed = false;
  std::condition_variable closed_cv;

  mutable std::mutex topo_mu;
  topology_record topo;

  std::mutex retired_mu;
  std::vector<std::unique_ptr<consumer_entry>> retired;

  std::map<std::uint16_t, std::shared_ptr<channel_impl>> channels;  // I/O thread
  std::vector<std::function<void()>> deferred;                      // I/O thread, after feed
  // update-secret calls waiting for their -ok, oldest first (I/O thread). One that timed out
  // stays until its -ok or the close, so a late -ok never answers a later call.
  std::deque<std::shared_ptr<secret_call>> secret_waiters;

 private:
  // Reads what the socket has (bounded per call), feeds the machine, and keeps receive
  // batching's state; returns the octets received.
  std::size_t read_some(time_point now);
  std::size_t read_socket(time_point now);
  void set_rx_lowat(int octets);
  void feed_plain(time_point now);
  bool ensure_rx_room();
  void write_some();
  bool flush_tls();  // false: EAGAIN or failed
  void tls_step(time_point now);
  void teardown();

  std::unique_ptr<protocol::connection_machine> machine_;
  io::unique_fd fd_;
  std::unique_ptr<io::tls_session> tls_;
  bool tls_handshaking_ = false;
  bool started_ = false;
  bool dead_ = false;  // on_closed ran; teardown at the end of this service round
  bool torn_down_ = false;
  std::uint32_t events_ = 0;
  time_point close_deadline_ = time_point::max();
  bool connecting_ = false;    // close_deadline_ is connect_timeout's, for the handshake
  std::string close_note_;     // why a deadline ended the connection, added to the close reason
  time_point paused_check_{};  // next heartbeat check while reading is paused
  time_point feed_now_{};      // the `now` of the feed() in progress
  // Receive batching (engine_options::rx_batching): the socket's SO_RCVLOWAT (1 while idle),
  // when it was last read with something to show for it, and when a busy socket is read next.
  int rx_lowat_ = 1;
  time_point last_read_ = time_point::min();
  time_point batch_read_at_ = time_point::max();
  std::size_t replies_awaited_ = 0;       // calls counted by begin_wait and not yet by end_wait
  reply_wait open_wait_;                  // the handshake (TLS and AMQP), until open-ok or the end
  reply_wait close_wait_;                 // the connection's own close, waiting for close-ok
  channel_impl* last_channel_ = nullptr;  // on_command's cache; cleared when channels shrink

  rx_ref rx_;
  std::size_t rx_begin_ = 0;
  std::size_t rx_end_ = 0;
  std::vector<char> cipher_;

  std::deque<out_buffer> segs_;
  std::size_t seg_head_ = 0;  // written octets of segs_.front()
  std::vector<out_buffer> spare_;

  std::vector<consumer_entry*> batch_owners_;
  std::vector<std::unique_ptr<consumer_entry>> to_retire_;
  std::vector<protocol::ack_action> actions_;
};

// consumer_impl ---------------------------------------------------------------------------------

consumer_ref::consumer_ref(const consumer_ref& o) noexcept : p_(o.p_) {
  if (p_ != nullptr) p_->refs.fetch_add(1, std::memory_order_relaxed);
}

consumer_ref::~consumer_ref() {
  if (p_ != nullptr && p_->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete p_;
}

void consumer_impl::handled(std::size_t n) noexcept {
  const auto count = static_cast<std::int64_t>(n);
  if (ch->pending.fetch_sub(count, std::memory_order_acq_rel) == count && !no_ack) {
    // Nothing left to handle on this channel: no more acks are coming soon, so the coalesced
    // ones go now instead of waiting for max_delay.
    ack_request r;
    r.ch = ch;
    r.what = ack_request::kind::idle;
    ch->conn->io.post_ack(std::move(r));
  }
  ch->conn->delivery_handled(n);
}

void connection_impl::delivery_handled(std::size_t n) noexcept {
  const auto count = static_cast<std::int64_t>(n);
  const std::int64_t left = pending_deliveries.fetch_sub(count, std::memory_order_acq_rel) - count;
  if (paused.load(std::memory_order_acquire) && left <= max_pending / 2 &&
      !resume_posted.exchange(true, std::memory_order_acq_rel)) {
    io.post([self = shared_from_this()] {
      self->resume_reading();
      // Read at once: the machine's dead-peer check must see the peer's bytes (queued while
      // paused) before its next timer runs.
      if (!self->paused.load(std::memory_order_relaxed)) self->read_some(clock::now());
    });
  }
}

// io_thread -------------------------------------------------------------------------------------

io_thread::io_thread(engine_impl& eng, const engine_options& o)
    : eng_(eng), pool_(o.rx_buffer_size, o.rx_pool_max) {
  ep_ = ::epoll_create1(EPOLL_CLOEXEC);
  ev_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (ep_ < 0 || ev_ < 0) throw std::system_error(errno, std::system_category(), "epoll/eventfd");
  epoll_event e{};
  e.events = EPOLLIN;
  e.data.ptr = nullptr;
  ::epoll_ctl(ep_, EPOLL_CTL_ADD, ev_, &e);
  thread_ = std::thread([this] { run(); });
}

io_thread::~io_thread() {
  stop();
  ::close(ev_);
  ::close(ep_);
}

void io_thread::stop() {
  if (!thread_.joinable()) return;
  stop_.store(true);
  wake();
  thread_.join();
}

void io_thread::add(std::shared_ptr<connection_impl> c) {
  conns_.push_back(std::move(c));
}

void io_thread::run() {
  current_io = this;
  epoll_event evs[64];
  std::function<void()> task;
  std::shared_ptr<connection_impl> flush;
  while (true) {
    time_point deadline = time_point::max();
    for (auto& c : conns_) deadline = std::min(deadline, c->next_deadline());
    // Producers write the eventfd only while this thread may sleep: from here to the end of
    // epoll_wait. The exchange reads what a producer wrote with its own exchange, so work it
    // queued before (without writing the eventfd) is visible to the check below. stop() is
    // such a producer: a stop requested while this thread was busy wrote no eventfd.
    wake_pending_.exchange(false, std::memory_order_acq_rel);
    if (tasks_.size_approx() != 0 || acks_.size_approx() != 0 || flushes_.size_approx() != 0 ||
        stop_.load()) {
      deadline = time_point::min();
    }
    const int n = wait_events(evs, 64, deadline);
    wake_pending_.store(true, std::memory_order_relaxed);  // busy: no wake-up needed
    time_point now = clock::now();
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.ptr == nullptr) {
        std::uint64_t v;
        [[maybe_unused]] ssize_t r = ::read(ev_, &v, sizeof v);
        continue;
      }
      static_cast<connection_impl*>(evs[i].data.ptr)->on_event(evs[i].events, now);
    }
    while (tasks_.try_dequeue(task)) {
      task();
      task = nullptr;
    }
    now = clock::now();
    apply_acks(now);
    while (flushes_.try_dequeue(flush)) flush.reset();  // the service round below writes it
    for (auto& c : conns_) c->service(now);
    std::erase_if(conns_, [](const auto& c) { return c->finished(); });
    if (stop_.load() && conns_.empty()) break;
    if (stop_.load()) {
      for (auto& c : conns_) c->force_close("engine stopped");
    }
  }
  current_io = nullptr;
}

int io_thread::wait_events(epoll_event* evs, int max, time_point deadline) {
  if (deadline == time_point::max()) return ::epoll_wait(ep_, evs, max, -1);
  const time_point now = clock::now();
  const clock::duration left = deadline <= now ? clock::duration::zero() : deadline - now;
  // Timers finer than a millisecond (receive batching's max_wait, ack coalescing's max_delay)
  // need epoll_pwait2's timespec; kernels before 5.11 lack it, and get milliseconds rounded up.
  if (!no_pwait2_) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    const timespec ts{static_cast<time_t>(ns / 1'000'000'000),
                      static_cast<long>(ns % 1'000'000'000)};
    const int n = ::epoll_pwait2(ep_, evs, max, &ts, nullptr);
    if (n >= 0 || errno != ENOSYS) return n;
    no_pwait2_ = true;
  }
  return ::epoll_wait(ep_, evs, max,
                      static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count()));
}

void io_thread::apply_acks(time_point now) {
  ack_request ack;
  while (acks_.try_dequeue(ack)) {
    ack.ch->apply(ack, now);
    if (ack.ch->acks_touched) {
      ack.ch->acks_touched = false;
      touched_.push_back(std::move(ack.ch));
    }
    ack.ch.reset();
  }
  for (auto& ch : touched_) ch->send_acks(now, false);
  touched_.clear();
}

// connection_impl -------------------------------------------------------------------------------

connection_impl::connection_impl(engine_impl& e, io_thread& t, const warren::connection_options& o,
                                 io::unique_fd socket, std::unique_ptr<io::tls_session> session)
    : eng(e),
      io(t),
      opts(o),
      max_out(e.options.max_outgoing_bytes),
      max_pending(
          static_cast<std::int64_t>(std::max<std::size_t>(e.options.max_pending_deliveries, 2))),
      machine_(std::make_unique<protocol::connection_machine>(o.machine_config(), *this)),
      fd_(std::move(socket)),
      tls_(std::move(session)) {}

connection_impl::~connection_impl() = default;

void connection_impl::start(time_point now) {
  // connect() waits for open-ok: start, tune and open-ok arrive in reads close together, which
  // would otherwise make the socket busy before open-ok (ended in on_open or on_closed).
  begin_wait(open_wait_);
  events_ = EPOLLIN;
  epoll_event e{};
  e.events = events_;
  e.data.ptr = this;
  ::epoll_ctl(io.epoll_fd(), EPOLL_CTL_ADD, fd_.get(), &e);
  if (tls_) {
    tls_handshaking_ = true;
    cipher_.resize(64 * 1024);
    tls_step(now);
  } else {
    started_ = true;
    machine_->start(now);
  }
  close_deadline_ = opts.connect_timeout
                        ? now + std::chrono::duration_cast<clock::duration>(*opts.connect_timeout)
                        : time_point::max();
  connecting_ = true;
}

void connection_impl::update_events() {
  if (torn_down_ || !fd_.valid()) return;
  std::uint32_t want = 0;
  if (!paused.load(std::memory_order_relaxed)) want |= EPOLLIN;
  if (!segs_.empty() || (tls_ && !tls_->pending_output().empty())) want |= EPOLLOUT;
  if (want == events_) return;
  events_ = want;
  epoll_event e{};
  e.events = want;
  e.data.ptr = this;
  ::epoll_ctl(io.epoll_fd(), EPOLL_CTL_MOD, fd_.get(), &e);
}

void connection_impl::on_event(std::uint32_t ev, time_point now) {
  if (dead_ || torn_down_) return;
  if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_some(now);
  if ((ev & EPOLLOUT) && !dead_) write_some();
}

bool connection_impl::ensure_rx_room() {
  const std::size_t used = rx_end_ - rx_begin_;
  std::size_t need = codec::frame_header_size;
  if (used >= codec::frame_header_size) {
    const auto* p = reinterpret_cast<const unsigned char*>(rx_.get()->data() + rx_begin_);
    need = (std::size_t{p[3]} << 24 | std::size_t{p[4]} << 16 | std::size_t{p[5]} << 8 | p[6]) +
           codec::frame_overhead;
  }
  const std::size_t cap = rx_ ? rx_->capacity() : 0;
  if (rx_ && cap - rx_end_ >= 4096 && cap - rx_begin_ >= need) return true;
  if (rx_ && rx_.unique() && cap >= std::max(need, used + 4096)) {
    std::memmove(rx_->data(), rx_->data() + rx_begin_, used);
    rx_end_ = used;
    rx_begin_ = 0;
    return true;
  }
  // The old buffer is still viewed by deliveries (or too small for the frame): the partial frame
  // moves to a fresh one and the old one goes back to the pool when they are released.
  rx_ref fresh =
      need + 4096 > io.pool().buffer_size() ? rx_ref::allocate(need + 4096) : io.pool().acquire();
  if (used != 0) std::memcpy(fresh->data(), rx_->data() + rx_begin_, used);
  rx_ = std::move(fresh);
  rx_begin_ = 0;
  rx_end_ = used;
  return true;
}

void connection_impl::feed_plain(time_point now) {
  feed_now_ = now;
  const std::size_t used =
      machine_->feed(std::string_view(rx_->data() + rx_begin_, rx_end_ - rx_begin_), rx_, now);
  rx_begin_ += used;
  if (rx_begin_ == rx_end_) {
    if (rx_.unique()) {
      rx_begin_ = rx_end_ = 0;
    } else {
      rx_.reset();
      rx_begin_ = rx_end_ = 0;
    }
  }
  after_feed();
}

std::size_t connection_impl::read_some(time_point now) {
  const std::size_t got = read_socket(now);
  const receive_batching& b = eng.options.rx_batching;
  if (b.min_bytes == 0 || dead_ || torn_down_ || !fd_.valid()) return got;
  // A call waits for its reply: the socket stays as begin_wait left it (idle), and these reads
  // do not count towards making it busy (the deliveries read before a reply must not hold the
  // reply back).
  if (replies_awaited_ != 0) return got;
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

void connection_impl::begin_wait(reply_wait& w) {
  if (w.counted) return;
  w.counted = true;
  ++replies_awaited_;
  // Idle at once: what is already queued below the low-water mark is read now (Linux re-checks
  // readiness when SO_RCVLOWAT changes), and the timer no longer matters.
  if (rx_lowat_ != 1 && fd_.valid()) set_rx_lowat(1);
  batch_read_at_ = time_point::max();
  last_read_ = time_point::min();  // reads while waiting (the reply's too) do not make it busy
}

void connection_impl::end_wait(reply_wait& w) {
  if (!w.counted) return;
  w.counted = false;
  --replies_awaited_;
}

void connection_impl::set_rx_lowat(int octets) {
  // Linux wakes epoll for a TCP socket only once this many octets are queued (or at EOF, an
  // error, or when its receive window runs short), and re-checks readiness when it changes.
  // Where the socket ignores it (a Unix socket), batching only changes when we read.
  ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVLOWAT, &octets, sizeof octets);
  rx_lowat_ = octets;
}

std::size_t connection_impl::read_socket(time_point now) {
  if (dead_ || torn_down_ || !fd_.valid()) return 0;
  std::size_t got = 0;
  // Bounded per event so one busy connection cannot starve the others on this thread.
  for (int round = 0; round < 16 && !dead_ && !paused.load(std::memory_order_relaxed); ++round) {
    if (!tls_) {
      ensure_rx_room();
      const std::size_t room = rx_->capacity() - rx_end_;
      const ssize_t n = ::recv(fd_.get(), rx_->data() + rx_end_, room, 0);
      if (n > 0) {
        rx_end_ += static_cast<std::size_t>(n);
        got += static_cast<std::size_t>(n);
        feed_plain(now);
        // A short read emptied the socket: another recv would only say EAGAIN (a system call
        // per wake-up). The socket is level-triggered, so bytes that arrive meanwhile wake us.
        if (static_cast<std::size_t>(n) < room) return got;
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return got;
      if (n < 0 && errno == EINTR) continue;
      machine_->transport_closed(n == 0 ? "connection closed by peer"
                                        : std::string("recv: ") + std::strerror(errno));
      after_feed();
      return got;
    }
    const ssize_t n = ::recv(fd_.get(), cipher_.data(), cipher_.size(), 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return got;
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      machine_->transport_closed(n == 0 ? "connection closed by peer"
                                        : std::string("recv: ") + std::strerror(errno));
      after_feed();
      return got;
    }
    got += static_cast<std::size_t>(n);
    tls_->feed(std::string_view(cipher_.data(), static_cast<std::size_t>(n)));
    if (tls_handshaking_) {
      tls_step(now);
      if (tls_handshaking_) continue;
    }
    while (!dead_) {
      ensure_rx_room();
      const io::tls_read_result r = tls_->read(rx_->data() + rx_end_, rx_->capacity() - rx_end_);
      if (r.status == io::read_status::ok) {
        rx_end_ += r.bytes;
        feed_plain(now);
        continue;
      }
      if (r.status == io::read_status::want_read) break;
      machine_->transport_closed(r.status == io::read_status::closed ? "TLS closed by peer"
                                                                     : tls_->error().message);
      after_feed();
      return got;
    }
  }
  return got;
}

void connection_impl::after_feed() {
  for (consumer_entry* e : batch_owners_) {
    const std::size_t n = e->batch.size();
    e->route->refs.fetch_add(static_cast<std::int64_t>(e->uncounted), std::memory_order_relaxed);
    e->uncounted = 0;
    e->route->ch->pending.fetch_add(static_cast<std::int64_t>(n), std::memory_order_relaxed);
    pending_deliveries.fetch_add(static_cast<std::int64_t>(n), std::memory_order_relaxed);
    e->box->post_bulk(e->batch.begin(), n);
    e->batch.clear();
  }
  batch_owners_.clear();
  if (!to_retire_.empty()) {
    std::lock_guard lock(retired_mu);
    for (auto& e : to_retire_) retired.push_back(std::move(e));
    to_retire_.clear();
  }
  if (pending_deliveries.load(std::memory_order_relaxed) > max_pending &&
      !paused.load(std::memory_order_relaxed)) {
    paused.store(true, std::memory_order_release);
    update_events();
    // A worker may have brought the count down between the check and the store.
    if (pending_deliveries.load(std::memory_order_acquire) <= max_pending / 2) resume_reading();
  }
  std::vector<std::function<void()>> run;
  run.swap(deferred);
  for (auto& f : run) f();
}

void connection_impl::resume_reading() {
  resume_posted.store(false, std::memory_order_release);
  if (!paused.load(std::memory_order_acquire)) return;
  if (pending_deliveries.load(std::memory_order_acquire) > max_pending / 2) return;
  paused.store(false, std::memory_order_release);
  update_events();
}

void connection_impl::push_segment(out_buffer b) {
  unsent.fetch_add(b.size, std::memory_order_relaxed);
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
  if (!flush_scheduled.load(std::memory_order_relaxed)) return;  // nothing staged: no lock
  out_buffer b;
  {
    std::lock_guard lock(pub_mu);
    if (staging.size == 0) return;
    if (!spare_.empty()) {
      b = std::move(spare_.back());
      spare_.pop_back();
    }
    std::swap(b, staging);
    flush_scheduled.store(false, std::memory_order_relaxed);
    // Counted before the lock goes, so producers never see the bytes in neither place.
    unsent.fetch_add(b.size, std::memory_order_relaxed);
  }
  segs_.push_back(std::move(b));
}

bool connection_impl::flush_tls() {
  while (!tls_->pending_output().empty()) {
    const std::string_view p = tls_->pending_output();
    const ssize_t n = ::send(fd_.get(), p.data(), p.size(), MSG_NOSIGNAL);
    if (n > 0) {
      tls_->consume_output(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
    if (n < 0 && errno == EINTR) continue;
    machine_->transport_closed(std::string("send: ") + std::strerror(errno));
    after_feed();
    return false;
  }
  return true;
}

void connection_impl::tls_step(time_point now) {
  // handshake() must be called again after its output is sent (want_write), not only when
  // ciphertext arrives: the client's last flight would otherwise never complete it.
  while (tls_handshaking_ && !dead_) {
    const io::handshake_status hs = tls_->handshake();
    if (hs == io::handshake_status::error) {
      flush_tls();  // the alert, if any
      machine_->transport_closed(tls_->error().message);
      after_feed();
      return;
    }
    if (hs == io::handshake_status::done) {
      tls_handshaking_ = false;
      started_ = true;
      machine_->start(now);
      return;
    }
    if (hs == io::handshake_status::want_read) return;
    if (!flush_tls()) return;  // EPOLLOUT brings us back
  }
}

void connection_impl::write_some() {
  if (!fd_.valid()) return;
  std::size_t written_total = 0;
  if (tls_) {
    if (!tls_handshaking_) {
      while (!segs_.empty()) {
        out_buffer& f = segs_.front();
        if (!tls_->write(f.data.get() + seg_head_, f.size - seg_head_)) break;
        written_total += f.size - seg_head_;
        seg_head_ = 0;
        f.size = 0;
        if (spare_.size() < 4) spare_.push_back(std::move(f));
        segs_.pop_front();
      }
    }
    if (flush_tls() && tls_handshaking_) tls_step(clock::now());
  } else {
    while (!segs_.empty()) {
      iovec iov[64];
      int count = 0;
      std::size_t skip = seg_head_;
      for (auto it = segs_.begin(); it != segs_.end() && count < 64; ++it, skip = 0) {
        iov[count].iov_base = it->data.get() + skip;
        iov[count].iov_len = it->size - skip;
        ++count;
      }
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = static_cast<std::size_t>(count);
      const ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        machine_->transport_closed(std::string("send: ") + std::strerror(errno));
        after_feed();
        break;
      }
      std::size_t left = static_cast<std::size_t>(n);
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
  }
  if (written_total != 0) {
    unsent.fetch_sub(written_total, std::memory_order_relaxed);
    notify_waiters();
  }
  update_events();
}

void connection_impl::notify_waiters() {
  if (waiters.load(std::memory_order_seq_cst) == 0) return;
  { std::lock_guard lock(pub_mu); }
  room_cv.notify_all();
}

time_point connection_impl::next_deadline() const {
  if (torn_down_) return time_point::max();
  if (dead_) return time_point::min();
  time_point t = close_deadline_;
  if (machine_ && started_) {
    t = std::min(t, paused.load(std::memory_order_relaxed)
                        ? std::max(machine_->next_timer(), paused_check_)
                        : machine_->next_timer());
  }
  for (const auto& [id, ch] : channels) t = std::min(t, ch->coalescer.next_deadline());
  if (!paused.load(std::memory_order_relaxed)) t = std::min(t, batch_read_at_);
  // The publish lock is taken only when some channel has a confirm timeout: every lock the I/O
  // thread takes is one a publisher may have to wait for.
  if (any_timeout.load(std::memory_order_relaxed)) {
    std::lock_guard lock(pub_mu);  // trackers are shared with producers
    for (const auto& [id, ch] : channels) {
      if (ch->has_timeout && ch->tracker) t = std::min(t, ch->tracker->next_deadline());
    }
  }
  return t;
}

void connection_impl::service(time_point now) {
  if (torn_down_) return;
  // A busy socket (receive batching) below its low-water mark is read max_wait after the last
  // read; nothing there makes it idle again.
  if (!dead_ && now >= batch_read_at_ && !paused.load(std::memory_order_relaxed)) read_some(now);
  if (!dead_) {
    if (now >= close_deadline_) {
      std::string why = open_flag.load() ? "close handshake timed out" : "connection timed out";
      // A peer that stopped reading (RabbitMQ blocks a publishing connection in a memory alarm)
      // leaves frames behind; without confirm mode nothing else would tell the caller.
      std::size_t left = unsent.load();
      {
        std::lock_guard lock(pub_mu);
        left += staging.size;
      }
      if (left != 0) {
        why += "; " + std::to_string(left) + " octets of frames (publishes) were never written";
      }
      close_note_ = why;
      machine_->transport_closed(why);
      after_feed();
    } else if (started_ && paused.load(std::memory_order_relaxed)) {
      // While reading is paused the peer's frames (heartbeats included) are not seen, so the
      // machine must not judge it dead; it only keeps sending its own heartbeats.
      if (now >= machine_->next_timer() && now >= paused_check_) {
        machine_->send_heartbeat_if_idle(now);
        paused_check_ = now + std::chrono::milliseconds(200);
      }
    } else if (started_ && now >= machine_->next_timer()) {
      machine_->on_timer(now);
      after_feed();
    }
  }
  for (auto& [id, ch] : channels) {
    if (ch->st == channel_impl::state::open && now >= ch->coalescer.next_deadline()) {
      ch->send_acks(now, false);
    }
    if (any_timeout.load(std::memory_order_relaxed)) {
      std::lock_guard lock(pub_mu);
      if (ch->has_timeout && ch->tracker && now >= ch->tracker->next_deadline()) {
        ch->tracker->on_timer(now, [&](const protocol::confirm_event& e) {
          ch->done.push_back({to_result(e), std::move(ch->callbacks[e.sequence & ch->mask])});
          ++ch->undelivered;
        });
        ch->outstanding.store(ch->tracker->outstanding(), std::memory_order_relaxed);
      }
    }
    ch->complete_confirms();
  }
  last_channel_ = nullptr;
  std::erase_if(channels, [](const auto& kv) {
    return kv.second->st == channel_impl::state::closed && kv.second->rpcs.empty();
  });
  if (!started_ && !tls_handshaking_ && !dead_) return;
  seal(now);
  write_some();
  // Finishing a TLS handshake while writing starts the machine, whose protocol header must not
  // wait for the next event.
  if (machine_ && machine_->has_output() && !dead_) {
    seal(now);
    write_some();
  }
  if (dead_) teardown();
}

void connection_impl::teardown() {
  if (torn_down_) return;
  torn_down_ = true;
  if (fd_.valid()) {
    ::epoll_ctl(io.epoll_fd(), EPOLL_CTL_DEL, fd_.get(), nullptr);
    fd_.reset();
  }
  channels.clear();
  last_channel_ = nullptr;
  segs_.clear();
  spare_.clear();
  rx_.reset();
  // The machine holds receive buffers of partial commands; they must go back to this thread's
  // pool while it exists.
  machine_.reset();
  {
    std::lock_guard lock(pub_mu);
    staging = out_buffer{};
  }
  unsent.store(0);
  notify_waiters();
}

void connection_impl::begin_close() {
  if (dead_ || !machine_) return;
  close_deadline_ = clock::now() + close_timeout;
  connecting_ = false;
  for (auto& [id, ch] : channels) {
    if (ch->st == channel_impl::state::open) ch->send_acks(clock::now(), true);
  }
  seal(clock::now());
  machine_->close(200, "closed by client");
  begin_wait(close_wait_);  // ended in on_closed, however the connection ends
}

void connection_impl::force_close(std::string_view why) {
  if (dead_ || !machine_) return;
  machine_->transport_closed(why);
  after_feed();
}

void connection_impl::on_open() {
  end_wait(open_wait_);
  frame_max = machine_->frame_max();
  close_deadline_ = time_point::max();
  connecting_ = false;
  {
    std::lock_guard lock(pub_mu);
    pub_open = true;
  }
  open_flag.store(true);
  deferred.push_back([this] { opened.set_value(); });
}

void connection_impl::on_command(protocol::command& cmd) {
  // Channels leave the map only in service(), never during feed(): a plain pointer is safe here.
  if (last_channel_ == nullptr || last_channel_->id != cmd.channel) {
    auto it = channels.find(cmd.channel);
    if (it == channels.end()) {
      // Channel 0 (never in the map): the machine passes on update-secret-ok alone.
      if (cmd.is<codec::connection_update_secret_ok>() && !secret_waiters.empty()) {
        auto w = std::move(secret_waiters.front());
        secret_waiters.pop_front();
        end_wait(w->wait);
        deferred.push_back([w] { w->done.set_value(); });
      }
      return;
    }
    last_channel_ = it->second.get();
  }
  last_channel_->on_command(cmd, feed_now_);
}

void connection_impl::on_channel_closed(std::uint16_t channel, const protocol::close_reason& why) {
  auto it = channels.find(channel);
  if (it == channels.end()) return;
  std::shared_ptr<channel_impl> ch = it->second;
  ch->on_closed(confirm_result::outcome::channel_closed, why, true);
}

void connection_impl::on_blocked(std::string_view why) {
  {
    std::lock_guard lock(pub_mu);
    blocked = true;
  }
  blocked_flag.store(true);
  std::function<void(std::string_view)> f;
  {
    std::lock_guard lock(cb_mu);
    f = on_blocked_cb;
  }
  if (f) f(why);
}

void connection_impl::on_unblocked() {
  {
    std::lock_guard lock(pub_mu);
    blocked = false;
  }
  blocked_flag.store(false);
  notify_waiters();
  std::function<void()> f;
  {
    std::lock_guard lock(cb_mu);
    f = on_unblocked_cb;
  }
  if (f) f();
}

void connection_impl::on_closed(const protocol::close_reason& machine_reason) {
  // What the machine reports, plus what only this side knows (a timed-out close handshake
  // after a client close is reported by the machine as that close).
  protocol::close_reason why = machine_reason;
  if (!close_note_.empty() && why.reply_text.find(close_note_) == std::string::npos) {
    why.reply_text += "; " + close_note_;
  }
  dead_ = true;
  {
    std::lock_guard lock(pub_mu);
    pub_open = false;
  }
  open_flag.store(false);
  const bool was_open = started_ && frame_max != 0;
  for (auto& [id, ch] : channels) {
    ch->on_closed(confirm_result::outcome::connection_lost, why, false);
  }
  for (auto& w : secret_waiters) {
    end_wait(w->wait);
    deferred.push_back([w, why] { w->done.set_exception(error_from(why)); });  // made where it goes
  }
  secret_waiters.clear();
  end_wait(open_wait_);
  end_wait(close_wait_);
  {
    std::lock_guard lock(state_mu);
    reason = why;
    closed = true;
  }
  closed_cv.notify_all();
  notify_waiters();
  std::function<void(const protocol::close_reason&)> f;
  {
    std::lock_guard lock(cb_mu);
    f = on_closed_cb;
  }
  if (!was_open) {
    // The exception is made inside the deferred call and moved into the promise, so no copy of
    // it stays on this thread: its refcount lives in uninstrumented libsupc++, and TSan reported
    // the I/O thread's late release racing with the caller's rethrow.
    // A deadline ended a handshake (no open-ok, no close from the peer): connect_timeout passed.
    if (connecting_ && !close_note_.empty()) {
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          opts.connect_timeout.value_or(std::chrono::seconds(0)))
                          .count();
      deferred.push_back([this, ms] {
        opened.set_exception(std::make_exception_ptr(
            amqp_timeout(std::string(tls_ ? "TLS and " : "") +
                         "AMQP handshake not finished within connect_timeout (" +
                         std::to_string(ms) + " ms): the peer sent no connection.open-ok")));
      });
    } else {
      deferred.push_back([this, why] { opened.set_exception(error_from(why)); });
    }
  }
  if (f) f(why);
}

// channel_impl ----------------------------------------------------------------------------------

void channel_impl::complete_confirms() {
  if (done.empty()) return;
  std::vector<done_confirm> run;
  run.swap(done);
  for (auto& d : run) {
    if (d.callback) {
      try {
        d.callback(d.result);
      } catch (...) {
        // A callback's exception must not take down the I/O thread; the contract says keep
        // callbacks short and non-throwing, so it is dropped.
      }
    }
  }
  bool room = true;
  {
    std::lock_guard lock(conn->pub_mu);
    undelivered -= run.size();
    // A publisher waiting for the window is woken once a quarter of it is free, not at every
    // ack the broker sends: one wake-up per window/4 publishes instead of one per ack frame (a
    // futex round trip each). wait_for_confirms waits for none outstanding, below the mark.
    if (tracker) room = tracker->outstanding() <= tracker->window() - tracker->window() / 4;
  }
  run.clear();
  if (done.empty()) done.swap(run);  // keep the capacity
  if (room) conn->notify_waiters();
}

void channel_impl::on_command(protocol::command& cmd, time_point now) {
  switch (cmd.id()) {
    case codec::basic_deliver::id: {
      // Decoded by the machine's one-pass path, or here (into the command, not a copy).
      if (!cmd.has_deliver) {
        if (cmd.decode(cmd.deliver) != codec::errc::ok) return;
        cmd.has_deliver = true;
      }
      const codec::basic_deliver& m = cmd.deliver;
      consumer_entry* found = last_consumer;
      if (found == nullptr || found->tag != m.consumer_tag) {
        auto it = consumers.find(m.consumer_tag);
        found = it == consumers.end() ? nullptr : it->second.get();
        last_consumer = found;
      }
      if (found == nullptr) {
        const bool owed = recovering == 0 && !cancelled_with_no_ack(m.consumer_tag);
        // A delivery for a consumer cancelled since: the broker still holds it, give it back.
        coalescer.on_delivery(m.delivery_tag, owed);
        if (owed && coalescer.reject(m.delivery_tag, true, now)) send_acks(now, true);
        return;
      }
      consumer_entry& e = *found;
      coalescer.on_delivery(m.delivery_tag, !e.route->no_ack && recovering == 0);
      if (e.batch.empty()) conn->batch_owners_push(&e);
      delivery& d = e.batch.emplace_back();
      fill(d, cmd, m);
      d.consumer_tag_ = m.consumer_tag;
      d.consumer_ = consumer_ref::adopt(e.route.get());  // counted in bulk by after_feed()
      ++e.uncounted;
      // The machine keeps each buffer once (usually all three parts sit in one).
      for (int i = 0; i < 3; ++i) d.keep_[i] = std::move(cmd.keep[i]);
      return;
    }
    case codec::basic_ack::id:
    case codec::basic_nack::id: {
      const bool is_ack = cmd.id() == codec::basic_ack::id;
      std::uint64_t tag = 0;
      bool multiple = false;
      if (is_ack) {
        codec::basic_ack m;
        if (cmd.decode(m) != codec::errc::ok) return;
        tag = m.delivery_tag;
        multiple = m.multiple;
      } else {
        codec::basic_nack m;
        if (cmd.decode(m) != codec::errc::ok) return;
        tag = m.delivery_tag;
        multiple = m.multiple;
      }
      bool ok = true;
      {
        std::lock_guard lock(conn->pub_mu);
        if (!tracker) return;
        auto complete = [&](const protocol::confirm_event& e) {
          done.push_back({to_result(e), std::move(callbacks[e.sequence & mask])});
          ++undelivered;
        };
        ok = is_ack ? tracker->on_ack(tag, multiple, complete)
                    : tracker->on_nack(tag, multiple, complete);
        outstanding.store(tracker->outstanding(), std::memory_order_relaxed);
      }
      complete_confirms();
      if (!ok && st == state::open) {
        st = state::closing;
        conn->machine_close_channel(id, 406, "PRECONDITION_FAILED - unknown confirm tag");
      }
      return;
    }
    case codec::basic_return::id: {
      codec::basic_return m;
      if (cmd.decode(m) != codec::errc::ok) return;
      {
        std::lock_guard lock(conn->pub_mu);
        if (tracker) tracker->on_return(m.exchange, m.routing_key, m.reply_code, m.reply_text);
      }
      if (on_return) {
        returned_message r;
        r.reply_code = m.reply_code;
        r.reply_text = m.reply_text;
        r.exchange = m.exchange;
        r.routing_key = m.routing_key;
        r.header = &cmd.header;
        r.body = cmd.body;
        try {
          on_return(r);
        } catch (...) {
        }
      }
      return;
    }
    case codec::channel_flow::id: {
      codec::channel_flow m;
      if (cmd.decode(m) != codec::errc::ok) return;
      {
        std::lock_guard lock(conn->pub_mu);
        flow = m.active;
      }
      flow_flag.store(m.active);
      conn->notify_waiters();
      return;
    }
    case codec::basic_cancel::id: {  // the broker cancelled a consumer
      codec::basic_cancel m;
      if (cmd.decode(m) != codec::errc::ok) return;
      auto it = consumers.find(m.consumer_tag);
      if (it == consumers.end()) return;
      std::unique_ptr<consumer_entry> e = std::move(it->second);
      consumers.erase(it);
      last_consumer = nullptr;
      if (e->route->no_ack) remember_cancelled_no_ack(e->tag);
      {
        std::lock_guard lock(conn->topo_mu);
        std::erase_if(conn->topo.consumers,
                      [&](const consumer_record& r) { return r.consumer_tag == e->tag; });
      }
      if (e->on_cancel) {
        try {
          e->on_cancel(e->tag);
        } catch (...) {
        }
      }
      conn->retire(std::move(e));
      return;
    }
    case codec::channel_close_ok::id: {
      if (close_call) {
        auto call = std::move(close_call);
        conn->end_wait(call->wait);
        auto c = std::make_shared<protocol::command>(std::move(cmd));
        conn->deferred.push_back([call, c] { call->done.set_value(std::move(*c)); });
      }
      protocol::close_reason r;
      r.reply_code = 200;
      r.reply_text = "channel closed by client";
      on_closed(confirm_result::outcome::channel_closed, r, false);
      return;
    }
    default:
      break;
  }
  if (rpcs.empty() || !rpcs.front()->answered_by(cmd.id())) return;
  std::shared_ptr<rpc_call> call = std::move(rpcs.front());
  rpcs.pop_front();
  conn->end_wait(call->wait);
  if (cmd.id() == codec::channel_open_ok::id) {
    st = state::open;
    {
      std::lock_guard lock(conn->pub_mu);
      pub_open = true;
    }
    open_flag.store(true);
  } else if (cmd.id() == codec::basic_consume_ok::id && call->consumer) {
    codec::basic_consume_ok m;
    cmd.decode(m);
    call->consumer->tag = std::string(m.consumer_tag);
    call->consumer->record.consumer_tag = call->consumer->tag;
    register_consumer(std::move(call->consumer));
  } else if (cmd.id() == codec::basic_cancel_ok::id) {
    codec::basic_cancel_ok m;
    cmd.decode(m);
    drop_consumer(m.consumer_tag);
  } else if (cmd.id() == codec::basic_get_ok::id) {
    // Its tag is in the channel's sequence: the coalescer learns it here, in wire order, before
    // the caller can settle it.
    codec::basic_get_ok m;
    cmd.decode(m);
    coalescer.on_delivery(m.delivery_tag, !call->no_ack && recovering == 0);
  } else if (cmd.id() == codec::basic_recover_ok::id) {
    if (recovering > 0) --recovering;
  }
  auto c = std::make_shared<protocol::command>(std::move(cmd));
  conn->deferred.push_back([call, c] { call->done.set_value(std::move(*c)); });
}

void channel_impl::register_consumer(std::unique_ptr<consumer_entry> e) {
  // The tag is this consumer's now: a cancelled no-ack consumer's memory under it would make
  // this one's late deliveries look settled once it is cancelled in turn.
  std::erase(cancelled_no_ack, e->tag);
  auto& slot = consumers[e->tag];
  // A tag in use (a nowait consume repeating one): the broker fails the connection for it; the
  // entry it replaces drains off this thread like any other.
  if (slot) conn->retire(std::move(slot));
  slot = std::move(e);
  last_consumer = nullptr;
}

void channel_impl::drop_consumer(std::string_view tag) {
  auto it = consumers.find(tag);
  if (it == consumers.end()) return;
  if (it->second->route->no_ack) remember_cancelled_no_ack(it->second->tag);
  conn->retire(std::move(it->second));
  consumers.erase(it);
  last_consumer = nullptr;
}

void channel_impl::remember_cancelled_no_ack(std::string_view tag) {
  if (cancelled_no_ack.size() >= cancelled_no_ack_max) cancelled_no_ack.pop_front();
  cancelled_no_ack.emplace_back(tag);
}

bool channel_impl::cancelled_with_no_ack(std::string_view tag) const {
  return std::find(cancelled_no_ack.begin(), cancelled_no_ack.end(), tag) != cancelled_no_ack.end();
}

void channel_impl::abandon(std::exception_ptr why, rpc_call& call) {
  // Nobody waits for this call's reply any more (it may already have come, or be still owed);
  // the other calls on the channel still wait, for their replies or for the close-ok below.
  conn->end_wait(call.wait);
  if (st == state::closed) return;
  {
    std::lock_guard lock(err_mu);
    if (!error) error = why;
  }
  if (st == state::closing) return;
  st = state::closing;
  {
    std::lock_guard lock(conn->pub_mu);
    pub_open = false;
  }
  open_flag.store(false);
  // The RPCs still waiting fail when close-ok arrives (on_closed); if it never does, their
  // callers time out too.
  conn->machine_close_channel(id, 200, "closed by client: no reply in time");
}

void channel_impl::on_closed(confirm_result::outcome why, const protocol::close_reason& reason,
                             bool by_peer) {
  if (st == state::closed) return;
  st = state::closed;
  {
    std::lock_guard lock(conn->pub_mu);
    pub_open = false;
    if (tracker) {
      tracker->fail_all(static_cast<protocol::confirm_outcome>(why), reason.reply_code,
                        reason.reply_text, [&](const protocol::confirm_event& e) {
                          done.push_back({to_result(e), std::move(callbacks[e.sequence & mask])});
                          ++undelivered;
                        });
      outstanding.store(0, std::memory_order_relaxed);
    }
  }
  open_flag.store(false);
  std::exception_ptr err =
      by_peer || why == confirm_result::outcome::connection_lost ? error_from(reason) : nullptr;
  if (err) {
    std::lock_guard lock(err_mu);
    error = err;
  }
  complete_confirms();
  coalescer.reset();
  for (auto& [tag, e] : consumers) conn->retire(std::move(e));
  consumers.clear();
  last_consumer = nullptr;
  std::exception_ptr rpc_err = err ? err : channel_closed_error();
  for (auto& call : rpcs) {
    conn->end_wait(call->wait);
    conn->deferred.push_back([call, rpc_err] { call->done.set_exception(rpc_err); });
  }
  rpcs.clear();
  if (close_call) {
    auto call = std::move(close_call);
    conn->end_wait(call->wait);
    conn->deferred.push_back([call] { call->done.set_value(protocol::command{}); });
  }
}

void channel_impl::apply(const ack_request& r, time_point now) {
  if (st != state::open) return;
  bool ok = true;
  switch (r.what) {
    case ack_request::kind::ack:
      ok = coalescer.ack(r.tag, r.multiple, now);
      break;
    case ack_request::kind::nack:
      ok = coalescer.nack(r.tag, r.multiple, r.requeue, now);
      break;
    case ack_request::kind::reject:
      ok = coalescer.reject(r.tag, r.requeue, now);
      break;
    case ack_request::kind::idle:
      if (pending.load(std::memory_order_acquire) == 0) send_acks(now, true);
      return;
  }
  if (ok) acks_touched = true;
}

void channel_impl::send_acks(time_point now, bool flush_all) {
  auto& acts = conn->actions();
  acts.clear();
  if (flush_all) {
    coalescer.flush(acts);
  } else {
    coalescer.poll(now, acts);
  }
  for (const protocol::ack_action& a : acts) {
    switch (a.what) {
      case protocol::ack_action::kind::ack: {
        codec::basic_ack m;
        m.delivery_tag = a.delivery_tag;
        m.multiple = a.multiple;
        conn->send(id, m);
        break;
      }
      case protocol::ack_action::kind::nack: {
        codec::basic_nack m;
        m.delivery_tag = a.delivery_tag;
        m.multiple = a.multiple;
        m.requeue = a.requeue;
        conn->send(id, m);
        break;
      }
      case protocol::ack_action::kind::reject: {
        codec::basic_reject m;
        m.delivery_tag = a.delivery_tag;
        m.requeue = a.requeue;
        conn->send(id, m);
        break;
      }
    }
  }
}

void channel_impl::start_rpc(std::shared_ptr<rpc_call> call, out_buffer frame) {
  if (st != state::open) {
    std::exception_ptr e;
    {
      std::lock_guard lock(err_mu);
      e = error ? error : channel_closed_error();
    }
    call->done.set_exception(e);
    return;
  }
  // Decisions made before this call go first, so that tx.commit covers a handler's ack and
  // basic.recover does not give back what was acked: the ones still queued for this thread,
  // then every one this channel holds.
  const time_point now = clock::now();
  conn->io.apply_acks(now);
  send_acks(now, true);
  if (call->before_send) call->before_send(*this);
  // Publishes staged before this call go first: a thread that publishes and then declares or
  // deletes sees its operations reach the broker in that order.
  conn->seal(now);
  conn->push_segment(std::move(frame));
  if (call->reply_id != 0) {
    conn->begin_wait(call->wait);
    rpcs.push_back(std::move(call));
    return;
  }
  // nowait: no reply will come, so nothing waits in `rpcs` for one (it would take the next
  // RPC's reply). A nowait consumer is registered now, before its first delivery can arrive.
  if (call->consumer) register_consumer(std::move(call->consumer));
  call->done.set_value(protocol::command{});
}

void channel_impl::throw_if_closed() const {
  if (open_flag.load()) return;
  std::exception_ptr e;
  {
    std::lock_guard lock(err_mu);
    e = error;
  }
  if (e) std::rethrow_exception(e);
  std::rethrow_exception(channel_closed_error());
}

template <class M>
protocol::command channel_impl::call(const M& m, std::uint32_t reply_id,
                                     std::unique_ptr<consumer_entry> consumer) {
  auto c = std::make_shared<rpc_call>();
  c->reply_id = reply_id;
  c->consumer = std::move(consumer);
  return call(m, std::move(c));
}

void channel_impl::abandon_after_timeout(std::string_view what, rpc_call& call) {
  const std::exception_ptr why =
      std::make_exception_ptr(rpc_timed_out(what, conn->eng.options.rpc_timeout));
  // Waited for, so that is_open() is false once the call has thrown.
  conn->io.run_and_wait([this, &why, &call] { abandon(why, call); });
}

template <class M>
protocol::command channel_impl::call(const M& m, std::shared_ptr<rpc_call> c) {
  check_not_io(M::name.data());
  throw_if_closed();
  out_buffer frame;
  {
    std::string s;
    codec::writer w(s);
    const codec::errc e = codec::encode_method_frame(id, m, w);
    w.finish();
    if (e != codec::errc::ok) {
      throw std::invalid_argument(std::string(M::name) + ": arguments cannot be encoded");
    }
    frame.append(s);
  }
  std::future<protocol::command> f = c->done.get_future();
  conn->io.post(
      [self = shared_from_this(), c, fr = std::make_shared<out_buffer>(std::move(frame))] {
        self->start_rpc(c, std::move(*fr));
      });
  if (f.wait_for(conn->eng.options.rpc_timeout) != std::future_status::ready) {
    // The -ok may still come, and would answer the next call on this channel: close it.
    abandon_after_timeout(M::name, *c);
    throw rpc_timed_out(M::name, conn->eng.options.rpc_timeout);
  }
  return f.get();
}

publish_status channel_impl::try_publish(std::string_view exchange, std::string_view routing_key,
                                         const codec::basic_properties& props,
                                         std::string_view body, const publish_options& o,
                                         confirm_callback& on_confirm) {
  connection_impl& c = *conn;
  if (body.size() > max_body_size) return publish_status::too_large;
  codec::basic_publish m;
  m.exchange = exchange;
  m.routing_key = routing_key;
  m.mandatory = o.mandatory;
  m.immediate = o.immediate;
  const std::size_t need = codec::publish_size(m, props, body.size(), c.frame_max);
  bool wake = false;
  {
    std::lock_guard lock(c.pub_mu);
    if (!pub_open || !c.pub_open) return publish_status::closed;
    if (c.blocked || !flow) return publish_status::blocked;
    if (tracker && tracker->full()) return publish_status::window_full;
    const std::size_t queued = c.staging.size + c.unsent.load(std::memory_order_relaxed);
    if (queued != 0 && queued + need > c.max_out) return publish_status::buffer_full;
    char* at = c.staging.grow(need);
    std::size_t written = 0;
    if (codec::encode_publish(at, need, written, id, m, props, body, c.frame_max) !=
        codec::errc::ok) {
      c.staging.size -= need;
      return publish_status::too_large;
    }
    if (tracker) {
      const time_point now = has_timeout ? clock::now() : time_point{};
      const std::uint64_t seq =
          tracker->on_publish(tracker->next_sequence(), now, o.mandatory, exchange, routing_key);
      callbacks[seq & mask] = std::move(on_confirm);
      outstanding.store(tracker->outstanding(), std::memory_order_relaxed);
      ++published;
    }
    if (!c.flush_scheduled.load(std::memory_order_relaxed)) {
      c.flush_scheduled.store(true, std::memory_order_relaxed);
      wake = true;
    }
  }
  if (wake) c.io.schedule_flush(c.shared_from_this());
  return publish_status::ok;
}

// connection_impl, any thread -------------------------------------------------------------------

std::shared_ptr<channel_impl> connection_impl::open_channel() {
  check_not_io("open_channel");
  if (!open_flag.load()) {
    std::lock_guard lock(state_mu);
    std::rethrow_exception(error_from(reason));
  }
  auto call = std::make_shared<rpc_call>();
  call->reply_id = codec::channel_open_ok::id;
  auto result = std::make_shared<std::shared_ptr<channel_impl>>();
  std::future<protocol::command> f = call->done.get_future();
  io.post([self = shared_from_this(), call, result] {
    if (self->dead_ || !self->machine_ || !self->machine_->is_open()) {
      call->done.set_exception(
          std::make_exception_ptr(recoverable_connection_error("connection is closed")));
      return;
    }
    const std::uint16_t max = self->machine_->channel_max();
    std::uint16_t id = 1;
    while (self->channels.count(id) != 0 && id < max) ++id;
    if (self->channels.count(id) != 0) {
      call->done.set_exception(std::make_exception_ptr(resource_error("no free channel id")));
      return;
    }
    auto ch = std::make_shared<channel_impl>(self, id);
    self->channels[id] = ch;
    *result = ch;
    ch->rpcs.push_back(call);
    self->begin_wait(call->wait);
    self->seal(clock::now());
    self->machine_->open_channel(id);
  });
  if (f.wait_for(eng.options.rpc_timeout) != std::future_status::ready) {
    // A late open-ok would leave a channel open that nobody holds: close it. `result` is
    // written on the I/O thread, so it is read there.
    const std::exception_ptr why =
        std::make_exception_ptr(rpc_timed_out("channel.open", eng.options.rpc_timeout));
    io.run_and_wait([&] {
      if (*result) (*result)->abandon(why, *call);
    });
    throw rpc_timed_out("channel.open", eng.options.rpc_timeout);
  }
  f.get();
  return *result;
}

void connection_impl::update_secret(std::string_view new_secret, std::string_view why) {
  check_not_io("connection.update-secret");
  if (!open_flag.load()) {
    std::lock_guard lock(state_mu);
    std::rethrow_exception(error_from(reason));
  }
  auto waiter = std::make_shared<secret_call>();
  std::future<void> f = waiter->done.get_future();
  io.post([self = shared_from_this(), waiter, secret = std::string(new_secret),
           text = std::string(why)] {
    if (!self->machine_open()) {
      waiter->done.set_exception(
          std::make_exception_ptr(recoverable_connection_error("connection is closed")));
      return;
    }
    self->seal(clock::now());  // publishes staged before the call go first
    self->machine_->update_secret(secret, text);
    self->begin_wait(waiter->wait);
    self->secret_waiters.push_back(std::move(waiter));
  });
  if (f.wait_for(eng.options.rpc_timeout) != std::future_status::ready) {
    // The waiter stays queued to take a late -ok, but nobody waits for it now.
    io.run_and_wait([&] { end_wait(waiter->wait); });
    throw rpc_timed_out("connection.update-secret", eng.options.rpc_timeout);
  }
  f.get();
}

void connection_impl::drain_retired() {
  if (in_handler != 0 || current_io != nullptr) return;
  std::vector<std::unique_ptr<consumer_entry>> take;
  {
    std::lock_guard lock(retired_mu);
    take.swap(retired);
  }
  take.clear();  // each mailbox drains: handlers in flight finish here
}

void connection_impl::close() {
  check_not_io("connection.close");
  io.post([self = shared_from_this()] { self->begin_close(); });
  {
    std::unique_lock lock(state_mu);
    closed_cv.wait_for(lock, close_timeout + std::chrono::seconds(2), [&] { return closed; });
  }
  // on_closed signals `closed` in the middle of the I/O thread's round; the consumers its
  // channels retired reach `retired` only at the end of that round (after_feed). A task runs
  // after it: drained before that, they would stay in `retired`, whose entries hold the channel
  // and so this connection (a cycle: all of it leaked, LeakSanitizer saw it).
  io.run_and_wait([] {});
  drain_retired();
  std::lock_guard lock(eng.conns_mu);
  std::erase_if(eng.conns, [this](const auto& c) { return c.get() == this; });
}

}  // namespace detail

using detail::channel_impl;
using detail::clock;
using detail::connection_impl;
using detail::time_point;

std::string_view to_string(publish_status s) noexcept {
  switch (s) {
    case publish_status::ok:
      return "ok";
    case publish_status::buffer_full:
      return "buffer_full";
    case publish_status::window_full:
      return "window_full";
    case publish_status::blocked:
      return "blocked";
    case publish_status::closed:
      return "closed";
    case publish_status::too_large:
      return "too_large";
    case publish_status::timeout:
      return "timeout";
  }
  return "unknown";
}

publish_rejected::publish_rejected(publish_status s)
    : std::runtime_error("publish not accepted: " + std::string(to_string(s))), status_(s) {}

// connection ------------------------------------------------------------------------------------

connection::connection(std::shared_ptr<detail::connection_impl> impl) : impl_(std::move(impl)) {}
connection::~connection() = default;

std::shared_ptr<channel> connection::open_channel() {
  return std::make_shared<channel>(impl_->open_channel());
}
void connection::close() {
  impl_->close();
}
bool connection::is_open() const noexcept {
  return impl_->open_flag.load();
}
bool connection::blocked() const noexcept {
  return impl_->blocked_flag.load();
}
void connection::on_blocked(std::function<void(std::string_view)> f) {
  std::lock_guard lock(impl_->cb_mu);
  impl_->on_blocked_cb = std::move(f);
}
void connection::on_unblocked(std::function<void()> f) {
  std::lock_guard lock(impl_->cb_mu);
  impl_->on_unblocked_cb = std::move(f);
}
void connection::on_closed(std::function<void(const protocol::close_reason&)> f) {
  std::lock_guard lock(impl_->cb_mu);
  impl_->on_closed_cb = std::move(f);
}
protocol::close_reason connection::close_reason() const {
  std::lock_guard lock(impl_->state_mu);
  return impl_->reason;
}
topology_record connection::topology() const {
  std::lock_guard lock(impl_->topo_mu);
  return impl_->topo;
}
void connection::update_secret(std::string_view new_secret, std::string_view reason) {
  impl_->update_secret(new_secret, reason);
}
std::size_t connection::outgoing_bytes() const noexcept {
  std::size_t staged;
  {
    std::lock_guard lock(impl_->pub_mu);
    staged = impl_->staging.size;
  }
  return staged + impl_->unsent.load(std::memory_order_relaxed);
}
std::uint32_t connection::frame_max() const noexcept {
  return impl_->frame_max;
}
std::size_t connection::pending_deliveries() const noexcept {
  const std::int64_t n = impl_->pending_deliveries.load(std::memory_order_relaxed);
  return n > 0 ? static_cast<std::size_t>(n) : 0;
}

// channel ---------------------------------------------------------------------------------------

channel::channel(std::shared_ptr<detail::channel_impl> impl) : impl_(std::move(impl)) {}
channel::~channel() = default;

queue_declare_ok channel::queue_declare(std::string_view queue, const queue_declare_options& o) {
  const std::string args = detail::encode_args(o.arguments);
  codec::queue_declare m = queue_declare_method(queue, o, args);
  protocol::command c = impl_->call(m, o.nowait ? 0 : codec::queue_declare_ok::id);
  codec::queue_declare_ok ok;
  if (o.nowait) {
    ok.queue = queue;
  } else {
    c.decode(ok);
  }
  queue_declare_ok r{std::string(ok.queue), ok.message_count, ok.consumer_count};
  if (!o.passive && !r.queue.empty()) {
    std::lock_guard lock(impl_->conn->topo_mu);
    auto& qs = impl_->conn->topo.queues;
    std::erase_if(qs, [&](const queue_record& q) { return q.name == r.queue; });
    qs.push_back({r.queue, o, queue.empty()});
    qs.back().options.nowait = false;
  }
  return r;
}

void channel::exchange_declare(std::string_view exchange, std::string_view type,
                               const exchange_declare_options& o) {
  const std::string args = detail::encode_args(o.arguments);
  codec::exchange_declare m = exchange_declare_method(exchange, type, o, args);
  impl_->call(m, o.nowait ? 0 : codec::exchange_declare_ok::id);
  if (!o.passive) {
    std::lock_guard lock(impl_->conn->topo_mu);
    auto& xs = impl_->conn->topo.exchanges;
    std::erase_if(xs, [&](const exchange_record& x) { return x.name == exchange; });
    xs.push_back({std::string(exchange), std::string(type), o});
    xs.back().options.nowait = false;
  }
}

namespace {

// queue.bind/unbind and exchange.bind/unbind: the same RPC and record update; `set` names the
// two ends in the method's own fields.
template <class M, class Ok, class Set>
void bind_rpc(channel_impl& ch, binding_record::kind k, std::string_view destination,
              std::string_view source, std::string_view routing_key, const bind_options& o,
              bool add, Set set) {
  const std::string args = detail::encode_args(o.arguments);
  M m;
  set(m);
  m.routing_key = routing_key;
  m.arguments = codec::table_view{args};
  bool nowait = false;
  if constexpr (requires { m.nowait; }) {  // not queue.unbind, which always has a reply
    m.nowait = nowait = o.nowait;
  }
  ch.call(m, nowait ? 0 : Ok::id);
  connection_impl& c = *ch.conn;
  std::lock_guard lock(c.topo_mu);
  auto& bs = c.topo.bindings;
  std::erase_if(bs, [&](const binding_record& b) {
    return b.what == k && b.destination == destination && b.source == source &&
           b.routing_key == routing_key && b.arguments == o.arguments;
  });
  if (add) {
    bs.push_back(
        {k, std::string(destination), std::string(source), std::string(routing_key), o.arguments});
  }
}

}  // namespace

void channel::queue_bind(std::string_view queue, std::string_view exchange,
                         std::string_view routing_key, const bind_options& o) {
  bind_rpc<codec::queue_bind, codec::queue_bind_ok>(*impl_, binding_record::kind::queue, queue,
                                                    exchange, routing_key, o, true,
                                                    [&](codec::queue_bind& m) {
                                                      m.queue = queue;
                                                      m.exchange = exchange;
                                                    });
}

void channel::queue_unbind(std::string_view queue, std::string_view exchange,
                           std::string_view routing_key, const bind_options& o) {
  bind_rpc<codec::queue_unbind, codec::queue_unbind_ok>(*impl_, binding_record::kind::queue, queue,
                                                        exchange, routing_key, o, false,
                                                        [&](codec::queue_unbind& m) {
                                                          m.queue = queue;
                                                          m.exchange = exchange;
                                                        });
}

void channel::exchange_bind(std::string_view destination, std::string_view source,
                            std::string_view routing_key, const bind_options& o) {
  bind_rpc<codec::exchange_bind, codec::exchange_bind_ok>(*impl_, binding_record::kind::exchange,
                                                          destination, source, routing_key, o, true,
                                                          [&](codec::exchange_bind& m) {
                                                            m.destination = destination;
                                                            m.source = source;
                                                          });
}

void channel::exchange_unbind(std::string_view destination, std::string_view source,
                              std::string_view routing_key, const bind_options& o) {
  bind_rpc<codec::exchange_unbind, codec::exchange_unbind_ok>(
      *impl_, binding_record::kind::exchange, destination, source, routing_key, o, false,
      [&](codec::exchange_unbind& m) {
        m.destination = destination;
        m.source = source;
      });
}

std::uint32_t channel::queue_purge(std::string_view queue, bool nowait) {
  codec::queue_purge m;
  m.queue = queue;
  m.nowait = nowait;
  protocol::command c = impl_->call(m, nowait ? 0 : codec::queue_purge_ok::id);
  codec::queue_purge_ok ok;
  if (!nowait) c.decode(ok);
  return ok.message_count;
}

std::uint32_t channel::queue_delete(std::string_view queue, const queue_delete_options& o) {
  codec::queue_delete m;
  m.queue = queue;
  m.if_unused = o.if_unused;
  m.if_empty = o.if_empty;
  m.nowait = o.nowait;
  protocol::command c = impl_->call(m, o.nowait ? 0 : codec::queue_delete_ok::id);
  codec::queue_delete_ok ok;
  if (!o.nowait) c.decode(ok);
  std::lock_guard lock(impl_->conn->topo_mu);
  auto& t = impl_->conn->topo;
  std::erase_if(t.queues, [&](const queue_record& q) { return q.name == queue; });
  std::erase_if(t.bindings, [&](const binding_record& b) {
    return b.what == binding_record::kind::queue && b.destination == queue;
  });
  std::erase_if(t.consumers, [&](const consumer_record& r) { return r.queue == queue; });
  return ok.message_count;
}

void channel::exchange_delete(std::string_view exchange, bool if_unused, bool nowait) {
  codec::exchange_delete m;
  m.exchange = exchange;
  m.if_unused = if_unused;
  m.nowait = nowait;
  impl_->call(m, nowait ? 0 : codec::exchange_delete_ok::id);
  std::lock_guard lock(impl_->conn->topo_mu);
  auto& t = impl_->conn->topo;
  std::erase_if(t.exchanges, [&](const exchange_record& x) { return x.name == exchange; });
  std::erase_if(t.bindings, [&](const binding_record& b) {
    return b.source == exchange ||
           (b.what == binding_record::kind::exchange && b.destination == exchange);
  });
}

void channel::basic_qos(std::uint32_t prefetch_size, std::uint16_t prefetch_count, bool global) {
  codec::basic_qos m;
  m.prefetch_size = prefetch_size;
  m.prefetch_count = prefetch_count;
  m.global = global;
  impl_->call(m, codec::basic_qos_ok::id);
}

bool channel::flow(bool active) {
  codec::channel_flow m;
  m.active = active;
  protocol::command c = impl_->call(m, codec::channel_flow_ok::id);
  codec::channel_flow_ok ok;
  c.decode(ok);
  return ok.active;
}

void channel::tx_select() {
  impl_->call(codec::tx_select{}, codec::tx_select_ok::id);
}
void channel::tx_commit() {
  impl_->call(codec::tx_commit{}, codec::tx_commit_ok::id);
}
void channel::tx_rollback() {
  impl_->call(codec::tx_rollback{}, codec::tx_rollback_ok::id);
}

std::optional<delivery> channel::basic_get(std::string_view queue, bool no_ack) {
  codec::basic_get m;
  m.queue = queue;
  m.no_ack = no_ack;
  auto call = std::make_shared<detail::rpc_call>();
  call->reply_id = codec::basic_get_ok::id;
  call->alt_reply_id = codec::basic_get_empty::id;
  call->no_ack = no_ack;
  protocol::command c = impl_->call(m, std::move(call));
  if (c.is<codec::basic_get_empty>()) return std::nullopt;
  codec::basic_get_ok ok;
  c.decode(ok);
  std::optional<delivery> r(std::in_place);
  delivery& d = *r;
  channel_impl::fill(d, c, ok);
  d.message_count_ = ok.message_count;
  // No consumer: a route of its own (owned by the delivery and its copies alone, so it cannot
  // keep the channel alive in a cycle) sends the decision to the channel's I/O thread.
  auto* route = new detail::consumer_impl();
  route->ch = impl_;
  route->no_ack = no_ack;
  d.consumer_ = detail::consumer_ref::adopt(route);
  for (int i = 0; i < 3; ++i) d.keep_[i] = std::move(c.keep[i]);  // the views' buffers
  return r;
}

// Both recovers forget the channel's undecided deliveries once the held decisions have gone
// (start_rpc sends those first): the broker requeues them, so a later decision on one would
// name a tag it no longer knows.
void channel::basic_recover(bool requeue) {
  codec::basic_recover m;
  m.requeue = requeue;
  auto call = std::make_shared<detail::rpc_call>();
  call->reply_id = codec::basic_recover_ok::id;
  call->before_send = [](channel_impl& ch) {
    ch.coalescer.reset();
    ++ch.recovering;  // until recover-ok, arriving deliveries are requeued too
  };
  impl_->call(m, std::move(call));
}

void channel::basic_recover_async(bool requeue) {
  codec::basic_recover_async m;
  m.requeue = requeue;
  auto call = std::make_shared<detail::rpc_call>();
  call->before_send = [](channel_impl& ch) { ch.coalescer.reset(); };
  impl_->call(m, std::move(call));
}

void channel::confirm_select(std::size_t window, std::chrono::milliseconds timeout) {
  {
    std::lock_guard lock(impl_->conn->pub_mu);
    if (impl_->tracker) return;
  }
  codec::confirm_select m;
  impl_->call(m, codec::confirm_select_ok::id);
  protocol::confirm_tracker_options o;
  o.window = std::max<std::size_t>(window, 1);
  o.timeout = timeout;
  auto t = std::make_unique<protocol::confirm_tracker>(o);
  std::vector<confirm_callback> cbs(detail::round_up_pow2(o.window + 1));
  std::lock_guard lock(impl_->conn->pub_mu);
  impl_->mask = cbs.size() - 1;
  impl_->callbacks = std::move(cbs);
  impl_->has_timeout = timeout.count() > 0;
  if (impl_->has_timeout) impl_->conn->any_timeout.store(true);
  impl_->tracker = std::move(t);
}

publish_status channel::try_publish(std::string_view exchange, std::string_view routing_key,
                                    const codec::basic_properties& props, std::string_view body,
                                    const publish_options& o, confirm_callback on_confirm) {
  return impl_->try_publish(exchange, routing_key, props, body, o, on_confirm);
}

publish_status channel::publish(std::string_view exchange, std::string_view routing_key,
                                const codec::basic_properties& props, std::string_view body,
                                std::chrono::steady_clock::time_point deadline,
                                const publish_options& o, confirm_callback on_confirm) {
  connection_impl& c = *impl_->conn;
  while (true) {
    const publish_status s = impl_->try_publish(exchange, routing_key, props, body, o, on_confirm);
    if (s == publish_status::ok || s == publish_status::closed || s == publish_status::too_large) {
      return s;
    }
    if (detail::current_io != nullptr) return s;  // an I/O thread must never wait for itself
    const auto now = clock::now();
    if (now >= deadline) return publish_status::timeout;
    std::unique_lock lock(c.pub_mu);
    c.waiters.fetch_add(1, std::memory_order_seq_cst);
    // Bounded slices: a wake-up that races with the check above costs at most one slice.
    c.room_cv.wait_until(lock, std::min(deadline, now + std::chrono::milliseconds(10)));
    c.waiters.fetch_sub(1, std::memory_order_seq_cst);
  }
}

std::future<confirm_result> channel::publish_confirmed(std::string_view exchange,
                                                       std::string_view routing_key,
                                                       const codec::basic_properties& props,
                                                       std::string_view body,
                                                       const publish_options& o) {
  auto p = std::make_shared<std::promise<confirm_result>>();
  std::future<confirm_result> f = p->get_future();
  {
    std::lock_guard lock(impl_->conn->pub_mu);
    if (!impl_->tracker) {
      p->set_exception(
          std::make_exception_ptr(std::logic_error("publish_confirmed: not in confirm mode")));
      return f;
    }
  }
  confirm_callback cb = [p](const confirm_result& r) { p->set_value(r); };
  const publish_status s = impl_->try_publish(exchange, routing_key, props, body, o, cb);
  if (s != publish_status::ok) p->set_exception(std::make_exception_ptr(publish_rejected(s)));
  return f;
}

void channel::on_return(std::function<void(const returned_message&)> f) {
  auto self = impl_;
  auto fn = std::make_shared<std::function<void(const returned_message&)>>(std::move(f));
  if (self->conn->io.on_this_thread()) {
    self->on_return = std::move(*fn);
    return;
  }
  std::promise<void> done;
  std::future<void> waited = done.get_future();
  self->conn->io.post([self, fn, &done] {
    self->on_return = std::move(*fn);
    done.set_value();
  });
  waited.wait();
}

std::size_t channel::outstanding_confirms() const noexcept {
  return impl_->outstanding.load(std::memory_order_relaxed);
}

bool channel::wait_for_confirms(std::chrono::steady_clock::time_point deadline) {
  detail::check_not_io("wait_for_confirms");  // the confirms it waits for come on that thread
  connection_impl& c = *impl_->conn;
  std::unique_lock lock(c.pub_mu);
  // Done means settled AND its callback has returned (callbacks run outside the lock).
  while (impl_->tracker &&
         ((impl_->tracker->outstanding() != 0 && impl_->pub_open) || impl_->undelivered != 0)) {
    if (clock::now() >= deadline) return false;
    c.waiters.fetch_add(1, std::memory_order_seq_cst);
    c.room_cv.wait_until(lock, std::min(deadline, clock::now() + std::chrono::milliseconds(10)));
    c.waiters.fetch_sub(1, std::memory_order_seq_cst);
  }
  return true;
}

std::string channel::basic_consume(std::string_view queue, delivery_handler handler,
                                   const consumer_options& o, const ack_coalescing& ac) {
  detail::check_not_io("basic.consume");
  if (o.nowait && o.consumer_tag.empty()) {
    throw std::invalid_argument("basic.consume with nowait needs a consumer_tag");
  }
  auto entry = std::make_unique<detail::consumer_entry>();
  entry->tag = o.consumer_tag;  // the key a nowait consumer is registered under
  entry->route = detail::consumer_ref::adopt(new detail::consumer_impl());
  entry->route->ch = impl_;
  entry->route->no_ack = o.no_ack;
  entry->on_cancel = o.on_cancel;
  entry->batch.reserve(64);
  entry->record = {impl_->id,   std::string(queue), o.consumer_tag, o.no_ack,
                   o.exclusive, o.no_local,         o.arguments};
  detail::consumer_ref route = entry->route;
  entry->box = std::make_unique<workers::mailbox<delivery>>(
      impl_->conn->eng.pool,
      [h = std::move(handler)](delivery& d) {
        struct guard {
          ~guard() { --detail::in_handler; }
        } g;
        ++detail::in_handler;
        h(d);
      },
      std::max(1u, o.concurrency), workers::mailbox<delivery>::error_handler{},
      // The pending counts go down once per run of deliveries a worker handled, not per
      // delivery: two atomic operations on lines the I/O thread also writes.
      [route](std::size_t n) { route->handled(n); });
  // The coalescer is per channel: the first consumer's settings apply (I/O thread).
  {
    auto self = impl_;
    protocol::ack_coalescer_options co{ac.max_count, ac.max_delay};
    std::promise<void> done;
    std::future<void> waited = done.get_future();
    impl_->conn->io.post([self, co, &done] {
      if (self->consumers.empty() && self->coalescer.unsettled() == 0) {
        self->coalescer = protocol::ack_coalescer(co);
      }
      done.set_value();
    });
    waited.wait();
  }
  const std::string args = detail::encode_args(o.arguments);
  codec::basic_consume m;
  m.queue = queue;
  m.consumer_tag = o.consumer_tag;
  m.no_local = o.no_local;
  m.no_ack = o.no_ack;
  m.exclusive = o.exclusive;
  m.nowait = o.nowait;
  m.arguments = codec::table_view{args};
  protocol::command c =
      impl_->call(m, o.nowait ? 0 : codec::basic_consume_ok::id, std::move(entry));
  codec::basic_consume_ok ok;
  if (o.nowait) {
    ok.consumer_tag = o.consumer_tag;
  } else {
    c.decode(ok);
  }
  std::string tag(ok.consumer_tag);
  {
    std::lock_guard lock(impl_->conn->topo_mu);
    consumer_record r{impl_->id,   std::string(queue), tag,        o.no_ack,
                      o.exclusive, o.no_local,         o.arguments};
    impl_->conn->topo.consumers.push_back(std::move(r));
  }
  return tag;
}

void channel::basic_cancel(std::string_view consumer_tag, bool nowait) {
  codec::basic_cancel m;
  m.consumer_tag = consumer_tag;
  m.nowait = nowait;
  auto call = std::make_shared<detail::rpc_call>();
  if (nowait) {
    // No cancel-ok to drop it on: the consumer goes as the frame does.
    call->before_send = [tag = std::string(consumer_tag)](channel_impl& ch) {
      ch.drop_consumer(tag);
      // Hands the retired consumer over now (after_feed does it for a cancel-ok), so that the
      // drain below waits for its handlers in flight.
      ch.conn->after_feed();
    };
  } else {
    call->reply_id = codec::basic_cancel_ok::id;
  }
  impl_->call(m, std::move(call));
  {
    std::lock_guard lock(impl_->conn->topo_mu);
    std::erase_if(impl_->conn->topo.consumers,
                  [&](const consumer_record& r) { return r.consumer_tag == consumer_tag; });
  }
  impl_->conn->drain_retired();
}

void channel::close() {
  detail::check_not_io("channel.close");
  auto self = impl_;
  auto call = std::make_shared<detail::rpc_call>();
  std::future<protocol::command> f = call->done.get_future();
  self->conn->io.post([self, call] {
    if (self->st != channel_impl::state::open || !self->conn->machine_open()) {
      call->done.set_value(protocol::command{});
      return;
    }
    // Decisions made before the close go first, as before any blocking call (start_rpc): the
    // ones still queued for this thread, then every one the channel holds. Once it is closing,
    // a queued one is dropped, and the broker would requeue a message that was handled.
    const time_point now = clock::now();
    self->conn->io.apply_acks(now);
    self->send_acks(now, true);
    self->conn->seal(now);
    self->st = channel_impl::state::closing;
    {
      std::lock_guard lock(self->conn->pub_mu);
      self->pub_open = false;
    }
    self->close_call = call;
    self->conn->machine_close_channel(self->id, 200, "closed by client");
    self->conn->begin_wait(call->wait);
  });
  if (f.wait_for(self->conn->eng.options.rpc_timeout) != std::future_status::ready) {
    // close_call stays to take a late close-ok, but nobody waits for it now.
    self->conn->io.run_and_wait([&] { self->conn->end_wait(call->wait); });
    throw detail::rpc_timed_out("channel.close", self->conn->eng.options.rpc_timeout);
  }
  try {
    f.get();
  } catch (...) {
  }
  std::lock_guard lock(self->conn->topo_mu);
  std::erase_if(self->conn->topo.consumers,
                [&](const consumer_record& r) { return r.channel == self->id; });
  self->conn->drain_retired();
}

bool channel::is_open() const noexcept {
  return impl_->open_flag.load();
}
bool channel::flow_active() const noexcept {
  return impl_->flow_flag.load();
}
std::uint16_t channel::id() const noexcept {
  return impl_->id;
}
std::exception_ptr channel::error() const {
  std::lock_guard lock(impl_->err_mu);
  return impl_->error;
}

// test_probe ------------------------------------------------------------------------------------

std::size_t detail::test_probe::replies_awaited(const connection& c) {
  detail::check_not_io("test_probe");
  std::size_t n = 0;
  c.impl_->io.run_and_wait([&] { n = c.impl_->replies_awaited(); });
  return n;
}

std::size_t detail::test_probe::cancelled_no_ack_remembered(const channel& ch) {
  detail::check_not_io("test_probe");
  std::size_t n = 0;
  ch.impl_->conn->io.run_and_wait([&] { n = ch.impl_->cancelled_no_ack.size(); });
  return n;
}

// delivery --------------------------------------------------------------------------------------

std::uint16_t delivery::channel_id() const noexcept {
  return consumer_ ? consumer_->ch->id : std::uint16_t{0};
}

namespace {
bool route_ack(const detail::consumer_ref& c, std::uint64_t tag, detail::ack_request::kind k,
               bool multiple, bool requeue) {
  if (!c || c->no_ack || !c->ch->open_flag.load(std::memory_order_relaxed)) return false;
  detail::ack_request r;
  r.ch = c->ch;
  r.tag = tag;
  r.what = k;
  r.multiple = multiple;
  r.requeue = requeue;
  c->ch->conn->io.post_ack(std::move(r));
  return true;
}
}  // namespace

bool delivery::ack(bool multiple) {
  return route_ack(consumer_, tag_, detail::ack_request::kind::ack, multiple, false);
}
bool delivery::nack(bool multiple, bool requeue) {
  return route_ack(consumer_, tag_, detail::ack_request::kind::nack, multiple, requeue);
}
bool delivery::reject(bool requeue) {
  return route_ack(consumer_, tag_, detail::ack_request::kind::reject, false, requeue);
}

// engine ----------------------------------------------------------------------------------------

engine::engine(engine_options o) : impl_(std::make_unique<detail::engine_impl>(o)) {}

engine::~engine() {
  std::vector<std::shared_ptr<connection_impl>> conns;
  {
    std::lock_guard lock(impl_->conns_mu);
    conns = impl_->conns;
  }
  for (auto& c : conns) {
    try {
      c->close();
    } catch (...) {
    }
  }
  for (auto& c : conns) c->drain_retired();
  for (auto& io : impl_->ios) io->stop();
  for (auto& c : conns) c->drain_retired();
}

const engine_options& engine::options() const noexcept {
  return impl_->options;
}

std::shared_ptr<connection> engine::connect(const warren::connection_options& opts) {
  detail::check_not_io("engine::connect");
  io::host_port peer;
  io::io_error err;
  const std::uint16_t default_port = opts.ssl ? io::default_amqps_port : io::default_amqp_port;
  if (auto e = io::parse_host_port(opts.host, default_port, peer); e) {
    throw std::system_error(e.code, e.message);
  }
  const time_point deadline =
      opts.connect_timeout
          ? clock::now() + std::chrono::duration_cast<clock::duration>(*opts.connect_timeout)
          : time_point::max();
  // Without py-amqp's TCP_USER_TIMEOUT unless asked for: see connect() in engine.h.
  const auto settings = io::effective_socket_settings(opts.socket_settings, false);
  io::unique_fd fd = io::connect_tcp(peer, settings, deadline, err);
  if (!fd.valid()) throw std::system_error(err.code, err.message);
  return adopt(std::move(fd), opts);
}

std::shared_ptr<connection> engine::adopt(io::unique_fd fd,
                                          const warren::connection_options& opts) {
  detail::check_not_io("engine::adopt");
  if (const int fl = ::fcntl(fd.get(), F_GETFL);
      fl < 0 || ::fcntl(fd.get(), F_SETFL, fl | O_NONBLOCK) < 0) {
    throw std::system_error(errno, std::system_category(), "fcntl O_NONBLOCK");
  }
  std::unique_ptr<io::tls_session> tls;
  if (opts.ssl) {
    io::io_error err;
    auto ctx = io::tls_context::create(*opts.ssl, err);
    if (!ctx) throw std::system_error(err.code, err.message);
    io::host_port peer;
    io::parse_host_port(opts.host, io::default_amqps_port, peer);
    tls = io::tls_session::create(ctx, peer.host, err);
    if (!tls) throw std::system_error(err.code, err.message);
  }
  detail::io_thread& io = impl_->next_io();
  auto c = std::make_shared<connection_impl>(*impl_, io, opts, std::move(fd), std::move(tls));
  std::future<void> opened = c->opened.get_future();
  io.post([c, &io] {
    io.add(c);
    c->start(clock::now());
  });
  opened.get();  // throws what closed the connection before open-ok
  {
    std::lock_guard lock(impl_->conns_mu);
    impl_->conns.push_back(c);
  }
  return std::make_shared<connection>(c);
}

}  // namespace warren::async
