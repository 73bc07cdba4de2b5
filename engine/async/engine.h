// warren's multithreaded engine: I/O threads that own sockets, epoll and heartbeats; a
// zero-copy receive path handing deliveries to a TBB worker pool; a publish path that any thread
// may use, with back-pressure as a return value; publisher confirms; a topology record.
//
// Threads (see README, "Design of the async engine"):
//   - I/O threads (engine_options::io_threads). Each runs one epoll loop for the connections
//     assigned to it (round-robin), drives their connection_machine (the same sans-I/O class as
//     the blocking API), runs their timers (heartbeats, dead-peer detection, ack coalescing,
//     confirm timeouts) and calls confirm_callback, on_blocked, on_unblocked, on_closed and
//     on_return. Those callbacks must be short and must not make blocking calls.
//   - Worker threads (engine_options::workers, a TBB arena): delivery_handler runs there.
//   - Any other thread (the application's): everything else.
//
// Blocking calls (connect, adopt, open_channel, update_secret, topology RPCs, basic_qos, flow,
// confirm_select, basic_consume/cancel, basic_get, basic_recover(_async), tx_*, close,
// wait_for_confirms) are not allowed on an I/O thread (they would wait for the thread they
// block): they throw std::logic_error there. They may be made from worker threads. A call made
// with nowait (or basic_recover_async) does not wait for the broker, only for the I/O thread to
// queue its frame, and is a blocking call in this sense. publish(deadline) never waits on an I/O
// thread: it returns the status at once. Non-blocking calls (try_publish, publish_confirmed,
// delivery ack/nack/reject, is_open, blocked, outstanding_confirms, topology, the on_* setters) may
// be made from any thread, I/O threads included (channel::on_return waits for the channel's I/O
// thread to take the handler, unless called on it).
//
// Errors: blocking calls throw warren's py-amqp exception types (engine/errors.h): a channel
// error from the broker (404 not_found, ...) closes that channel and throws its class; a closed
// connection throws the error that closed it (or connection_forced-like errors built from the
// close reason; a transport failure is recoverable_connection_error with reply code 0 and the
// transport's message); amqp_timeout when a deadline passes (engine_options::rpc_timeout for
// replies). Publishing never throws: it returns publish_status.
//
// Lifetimes: the engine must outlive every connection, channel and delivery obtained from it
// (its destructor closes connections, waits for handlers in flight and joins its threads).
// Connection and channel handles are shared_ptrs: dropping the handle does not close them.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "codec/content.h"
#include "codec/field_table.h"
#include "engine/buffer.h"
#include "engine/errors.h"
#include "engine/io/socket.h"
#include "engine/metrics/metrics.h"
#include "engine/options.h"
#include "engine/protocol/connection_machine.h"
#include "engine/protocol/recovery.h"
#include "engine/protocol/topology.h"

namespace warren::async {

namespace detail {
class engine_impl;
class io_thread;
class connection_impl;
class channel_impl;
struct consumer_impl;
struct delivery_stamp;
struct test_probe;

// A counted reference to a consumer's ack route. Intrusive rather than a shared_ptr so that the
// I/O thread counts a whole batch of deliveries with one atomic add.
class consumer_ref {
 public:
  consumer_ref() noexcept = default;
  consumer_ref(const consumer_ref& o) noexcept;
  consumer_ref(consumer_ref&& o) noexcept : p_(o.p_) { o.p_ = nullptr; }
  consumer_ref& operator=(consumer_ref o) noexcept {
    consumer_impl* t = p_;
    p_ = o.p_;
    o.p_ = t;
    return *this;
  }
  ~consumer_ref();
  consumer_impl* get() const noexcept { return p_; }
  consumer_impl* operator->() const noexcept { return p_; }
  explicit operator bool() const noexcept { return p_ != nullptr; }
  // Takes over a reference the caller has already counted.
  static consumer_ref adopt(consumer_impl* p) noexcept {
    consumer_ref r;
    r.p_ = p;
    return r;
  }

 private:
  consumer_impl* p_ = nullptr;
};
}  // namespace detail

// Receive batching: CPU for latency, off by default (min_bytes 0). A consumer at full speed
// wakes the I/O thread for every few deliveries the broker writes (about 9 for 16 B messages
// from a local RabbitMQ), and each wake-up costs a sleep, a read and a hand-off to a worker:
// most of the client's CPU per message. With batching, a connection that is read twice within
// max_wait counts as busy: its socket then wakes the I/O thread only once min_bytes are waiting
// (SO_RCVLOWAT), and the thread reads whatever is there max_wait after its previous read. A busy
// connection's bytes may so wait up to max_wait longer; a connection read less often than that
// (requests and replies, a trickle of messages, heartbeats) is read at once, as without batching.
// A read that finds nothing makes the connection idle again. While any call on the connection
// waits for a reply (connect's handshake, RPCs, open_channel, close, update_secret), it is idle
// and stays idle, whatever arrives before the reply: replies are never held back. Publisher
// confirms are not replies in this sense: on a busy connection they may wait up to max_wait.
// Heartbeats, flow control and reading paused by max_pending_deliveries are unaffected.
struct receive_batching {
  std::size_t min_bytes = 0;  // 0: off. Keep it well under the socket's receive buffer.
  std::chrono::microseconds max_wait{500};
};

struct engine_options {
  unsigned io_threads = 1;  // each owns its connections' sockets, epoll, timers, heartbeats
  unsigned workers = 0;     // TBB worker threads for consumer handlers; 0 = hardware_concurrency
  std::size_t rx_buffer_size = 256 * 1024;    // pooled receive buffer size
  std::size_t rx_pool_max = 1024;             // cached buffers per I/O thread (bounds idle memory)
  std::size_t max_outgoing_bytes = 8u << 20;  // per connection: publish back-pressure above this
  // Per connection: deliveries handed to consumers and not yet handled. Above it the I/O thread
  // stops reading that socket (EPOLLIN off) until handlers bring it below half of it again.
  std::size_t max_pending_deliveries = 64 * 1024;
  // How long every blocking call that waits for the broker's reply (RPCs, open_channel,
  // channel::close, update_secret) waits before it throws amqp_timeout. Engine-wide rather than
  // per connection: it guards against a stuck broker, not a slow operation. A channel whose RPC
  // timed out is closed (a late reply would otherwise answer the next call on it).
  std::chrono::milliseconds rpc_timeout = std::chrono::seconds(60);
  receive_batching rx_batching;  // every connection of the engine; off by default
  // Automatic recovery of every connection of the engine (on by default; `.enabled = false`
  // turns it off): see "Recovery" in the README and connection's recovery members below.
  protocol::recovery_policy recovery;
  // Entities a recovery leaves out (an empty predicate keeps its kind).
  protocol::topology_filter recovery_filter;
  // Where every connection of the engine records its metrics (README, "Metrics"): a registry of
  // its own by default (engine::metrics() snapshots it); share one between engines to snapshot
  // them together; null records nothing (no counter on any path).
  std::shared_ptr<metrics::registry> metrics = std::make_shared<metrics::registry>();
};

// Result of a non-blocking publish attempt.
enum class publish_status : std::uint8_t {
  ok,           // encoded into the connection's outgoing buffer
  buffer_full,  // outgoing bytes above max_outgoing_bytes: retry later or wait
  window_full,  // confirm window (outstanding unconfirmed) is full
  blocked,      // broker sent connection.blocked, or channel.flow(active=false)
  closed,       // channel or connection is closed (channel::error() says why)
  too_large,    // body above the broker's max, or the encoder rejected the arguments
  timeout,      // publish(deadline) only: the deadline passed while waiting for room
  recovering,   // the connection is recovering: retry later, or publish(deadline) waits for it
};
std::string_view to_string(publish_status s) noexcept;

struct confirm_result {  // per-message completion, delivered once
  // Same values as protocol::confirm_outcome. in_doubt: the connection was lost before the
  // broker answered, so the message may or may not be on the broker (never reported as a nack,
  // which is the broker refusing it); with recovery's republish it is published again instead,
  // and this completion is its answer on the recovered channel: ack, or in_doubt when the broker
  // nacks the copy (the original may have been stored before the loss: a nack of the copy says
  // nothing about it).
  enum class outcome : std::uint8_t { ack, nack, timeout, in_doubt, channel_closed } what;
  std::uint64_t sequence = 0;    // the publish sequence number on its channel
  bool returned = false;         // basic.return arrived for it first (mandatory, unroutable)
  std::uint16_t reply_code = 0;  // return's or close's reply code
  std::string reply_text;
};
// Runs on the I/O thread: keep it short, never block. Called exactly once per publish made with
// a callback on a channel in confirm mode.
using confirm_callback = std::function<void(const confirm_result&)>;

struct publish_options {
  bool mandatory = false;
  bool immediate = false;
};

// A basic.return: the message came back unroutable. Views are valid during the callback only;
// copy what must outlive it.
struct returned_message {
  std::uint16_t reply_code = 0;
  std::string_view reply_text;
  std::string_view exchange;
  std::string_view routing_key;
  const codec::content_header* header = nullptr;
  std::string_view body;
};

class delivery;
using delivery_handler = std::function<void(delivery&)>;  // runs on a TBB worker thread

// basic.consume's options, shared with the blocking API (engine/options.h): consumer_tag, no_local,
// no_ack, exclusive, nowait, arguments, on_cancel, stream_start (a stream consumer: basic_consume
// throws stream_consume_error before sending when it is no_ack or the channel has no consumer
// prefetch). Here on_cancel (a broker cancel: queue
// deleted, ...) runs on the I/O thread; nowait sends basic.consume without waiting for
// consume-ok (it needs consumer_tag: nothing would tell the broker's choice), the consumer being
// registered before the frame goes, so deliveries that follow at once find it; an error (404,
// ...) closes the channel later. How many deliveries are handled at once is basic_consume's
// `concurrency`.
using consumer_options = warren::consume_options;

struct ack_coalescing {
  std::uint32_t max_count = 64;
  std::chrono::microseconds max_delay{1000};
};

// What was declared through the engine on one connection, for a later recovery to replay
// (engine/protocol/topology.h). Deleting an exchange or queue through the engine removes it and
// the bindings naming it (a queue: its consumers too).
using exchange_record = protocol::exchange_record;
using queue_record = protocol::queue_record;
using binding_record = protocol::binding_record;
using consumer_record = protocol::consumer_record;
using topology_record = protocol::topology_record;

// What a recovery did (engine/protocol/recovery.h): the trigger and reason, the time from the loss
// to the end of the replay, the endpoint reached, the attempts, the entities replayed, renamed
// server-named queues (old, new), the entities that failed, publishes republished or in doubt.
using recovery_report = protocol::recovery_report;

// A connection's life as the application sees it.
enum class connection_state : std::uint8_t {
  open,
  recovering,  // lost; reconnecting and replaying (publishes return publish_status::recovering)
  closed,      // for good: closed by the application, a loss not recovered, or recovery gave up
};
std::string_view to_string(connection_state s) noexcept;

class channel;

class connection {
 public:
  // Blocking: any thread but an I/O thread. Opens the lowest free channel id.
  std::shared_ptr<channel> open_channel();
  // Graceful close (bounded by a few seconds): every outstanding confirm completes with
  // in_doubt (the broker may or may not have them), consumers' mailboxes are drained. Idempotent.
  void close();
  bool is_open() const noexcept;
  bool blocked() const noexcept;
  // Callbacks run on the I/O thread. Set them before the events they observe can happen.
  void on_blocked(std::function<void(std::string_view)> f);
  void on_unblocked(std::function<void()> f);
  void on_closed(std::function<void(const warren::protocol::close_reason&)> f);
  // Why the connection closed (reply_code 0 and empty text while open).
  warren::protocol::close_reason close_reason() const;

  // Recovery (engine_options::recovery). When the connection is lost (a socket error or EOF,
  // missed heartbeats, the broker's connection.close 320 or 541; never after close(), and after a
  // refused login only with recovery_policy::on_refused_login) the engine, on a recovery thread of
  // the connection:
  //   - ends what was in flight: calls waiting for a reply throw the loss's error; unconfirmed
  //     publishes complete in_doubt (or, with recovery_policy::republish, are kept and published
  //     again on the recovered channel, completing with that channel's ack, or in_doubt when it
  //     nacks the copy); deliveries of the
  //     lost connection can no longer be settled (ack/nack/reject return false, nothing is sent;
  //     the broker redelivers them, redelivered set);
  //   - reconnects (the next endpoint at once, the backoff of the policy between failed rounds),
  //     reopens every channel that was open under the same id (its qos, confirm mode, tx, flow),
  //     republishes, then replays the topology record (exchanges, queues, bindings, consumers with
  //     their tags, arguments and handlers; a server-named queue is renamed and what named it
  //     follows); a failed entity is reported and the others go on;
  //   - meanwhile publishes return publish_status::recovering (publish(deadline) waits within its
  //     deadline), blocking calls throw recoverable_connection_error("connection is recovering").
  // The channel and connection handles stay valid across a recovery. Hooks run on the
  // connection's recovery thread (they may block briefly; they must not call close() on this
  // connection). Set them before the events they observe can happen.
  connection_state state() const noexcept;
  void on_recovery_started(std::function<void(const warren::protocol::close_reason&)> f);
  void on_recovered(std::function<void(const recovery_report&)> f);
  // Attempts ran out (recovery_policy::max_attempts): called first, then the connection closes
  // for good with the loss's reason (and on_closed runs): once state() reads closed, this ran.
  void on_recovery_failed(std::function<void(const warren::protocol::close_reason&)> f);
  // The endpoint (host[:port]) the connection is on, or was last on.
  std::string endpoint() const;
  // A snapshot of the topology record (any thread).
  topology_record topology() const;
  // connection.update-secret (e.g. a refreshed OAuth token; RabbitMQ also accepts the same
  // password under PLAIN), waiting for update-secret-ok. Blocking, any thread but an I/O thread
  // (std::logic_error there). Throws the error that closed the connection if it is or becomes
  // closed (e.g. the broker refuses the secret), amqp_timeout after engine_options::rpc_timeout
  // (the connection stays open; a late -ok is matched to this call, not a later one).
  void update_secret(std::string_view new_secret, std::string_view reason);
  // Bytes encoded for the wire and not yet written (publish staging plus the machine's output).
  std::size_t outgoing_bytes() const noexcept;
  std::uint32_t frame_max() const noexcept;
  // Deliveries read on this connection and not yet handled (reading pauses above
  // engine_options::max_pending_deliveries).
  std::size_t pending_deliveries() const noexcept;
  // This connection's counts, its channels' and its consumers' (README, "Metrics"). Any thread,
  // any time, also after the connection closed; no lock on any recording path is taken. All
  // zero, id 0, when engine_options::metrics is null.
  metrics::connection_snapshot metrics() const;

  ~connection();
  explicit connection(std::shared_ptr<detail::connection_impl> impl);

 private:
  friend struct detail::test_probe;
  std::shared_ptr<detail::connection_impl> impl_;
};

// One AMQP channel. Unless a member says otherwise, a blocking call here:
//   - may be called from any thread but an I/O thread (std::logic_error there), concurrently
//     with other calls on the channel (RPCs from several threads are answered in the order
//     their frames reach the wire);
//   - sends its method after the publishes staged before it on this connection and after the
//     delivery acks/nacks/rejects made before it on this channel (so a handler's ack followed
//     by tx_commit or basic_recover is inside that commit, or settled before that recover);
//   - waits for the broker's -ok at most engine_options::rpc_timeout;
//   - throws: the channel error the broker closed the channel with (not_found,
//     precondition_failed, ...; the channel is then closed and error() holds it, and every
//     later call rethrows it); the connection's error when the connection closed (the class of
//     its reply code, e.g. amqp_not_implemented_error for 540, or recoverable_connection_error
//     for a transport failure); recoverable_connection_error("channel is closed") after close();
//     amqp_timeout when no reply came within rpc_timeout (the channel is then closed, with the
//     timeout as its error()); std::invalid_argument for arguments that cannot be encoded.
// With nowait (where the options have it) the call returns once its frame is queued, without a
// reply: the topology record changes at once, as if it succeeded; an error the broker raises
// for it closes the channel later, and the next call on the channel throws it.
//
// The blocking warren::channel's members without a namesake here, what stands in, and why:
//   channel_id, active, basic_publish    -> id, flow_active, try_publish/publish/publish_confirmed
//   open (re-open the same id)           -> connection::open_channel. A closed channel is not
//       reused: deliveries and acks still in flight name it, and would act on the new one.
//   close(reply_code, text, method_sig)  -> close(). A client close has nothing to report; the
//       engine itself closes with 406 when the broker confirms an unknown publish tag.
//   basic_ack/basic_nack/basic_reject by delivery tag -> delivery::ack/nack/reject. The
//       delivery carries its channel and the channel's life it came from, and its decision
//       goes through the channel's ack coalescer; a bare tag could settle a message of a later
//       life or be coalesced into a multiple=true ack it must not join.
//   confirm_select(nowait)               -> confirm_select(window, timeout), which always waits:
//       the broker's refusal (406 on a channel in tx mode) is then thrown by it, instead of
//       turning the publishes made after it into channel_closed completions.
//   wait_for_confirms(timeout), throwing message_nacked -> wait_for_confirms(deadline), true
//       once all completed; each publish's outcome (nack included) goes to its callback.
//   next_publish_seq_no, in_confirm_mode -> confirm_result::sequence. Sequence numbers are
//       assigned at publish, under the publish lock, in wire order: a number read before
//       publishing could be taken by another thread's publish.
//   events().basic_ack/basic_nack/basic_return -> the publish's confirm_callback (or
//       publish_confirmed's future) and on_return.
//   consumer_tags, no_ack_consumers      -> connection::topology().consumers (channel id, tag,
//       no_ack), kept outside the I/O thread so any thread may read it.
//   connection()                         -> the shared connection handle the channel was
//       opened from; a channel does not hand out handles to its connection.
class channel {
 public:
  // Topology (blocking RPCs, recorded in the connection's topology record; see above for the
  // thread rules and errors). With options.nowait the call does not wait for the -ok:
  // queue_declare then returns {queue, 0, 0} (a server-named queue declared with nowait is not
  // recorded: its name is unknown, and "" only names it on this channel), and queue_delete and
  // queue_purge return 0. queue.unbind has no nowait bit in AMQP 0-9-1: queue_unbind always
  // waits.
  warren::queue_declare_ok queue_declare(std::string_view queue,
                                         const warren::queue_declare_options& = {});
  void exchange_declare(std::string_view exchange, std::string_view type,
                        const warren::exchange_declare_options& = {});
  void queue_bind(std::string_view queue, std::string_view exchange, std::string_view routing_key,
                  const warren::bind_options& = {});
  void queue_unbind(std::string_view queue, std::string_view exchange, std::string_view routing_key,
                    const warren::bind_options& = {});
  void exchange_bind(std::string_view destination, std::string_view source,
                     std::string_view routing_key, const warren::bind_options& = {});
  void exchange_unbind(std::string_view destination, std::string_view source,
                       std::string_view routing_key, const warren::bind_options& = {});
  std::uint32_t queue_purge(std::string_view queue, bool nowait = false);
  std::uint32_t queue_delete(std::string_view queue, const warren::queue_delete_options& = {});
  void exchange_delete(std::string_view exchange, bool if_unused = false, bool nowait = false);
  // basic.qos, blocking RPC.
  void basic_qos(std::uint32_t prefetch_size, std::uint16_t prefetch_count, bool global);
  // channel.flow from this client: asks the broker to stop (false) or resume (true) deliveries
  // to this channel; returns the broker's flow-ok `active`. Blocking RPC. RabbitMQ refuses
  // active=false with 540 NOT_IMPLEMENTED, a connection error: amqp_not_implemented_error, and
  // the connection is closed.
  bool flow(bool active);
  // Confirm mode with a bounded window of outstanding publishes and an optional confirm timeout
  // (0: none). Call before publishing on this channel. Blocking RPC; idempotent. On a channel
  // in tx mode the broker closes the channel: precondition_failed (406).
  void confirm_select(std::size_t window = 1000, std::chrono::milliseconds timeout = {});

  // Transactions, blocking RPCs. tx_commit/tx_rollback cover the publishes made before them on
  // this connection and the deliveries settled before them on this channel (see above). A
  // channel is in tx mode or in confirm mode, never both: tx_select on a channel in confirm
  // mode (or confirm_select in tx mode) makes the broker close the channel with 406, thrown as
  // precondition_failed. tx_commit/tx_rollback without tx_select: precondition_failed too.
  // After tx_rollback the deliveries whose acks were rolled back stay unacknowledged on the
  // broker, and the engine does not let them be settled twice: basic_recover(true) (or closing
  // the channel) requeues them.
  void tx_select();
  void tx_commit();
  void tx_rollback();

  // basic.get, blocking RPC: one message, or nullopt when the queue is empty (get-empty). The
  // delivery is what a consumer's handler gets: body and names are views into the receive
  // buffer (no copy; the delivery keeps the buffer until it and its copies are gone, on any
  // thread), consumer_tag() is empty, message_count() is the queue's count after this message.
  // Unless no_ack, settle it with its ack/nack/reject from any thread: they are routed to the
  // I/O thread and coalesced like a consumed delivery's (sent within the channel's
  // ack_coalescing::max_delay, or before the next blocking call on the channel).
  std::optional<delivery> basic_get(std::string_view queue, bool no_ack = false);
  // basic.recover (waits for recover-ok) and basic.recover-async (returns once queued): the
  // broker redelivers every unacknowledged message of this channel (requeue=true). Decisions
  // made before the call are sent first; those made on the earlier deliveries afterwards (and
  // on deliveries that reach the client before recover-ok, which the broker requeues too) are
  // dropped: their ack() still returns true, but nothing goes on the wire, since the broker
  // would close the channel for the unknown tag. basic_recover_async has no reply to mark that
  // boundary, so a decision on a delivery already in flight when it was sent may reach the
  // broker as an unknown tag (406): prefer basic_recover. RabbitMQ refuses requeue=false with
  // 540 NOT_IMPLEMENTED (amqp_not_implemented_error for basic_recover; the connection closes).
  void basic_recover(bool requeue);
  void basic_recover_async(bool requeue);

  // Publishing: any thread, concurrently. try_publish never blocks; publish blocks at most
  // until `deadline` for room (buffer, window, blocked, flow) and returns timeout when it
  // passes. In confirm mode the sequence number is assigned here, in wire order, and
  // on_confirm (if any) is called once on the I/O thread. Without confirm mode on_confirm is
  // ignored. The arguments are copied into the outgoing buffer before the call returns.
  publish_status try_publish(std::string_view exchange, std::string_view routing_key,
                             const codec::basic_properties& props, std::string_view body,
                             const publish_options& = {}, confirm_callback on_confirm = {});
  publish_status publish(std::string_view exchange, std::string_view routing_key,
                         const codec::basic_properties& props, std::string_view body,
                         std::chrono::steady_clock::time_point deadline,
                         const publish_options& = {}, confirm_callback on_confirm = {});
  // Confirm mode only (otherwise the future holds std::logic_error). Never blocks: when the
  // publish is not accepted the future is ready at once, holding a publish_rejected exception
  // with the status (buffer_full, window_full, blocked, closed, too_large).
  std::future<confirm_result> publish_confirmed(std::string_view exchange,
                                                std::string_view routing_key,
                                                const codec::basic_properties& props,
                                                std::string_view body, const publish_options& = {});
  // basic.return handler, on the I/O thread, called before that publish's confirm.
  void on_return(std::function<void(const returned_message&)> f);
  std::size_t outstanding_confirms() const noexcept;
  // True once every publish made so far has completed (any outcome); false at the deadline.
  bool wait_for_confirms(std::chrono::steady_clock::time_point deadline);

  // Consuming: handler on TBB workers; returns the consumer tag. Blocking (with o.nowait, only
  // until the frame is queued; std::invalid_argument without o.consumer_tag). `concurrency`
  // deliveries of this consumer are handled at once at most (1: strictly in order).
  std::string basic_consume(std::string_view queue, delivery_handler handler,
                            const consumer_options& = {}, const ack_coalescing& = {},
                            unsigned concurrency = 1);
  // Blocking; returns after cancel-ok and after the consumer's handlers in flight finished.
  // With nowait the consumer is removed when the frame is queued (deliveries still in flight
  // for it are rejected with requeue, or dropped when it was no_ack), and the call returns once
  // its handlers in flight finished, without waiting for cancel-ok.
  void basic_cancel(std::string_view consumer_tag, bool nowait = false);
  // A stream consumer's progress (consumer_options::stream_start): the offset of the last
  // delivery its application settled (delivery::ack/nack/reject, as the channel's I/O thread
  // accepted them) such that every earlier one of it was settled too; what a recovery resumes
  // after (stream_offset::at(*last + 1)). nullopt before the first, or when `consumer_tag` is no
  // stream consumer of this channel. Blocking (waits for the I/O thread; std::logic_error on
  // one).
  std::optional<std::uint64_t> stream_last_handled(std::string_view consumer_tag) const;
  // Blocking. Outstanding confirms complete with channel_closed. Idempotent.
  void close();
  bool is_open() const noexcept;
  // channel.flow from the broker: false while the broker asked us to stop publishing.
  bool flow_active() const noexcept;
  std::uint16_t id() const noexcept;
  // The error that closed the channel (null while open or after a close by this client).
  std::exception_ptr error() const;

  ~channel();
  explicit channel(std::shared_ptr<detail::channel_impl> impl);

 private:
  friend struct detail::test_probe;
  std::shared_ptr<detail::channel_impl> impl_;
};

namespace detail {
// For the engine's own tests (tests/engine/async) only: state that lives on a connection's I/O
// thread, read there. Blocking: waits for that thread, so never on an I/O thread
// (std::logic_error there).
struct test_probe {
  // Calls on the connection waiting for the broker's reply (receive batching holds nothing back
  // while there is one); 0 once every wait has ended, whichever way.
  static std::size_t replies_awaited(const connection& c);
  // Cancelled no-ack consumer tags the channel remembers (deliveries still in flight for them
  // are dropped rather than rejected); bounded however many consumers come and go.
  static std::size_t cancelled_no_ack_remembered(const channel& ch);
};
}  // namespace detail

// Thrown through publish_confirmed's future when the publish was not accepted.
class publish_rejected : public std::runtime_error {
 public:
  explicit publish_rejected(publish_status s);
  publish_status status() const noexcept { return status_; }

 private:
  publish_status status_;
};

// One basic.deliver handed to a handler by reference, or one basic.get-ok returned by
// channel::basic_get. Copy or move it to keep the body past the handler: a delivery holds a
// reference on the receive buffer(s) its views point into, and the buffer returns to its pool when
// the last delivery viewing it goes (any thread).
class delivery {
 public:
  delivery() = default;
  std::string_view body() const noexcept { return body_; }  // view into the receive buffer
  const codec::content_header& header() const noexcept { return header_; }
  const codec::basic_properties& properties() const noexcept { return header_.properties; }
  std::uint64_t delivery_tag() const noexcept { return tag_; }
  bool redelivered() const noexcept { return redelivered_; }
  std::string_view exchange() const noexcept { return exchange_; }
  std::string_view routing_key() const noexcept { return routing_key_; }
  std::string_view consumer_tag() const noexcept { return consumer_tag_; }
  // basic_get only: messages left in the queue after this one (0 for consumed deliveries).
  std::uint32_t message_count() const noexcept { return message_count_; }
  // A quorum queue's redelivery count (the x-delivery-count header: 1 on the first redelivery,
  // then 2, ...); nullopt when absent (a first delivery, or a queue type that does not count).
  std::optional<std::uint64_t> delivery_count() const noexcept {
    return delivery_count_header(header_.properties);
  }
  // A stream delivery's offset (the x-stream-offset header); nullopt when absent.
  std::optional<std::uint64_t> stream_offset() const noexcept {
    return stream_offset_header(header_.properties);
  }
  std::uint16_t channel_id() const noexcept;
  // Any thread; routed to the owning I/O thread; contiguous acks coalesce into multiple=true.
  // Returns false (nothing sent) when the consumer (or basic_get) was no_ack or the channel has
  // closed since the delivery, or the delivery came on a connection that was since lost (after a
  // recovery the broker redelivers it, with redelivered set, under a new tag). A tag already
  // settled (or given back by basic_recover) is dropped on the I/O thread (nothing goes on the
  // wire; the broker would close the channel for it).
  bool ack(bool multiple = false);
  bool nack(bool multiple = false, bool requeue = true);
  bool reject(bool requeue = true);

 private:
  friend class detail::channel_impl;
  friend class channel;  // basic_get builds one
  friend struct detail::delivery_stamp;
  rx_ref keep_[3];
  codec::content_header header_;
  std::string_view body_, exchange_, routing_key_, consumer_tag_;
  std::uint64_t tag_ = 0;
  bool redelivered_ = false;
  std::uint32_t message_count_ = 0;  // fits the padding before consumer_
  detail::consumer_ref consumer_;
  warren::protocol::time_point handed_{};  // the read that handed it over (metrics)
};

class engine {
 public:
  explicit engine(engine_options = {});
  ~engine();  // closes connections, drains, joins threads
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  // Blocking connect (any non-I/O thread): returns once connection.open-ok arrived, or throws
  // (each of opts.endpoint_hosts() is tried in the order of opts.allocation until one accepts the
  // TCP connection; the last one's error is thrown when none does)
  // (std::system_error for TCP/TLS failures, the py-amqp error for a refused login, amqp_timeout
  // when connect_timeout passes, naming the handshake). Takes the options both faces share
  // (engine/options.h: host, credentials and SASL, TLS, heartbeat, limits); the connection's
  // callbacks are its on_blocked/on_unblocked/on_closed. Socket settings are py-amqp's defaults
  // with opts.socket_settings on top, except
  // TCP_USER_TIMEOUT, set only when opts.socket_settings names it: py-amqp's 1 s would let the
  // kernel abort a connection whose peer stops reading for a second (RabbitMQ in a memory alarm);
  // the engine's heartbeats find dead peers instead.
  std::shared_ptr<connection> connect(const warren::connection_options& opts);
  // The same over an already connected stream socket (a socketpair in tests and benches); the
  // engine owns `fd` from here on. opts.host names the peer for TLS. Such a connection is never
  // recovered (the engine has no endpoint to reconnect to).
  std::shared_ptr<connection> adopt(io::unique_fd fd, const warren::connection_options& opts);

  const engine_options& options() const noexcept;
  // A snapshot of engine_options::metrics: every connection whose handle, or whose engine, still
  // holds it (README, "Metrics"). Any thread, any time; empty when the option is null.
  metrics::snapshot metrics() const;

 private:
  std::unique_ptr<detail::engine_impl> impl_;
};

}  // namespace warren::async
