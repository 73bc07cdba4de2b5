// Fuzzes protocol::channel_core (with channel_table, consumer_table, reply_expectations,
// confirm_tracker and ack_coalescer through it) as a face drives it: two cores on one
// connection_machine, the broker's commands built with the codec from the script and fed to the
// machine, the face's calls, decisions, timers on a fake clock, peer closes and lost connections
// (see channel_core_script.h). A model of what the face was told checks, after every step:
//   - every call's waiter is told at most once, never after its call gave up (abandon), and
//     exactly once by the time its channel's life has ended; the on_waiting sum is the number of
//     calls still waiting;
//   - every consumer handed to a core comes back exactly once, and all of a life's by its end;
//   - every publish registered with the tracker completes exactly once (ack or nack only while a
//     broker's basic.ack/nack is read, the end of a life with its cause, never with ack/nack), and
//     the tracker's outstanding count is the publishes not completed;
//   - every life begins once and ends once (on_ending, then on_ended), deliveries reach the face
//     only while open;
//   - on the wire (coalescing core): a single decision names a delivery of the current life that
//     the face decided that way (or one the core gives back itself: reject with requeue), and a
//     multiple frame spans only deliveries decided the same way; no decision goes out on a
//     channel that is not open, nor for a delivery of an ended life; a decision refused by the
//     core (stale life, closed channel) sends nothing;
//   - after a core's on_timer(now), its next deadline is after now (a face would spin otherwise);
//   - everything the client writes decodes as whole frames.
// A failed check aborts (a crash libFuzzer reports with the input).
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "codec/content.h"
#include "codec/frame.h"
#include "codec/methods.h"
#include "engine/protocol/channel_core.h"
#include "engine/protocol/channel_table.h"
#include "engine/protocol/connection_machine.h"
#include "tests/engine/protocol/scripted_peer.h"
#include "tests/fuzz/channel_core_script.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using namespace warren;
using namespace std::chrono_literals;
namespace cs = fuzz::channel_script;
using protocol::channel_state;

[[noreturn]] void violated(const char* what, int line) {
  std::fprintf(stderr, "channel_core_fuzz: invariant violated (line %d): %s\n", line, what);
  std::abort();
}
#define CHECK(cond)                         \
  do {                                      \
    if (!(cond)) violated(#cond, __LINE__); \
  } while (0)

constexpr int core_count = 2;

// WARREN_FUZZ_TRACE=1 in the environment: each step and event on stderr (to read a reproducer).
const bool tracing = std::getenv("WARREN_FUZZ_TRACE") != nullptr;
#define TRACE(...)                                  \
  do {                                              \
    if (tracing) std::fprintf(stderr, __VA_ARGS__); \
  } while (0)

std::string tag_name(std::uint8_t index) {
  const int i = index % cs::tag_count;
  return i == 0 ? "amq.ctag-0" : "c" + std::to_string(i);
}
constexpr std::string_view exchanges[cs::route_count] = {"", "ex", "ex"};
constexpr std::string_view routing_keys[cs::route_count] = {"q", "rk", "other"};

struct fuzz_consumer : protocol::consumer {
  int core = 0;
  bool returned = false;
};

struct face;

struct fuzz_waiter : protocol::reply_waiter {
  int core = 0;
  std::uint32_t life = 0;
  int calls = 0;
  bool abandoned = false;
  face* get_of = nullptr;  // a basic.get's call: its get-ok message is handed to this face
  bool get_no_ack = false;
  void on_reply(protocol::command& reply) override;
  void on_reply_checks(protocol::command& reply) {
    CHECK(!abandoned);
    CHECK(calls == 0);
    ++calls;
    // The reply's views are readable during the call.
    volatile char sink = 0;
    for (char c : reply.args) sink = static_cast<char>(sink + c);
    (void)sink;
  }
  void on_failed(protocol::end_cause, const protocol::close_reason&) override {
    CHECK(!abandoned);
    CHECK(calls == 0);
    ++calls;
  }
};

// One delivery the face was handed.
struct handed {
  int core = 0;
  std::uint32_t life = 0;
  std::uint64_t tag = 0;
};

// What the model knows of one delivery tag in the current life of the coalescing core.
struct tag_state {
  bool owed = false;       // the face must decide it (no-ack: not; given back by a recover: not)
  bool duplicate = false;  // the tag came twice (a broker would not): not judged
  bool decided = false;
  protocol::ack_action decision{};
  bool settled = false;  // its decision (or a multiple spanning it) went to the wire
};

struct publish_record {
  bool completed = false;
  protocol::confirm_outcome outcome{};
};

// The broker's side of one channel, as a conforming RabbitMQ keeps it: fed with every frame the
// client writes (in wire order), it answers calls in order, delivers only to consumers it knows
// with increasing tags, confirms only what was published in confirm mode, and answers a
// channel.close that crosses its own with close-ok (as RabbitMQ 3.10 does).
struct broker_channel {
  enum class state : std::uint8_t { closed, open, closing } st = state::closed;
  struct call {
    std::uint32_t request = 0;  // the method id the client sent
    std::string tag;            // consume/cancel
    bool active = false;        // channel.flow
  };
  std::deque<std::string> in_flight;  // method payloads the client wrote, not yet read
  std::deque<call> calls;             // read, not yet answered
  bool open_ok_sent = false;
  std::vector<std::string> consumers;
  std::uint64_t delivery_tag = 0;
  bool confirm = false;
  std::uint64_t published = 0;  // since confirm.select
  std::uint64_t confirmed = 0;  // every sequence up to here answered
  int named = 0;                // server-named consumers so far
};

class run;

// One face channel: the core, its handler, and the model of what it was told.
struct face final : protocol::channel_handler {
  run* owner = nullptr;
  int index = 0;  // 0: the coalescing core on channel 1; 1: the direct one on channel 2
  std::unique_ptr<protocol::channel_core> core;
  int holding = 0;
  int waiting = 0;  // the sum of on_waiting
  std::uint32_t lives_ended = 0;
  bool ending = false;  // between on_ending and on_ended
  protocol::end_cause ending_cause{};
  std::map<std::uint64_t, tag_state> tags;  // the current life's deliveries (coalescing core)
  // Raw frames reached this life: deliveries the model did not see may have arrived.
  bool blind = false;
  // Publishes by (confirm epoch, token); the epoch changes at each confirm.select.
  std::uint64_t epoch = 0;
  std::map<std::pair<std::uint64_t, std::uint64_t>, publish_record> publishes;
  std::uint64_t next_token = 1;
  std::vector<fuzz_consumer*> consumers;  // handed to the core, not yet returned
  broker_channel broker;
  bool face_closed = false;  // the face called close() in this life

  void on_delivery(protocol::consumer& c, protocol::command& cmd) override;
  void lock_publish() override { ++holding; }
  void unlock_publish() override { --holding; }
  void on_confirm(const protocol::confirm_event& e) override;
  void after_confirms() override { CHECK(holding == 0); }
  void on_return(protocol::command& cmd, const codec::basic_return&) override {
    CHECK(cmd.has_content);
    CHECK(cmd.body.size() == cmd.header.body_size);
  }
  void on_consumer_cancelled(std::unique_ptr<protocol::consumer> c) override {
    TRACE("  consumer %s cancelled by the broker\n", c->tag.c_str());
    give_back(std::move(c));
  }
  void on_consumer_removed(std::unique_ptr<protocol::consumer> c) override {
    TRACE("  consumer %s removed\n", c->tag.c_str());
    give_back(std::move(c));
  }
  void on_waiting(int delta) override {
    waiting += delta;
    CHECK(waiting >= 0);
  }
  void on_open() override {
    TRACE("  open ch%u life %u\n", core->id(), core->life());
    CHECK(core->state() == channel_state::open);
  }
  void on_ending(protocol::end_cause cause, const protocol::close_reason&) override {
    CHECK(!ending);
    CHECK(core->state() != channel_state::closed);
    CHECK(lives_ended + 1 == core->life());
    ending = true;
    ending_cause = cause;
    // With a conforming broker the core never closes a channel on its own (406 on a confirm for
    // an unknown tag is for brokers that are not).
    if (cause == protocol::end_cause::closed_by_client) CHECK(face_closed || !conforming());
  }
  bool conforming() const;
  void on_ended(protocol::end_cause cause, const protocol::close_reason&) override;

  void give_back(std::unique_ptr<protocol::consumer> c) {
    auto* fc = static_cast<fuzz_consumer*>(c.get());
    CHECK(fc->core == index);
    CHECK(!fc->returned);
    fc->returned = true;
    auto it = std::find(consumers.begin(), consumers.end(), fc);
    CHECK(it != consumers.end());
    consumers.erase(it);
    // The face releases it (its memory is freed here: a core still holding it would be a
    // use-after-free ASan reports).
  }
};

class run : public protocol::connection_handler, public protocol::channel_wire {
 public:
  explicit run(fuzz::fuzz_input& in) : in_(in) {}

  ~run() {
    // Cores go before the machine and the table that route to them.
    for (face& f : faces_) f.core.reset();
  }

  void go() {
    const std::uint8_t config = in_.u8();
    static constexpr std::uint32_t counts[] = {1, 2, 3, 64};
    static constexpr std::size_t memories[] = {1, 2, 64, 64};
    for (int i = 0; i < core_count; ++i) {
      face& f = faces_[i];
      f.owner = this;
      f.index = i;
      protocol::channel_core_options o;
      o.coalesce_acks = i == 0;
      o.acks.max_count = counts[config & 3];
      o.acks.max_delay =
          (config & cs::delay_1ms) ? std::chrono::microseconds(1000) : std::chrono::microseconds(0);
      o.cancelled_memory = memories[(config >> 3) & 3];
      f.core =
          std::make_unique<protocol::channel_core>(static_cast<std::uint16_t>(i + 1), *this, f, o);
    }
    connect();
    while (!in_.exhausted()) {
      const auto op = static_cast<cs::op>(in_.u8() % cs::op_count);
      TRACE("op %d\n", op);
      step(op);
      check_all();
    }
    TRACE("end of script: the broker %s\n", conforming_ ? "conformed" : "did not conform");
    // The end: the transport goes; every life ends, every call and publish is settled.
    if (machine_) machine_->transport_closed("end of script");
    check_all();
    for (face& f : faces_) {
      CHECK(f.core->state() == channel_state::closed);
      CHECK(f.consumers.empty());
    }
  }

  // channel_wire
  // ------------------------------------------------------------------------------------
  void send_ack(std::uint16_t channel, const protocol::ack_action& a) override {
    face& f = faces_[channel - 1];
    CHECK(f.core->state() == channel_state::open);
    CHECK(!f.ending);
    TRACE("  wire ch%u: %s tag %llu multiple %d requeue %d\n", channel,
          a.what == protocol::ack_action::kind::ack    ? "ack"
          : a.what == protocol::ack_action::kind::nack ? "nack"
                                                       : "reject",
          static_cast<unsigned long long>(a.delivery_tag), a.multiple, a.requeue);
    if (f.index == 0) check_wire_decision(f, a);
    protocol::send_ack_action(*machine_, channel, a);
  }
  void send_cancel(std::uint16_t channel, std::string_view tag) override {
    CHECK(f_open_or_closing(channel));
    codec::basic_cancel m;
    m.consumer_tag = tag;
    m.nowait = true;
    CHECK(machine_->send(channel, m) == codec::errc::ok);
  }
  void open_channel(std::uint16_t channel) override { machine_->open_channel(channel); }
  void close_channel(std::uint16_t channel, std::uint16_t code, std::string_view text,
                     std::uint16_t class_id, std::uint16_t method_id) override {
    machine_->close_channel(channel, code, text, class_id, method_id);
  }

  // connection_handler ----------------------------------------------------------------------------
  void on_command(protocol::command& cmd) override {
    if (cmd.channel == 0) return;  // update-secret-ok: never asked for here
    CHECK(cmd.channel >= 1 && cmd.channel <= core_count);
    table_.on_command(cmd, now_);
  }
  void on_channel_closed(std::uint16_t channel, const protocol::close_reason& why) override {
    table_.on_channel_closed(channel, why);
  }
  void on_closed(const protocol::close_reason& why) override {
    TRACE("  connection closed: %u %s\n", why.reply_code, why.reply_text.c_str());
    // The client fails the connection only for a broker that broke the protocol.
    if (conforming_) CHECK(why.by_peer);
    for (face& f : faces_) f.broker = {};
    table_.on_connection_lost(why);
  }

  bool confirm_frame_reading() const { return reading_confirm_; }
  bool conforming() const { return conforming_; }
  protocol::time_point now() const { return now_; }

 private:
  bool f_open_or_closing(std::uint16_t channel) {
    const channel_state s = faces_[channel - 1].core->state();
    return s == channel_state::open || s == channel_state::closing;
  }

  void connect() {
    protocol::connection_config c;
    c.authentication = {protocol::sasl_plain("guest", "guest")};
    machine_ = std::make_unique<protocol::connection_machine>(std::move(c), *this);
    machine_->start(now_);
    protocol::test::scripted_peer p;
    p.start().tune(2047, 131072, 0).open_ok();
    feed(p.take());
    CHECK(machine_->is_open());
    table_ = protocol::channel_table(machine_->channel_max());
    for (face& f : faces_) {
      CHECK(table_.take(f.core->id()));
      table_.attach(*f.core);
    }
    wire_.clear();
    header_seen_ = false;
  }

  face& pick() { return faces_[in_.u8() % core_count]; }
  bool live() const { return machine_ && machine_->is_open(); }

  std::shared_ptr<fuzz_waiter> maybe_waiter(face& f, bool want) {
    if (!want) return nullptr;
    auto w = std::make_shared<fuzz_waiter>();
    w->core = f.index;
    waiters_.push_back(w);
    return w;
  }
  // Binds the waiter's life once the call is made (open() starts a new one).
  void bind(face& f, const std::shared_ptr<fuzz_waiter>& w) {
    if (w) w->life = f.core->life();
  }

  fuzz_consumer* new_consumer(face& f, std::string tag, bool no_ack) {
    auto c = std::make_unique<fuzz_consumer>();
    c->core = f.index;
    c->tag = std::move(tag);
    c->no_ack = no_ack;
    fuzz_consumer* raw = c.get();
    f.consumers.push_back(raw);
    pending_consumer_ = std::move(c);
    return raw;
  }

  void step(cs::op op) {
    switch (op) {
      case cs::open: {
        face& f = pick();
        // Always a waiter, as the faces do: an expectation without one still counts as a call
        // waiting (calls_waiting), which the model could not tell apart from an answered one.
        in_.u8();
        if (!live() || f.core->state() != channel_state::closed) return;
        auto w = maybe_waiter(f, true);
        CHECK(f.core->open(w));
        f.face_closed = false;
        bind(f, w);
        f.tags.clear();
        f.blind = false;
        return;
      }
      case cs::close: {
        face& f = pick();
        const bool want = in_.flag();
        const std::uint16_t code = in_.u16();
        if (!live() || f.core->state() == channel_state::closed) return;
        const bool was_open = f.core->is_open();
        auto w = maybe_waiter(f, want);
        CHECK(f.core->close(code, "fuzz", w));
        f.face_closed = true;
        bind(f, w);
        // close() flushed every held decision first.
        if (was_open) check_all_settled(f);
        return;
      }
      case cs::consume: {
        face& f = pick();
        const std::uint8_t tag = in_.u8();
        const bool no_ack = in_.flag();
        const bool nowait = in_.flag();
        if (!live() || !f.core->is_open()) return;
        // A server-named consume cannot be nowait (the face would not know the tag).
        const bool named = tag % cs::tag_count == 0;
        const std::string name = named ? "" : tag_name(tag);
        codec::basic_consume m;
        m.queue = "q";
        m.consumer_tag = name;
        m.no_ack = no_ack;
        m.nowait = nowait && !named;
        CHECK(machine_->send(f.core->id(), m) == codec::errc::ok);
        new_consumer(f, name, no_ack);
        auto w = maybe_waiter(f, !m.nowait);
        f.core->consume_sent(std::move(pending_consumer_), w);
        bind(f, w);
        return;
      }
      case cs::cancel: {
        face& f = pick();
        const std::string tag = tag_name(in_.u8());
        const std::uint8_t how = in_.u8() % 3;
        if (!live() || !f.core->is_open()) return;
        if (how == 2) {
          f.core->cancel_now(tag);
          return;
        }
        codec::basic_cancel m;
        m.consumer_tag = tag;
        m.nowait = how == 0;
        CHECK(machine_->send(f.core->id(), m) == codec::errc::ok);
        auto w = maybe_waiter(f, how == 1);
        f.core->cancel_sent(tag, w);
        bind(f, w);
        return;
      }
      case cs::get: {
        face& f = pick();
        const bool no_ack = in_.flag();
        if (!live() || !f.core->is_open()) return;
        f.core->flush_acks();
        codec::basic_get m;
        m.queue = "q";
        m.no_ack = no_ack;
        CHECK(machine_->send(f.core->id(), m) == codec::errc::ok);
        auto w = maybe_waiter(f, true);
        w->get_of = &f;
        w->get_no_ack = no_ack;
        f.core->get_sent(no_ack, w);
        bind(f, w);
        return;
      }
      case cs::recover: {
        face& f = pick();
        const bool async = in_.flag();
        if (!live() || !f.core->is_open()) return;
        f.core->flush_acks();
        check_all_settled(f);
        if (async) {
          CHECK(machine_->send(f.core->id(), codec::basic_recover_async{true}) == codec::errc::ok);
        } else {
          CHECK(machine_->send(f.core->id(), codec::basic_recover{true}) == codec::errc::ok);
        }
        auto w = maybe_waiter(f, !async);
        f.core->recover_sent(w);
        bind(f, w);
        // The broker takes back every undecided delivery: nothing is owed any more.
        for (auto& [tag, t] : f.tags) t.owed = false;
        return;
      }
      case cs::qos: {
        face& f = pick();
        protocol::qos_settings q;
        q.prefetch_count = in_.u8();
        q.global = in_.flag();
        if (!live() || !f.core->is_open()) return;
        CHECK(machine_->send(f.core->id(), codec::basic_qos{0, q.prefetch_count, q.global}) ==
              codec::errc::ok);
        auto w = maybe_waiter(f, true);
        f.core->qos_sent(q, w);
        bind(f, w);
        return;
      }
      case cs::confirm_select: {
        face& f = pick();
        protocol::confirm_tracker_options o;
        o.window = in_.u8();
        o.timeout = std::chrono::milliseconds(in_.u16());
        const bool nowait = in_.flag();
        // The face selects once per life (engine/async's start_confirm_select does the same).
        if (!live() || !f.core->is_open() || f.core->confirms() != nullptr) return;
        f.lock_publish();
        CHECK(machine_->send(f.core->id(), codec::confirm_select{nowait}) == codec::errc::ok);
        auto w = maybe_waiter(f, !nowait);
        f.core->confirm_select_sent(o, w);
        ++f.epoch;
        f.unlock_publish();
        bind(f, w);
        return;
      }
      case cs::tx_select: {
        face& f = pick();
        if (!live() || !f.core->is_open()) return;
        CHECK(machine_->send(f.core->id(), codec::tx_select{}) == codec::errc::ok);
        auto w = maybe_waiter(f, true);
        f.core->tx_select_sent(w);
        bind(f, w);
        return;
      }
      case cs::flow: {
        face& f = pick();
        const bool active = in_.flag();
        if (!live() || !f.core->is_open()) return;
        CHECK(machine_->send(f.core->id(), codec::channel_flow{active}) == codec::errc::ok);
        auto w = maybe_waiter(f, true);
        f.core->flow_sent(w);
        bind(f, w);
        return;
      }
      case cs::publish: {
        face& f = pick();
        const bool mandatory = in_.flag();
        const int route = in_.u8() % cs::route_count;
        if (!live()) return;
        f.lock_publish();
        if (f.core->can_publish() == protocol::channel_core::publish_gate::ok) {
          codec::basic_publish m;
          m.exchange = exchanges[route];
          m.routing_key = routing_keys[route];
          m.mandatory = mandatory;
          if (protocol::confirm_tracker* t = f.core->confirms()) {
            const std::uint64_t token = f.next_token++;
            CHECK(t->on_publish(token, now_, mandatory, m.exchange, m.routing_key) != 0);
            f.publishes[{f.epoch, token}] = {};
          }
          CHECK(machine_->send_publish(f.core->id(), m, {}, "body") == codec::errc::ok);
        }
        f.unlock_publish();
        return;
      }
      case cs::decide: {
        face& f = pick();
        const std::uint8_t which = in_.u8();
        const std::uint8_t how = in_.u8();
        std::vector<const handed*> mine;
        for (const handed& h : handed_) {
          if (h.core == f.index) mine.push_back(&h);
        }
        if (mine.empty()) return;
        const handed h = *mine[mine.size() - 1 - which % mine.size()];
        decide(f, h.life, h.tag, how);
        return;
      }
      case cs::decide_tag: {
        face& f = pick();
        const std::uint8_t back = in_.u8() % 3;
        const std::uint64_t tag = in_.u8();
        const std::uint8_t how = in_.u8();
        decide(f, f.core->life() - std::min<std::uint32_t>(back, f.core->life()), tag, how);
        return;
      }
      case cs::abandon: {
        const std::uint8_t which = in_.u8();
        std::vector<fuzz_waiter*> pending;
        for (auto& w : waiters_) {
          if (w->calls == 0 && !w->abandoned) pending.push_back(w.get());
        }
        if (pending.empty()) return;
        fuzz_waiter* w = pending[pending.size() - 1 - which % pending.size()];
        face& f = faces_[w->core];
        // Only a call of the current life can still be waiting.
        CHECK(f.core->abandon(w));
        w->abandoned = true;
        return;
      }
      case cs::flush_acks: {
        face& f = pick();
        if (!live()) return;
        f.core->flush_acks();
        check_all_settled(f);
        return;
      }
      case cs::tick: {
        now_ += std::chrono::milliseconds(in_.u16());
        for (face& f : faces_) {
          if (now_ >= f.core->next_deadline()) f.core->on_timer(now_);
          CHECK(f.core->next_deadline() > now_);
        }
        if (machine_) machine_->on_timer(now_);
        return;
      }
      case cs::peer_method:
        conforming_ = false;
        peer_method(pick());
        return;
      case cs::peer_raw: {
        conforming_ = false;
        face& f = pick();
        const std::uint16_t class_id = in_.u16();
        const std::uint16_t method_id = in_.u16();
        const std::string_view args = in_.bytes(in_.u8());
        std::string payload;
        codec::writer w(payload);
        w.u16(class_id);
        w.u16(method_id);
        w.bytes(args);
        w.finish();
        protocol::test::scripted_peer p;
        p.frame(codec::frame_method, f.core->id(), payload);
        f.blind = true;
        if (codec::method_has_content(class_id, method_id)) {
          const std::string body(in_.u8(), 'r');
          p.header(f.core->id(), body.size());
          if (!body.empty()) p.body(f.core->id(), body);
        }
        reading_confirm_ = true;
        feed(p.take());
        reading_confirm_ = false;
        return;
      }
      case cs::peer_frame: {
        conforming_ = false;
        const std::uint8_t type = in_.u8();
        const std::uint16_t channel = in_.u8();
        const std::string_view payload = in_.bytes(in_.u16());
        protocol::test::scripted_peer p;
        p.frame(type, channel, payload);
        for (face& f : faces_) f.blind = true;
        reading_confirm_ = true;
        feed(p.take());
        reading_confirm_ = false;
        return;
      }
      case cs::peer_connection_close: {
        protocol::test::scripted_peer p;
        p.connection_close(in_.u16(), "fuzz");
        feed(p.take());
        return;
      }
      case cs::connection_lost:
        if (machine_) machine_->transport_closed("fuzz");
        return;
      case cs::reconnect:
        if (machine_ && machine_->state() != protocol::connection_state::closed) return;
        for (face& f : faces_) CHECK(f.core->state() == channel_state::closed);
        connect();
        return;
      case cs::call: {
        face& f = pick();
        const int what = in_.u8() % 3;
        if (!live() || !f.core->is_open()) return;
        // As a face calls: the decisions held go first, then the method, then the expectation.
        f.core->flush_acks();
        check_all_settled(f);
        std::uint32_t reply = 0;
        if (what == 0) {
          codec::queue_declare m;
          m.queue = "q";
          CHECK(machine_->send(f.core->id(), m) == codec::errc::ok);
          reply = codec::queue_declare_ok::id;
        } else if (what == 1) {
          codec::exchange_declare m;
          m.exchange = "ex";
          m.type = "direct";
          CHECK(machine_->send(f.core->id(), m) == codec::errc::ok);
          reply = codec::exchange_declare_ok::id;
        } else {
          CHECK(machine_->send(f.core->id(), codec::tx_commit{}) == codec::errc::ok);
          reply = codec::tx_commit_ok::id;
        }
        auto w = maybe_waiter(f, true);
        f.core->expect(reply, w);
        bind(f, w);
        return;
      }
      case cs::broker_answer: {
        face& f = pick();  // (arguments are read in script order, not in one call)
        broker_answer(f, in_.flag());
        return;
      }
      case cs::broker_read: {
        face& f = pick();
        broker_read(f.broker, in_.u8());
        return;
      }
      case cs::broker_deliver: {
        face& f = pick();
        const std::uint8_t which = in_.u8();
        const std::string body(in_.u8(), 'm');
        broker_channel& b = f.broker;
        if (b.st != broker_channel::state::open || b.consumers.empty()) return;
        codec::basic_deliver m;
        m.consumer_tag = b.consumers[which % b.consumers.size()];
        m.delivery_tag = ++b.delivery_tag;
        m.exchange = "ex";
        m.routing_key = "rk";
        protocol::test::scripted_peer p;
        p.method(f.core->id(), m).header(f.core->id(), body.size());
        if (!body.empty()) p.body(f.core->id(), body);
        note_tag(f, m.delivery_tag);
        feed(p.take());
        return;
      }
      case cs::broker_confirm: {
        face& f = pick();
        const std::uint8_t how = in_.u8();
        const std::uint8_t span = in_.u8();
        broker_channel& b = f.broker;
        if (b.st != broker_channel::state::open || !b.confirm || b.published == b.confirmed) return;
        const bool multiple = (how & 2) != 0;
        const std::uint64_t tag =
            multiple ? b.confirmed + 1 + span % (b.published - b.confirmed) : b.confirmed + 1;
        b.confirmed = tag;
        protocol::test::scripted_peer p;
        if (how & 1) {
          codec::basic_nack m;
          m.delivery_tag = tag;
          m.multiple = multiple;
          p.method(f.core->id(), m);
        } else {
          p.method(f.core->id(), codec::basic_ack{tag, multiple});
        }
        reading_confirm_ = true;
        feed(p.take());
        reading_confirm_ = false;
        return;
      }
      case cs::broker_close: {
        face& f = pick();
        const std::uint16_t code = in_.u16();
        broker_channel& b = f.broker;
        if (b.st != broker_channel::state::open || !b.open_ok_sent) return;
        // RabbitMQ closing a channel ignores what follows but a crossing channel.close, which it
        // answers with close-ok.
        std::erase_if(b.calls, [](const broker_channel::call& c) {
          return c.request != codec::channel_close::id;
        });
        b.st = broker_channel::state::closing;
        b.consumers.clear();
        b.confirm = false;
        protocol::test::scripted_peer p;
        p.channel_close(f.core->id(), code, "closed by the broker (fuzz)");
        feed(p.take());
        return;
      }
      case cs::broker_cancel: {
        face& f = pick();
        const std::uint8_t which = in_.u8();
        broker_channel& b = f.broker;
        if (b.st != broker_channel::state::open || b.consumers.empty()) return;
        const std::string tag = b.consumers[which % b.consumers.size()];
        b.consumers.erase(b.consumers.begin() + which % b.consumers.size());
        protocol::test::scripted_peer p;
        p.method(f.core->id(), codec::basic_cancel{tag, true});
        feed(p.take());
        return;
      }
      case cs::broker_flow: {
        face& f = pick();
        const bool active = in_.flag();
        if (f.broker.st != broker_channel::state::open || !f.broker.open_ok_sent) return;
        protocol::test::scripted_peer p;
        p.method(f.core->id(), codec::channel_flow{active});
        feed(p.take());
        return;
      }
      case cs::op_count:
        return;
    }
  }

  // The broker reads up to n of the methods the client wrote on the channel (0: all of them).
  void broker_read(broker_channel& b, std::size_t n) {
    if (n == 0) n = b.in_flight.size();
    for (; n > 0 && !b.in_flight.empty(); --n) {
      const std::string payload = std::move(b.in_flight.front());
      b.in_flight.pop_front();
      std::deque<std::string> later;
      later.swap(b.in_flight);  // broker_receives may reset `b`; what is still in flight stays
      codec::dispatch_method(payload, [&](const auto& m) { broker_receives(b, m); });
      later.swap(b.in_flight);
    }
  }

  // A method the client wrote on a channel, as the conforming broker takes it.
  template <class M>
  void broker_receives(broker_channel& b, const M& m) {
    using state = broker_channel::state;
    constexpr std::uint32_t id = M::id;
    TRACE("  broker receives %s\n", std::string(M::name).c_str());
    if constexpr (id == codec::channel_open::id) {
      b = {};
      b.st = state::open;
      b.calls.push_back({id});
      return;
    }
    if constexpr (id == codec::channel_close_ok::id) {
      // The client answered the broker's close.
      if (b.st == state::closing) b.st = state::closed;
      return;
    }
    if constexpr (id == codec::channel_close::id) {
      if (b.st == state::open) {
        b.st = state::closed;
        b.consumers.clear();
        b.confirm = false;
        b.calls.push_back({id});
      } else if (b.st == state::closing) {
        b.calls.push_back({id});  // crossing closes: RabbitMQ answers both
      }
      return;
    }
    if (b.st != state::open) return;  // closing: ignored; closed: never sent by a face
    if constexpr (id == codec::basic_consume::id) {
      std::string tag(m.consumer_tag);
      if (m.nowait) {
        b.consumers.push_back(std::move(tag));
      } else {
        b.calls.push_back({id, std::move(tag)});
      }
    } else if constexpr (id == codec::basic_cancel::id) {
      if (m.nowait) {
        std::erase(b.consumers, std::string(m.consumer_tag));
      } else {
        b.calls.push_back({id, std::string(m.consumer_tag)});
      }
    } else if constexpr (id == codec::confirm_select::id) {
      if (!b.confirm) {
        b.confirm = true;
        b.published = b.confirmed = 0;
      }
      if (!m.nowait) b.calls.push_back({id});
    } else if constexpr (id == codec::channel_flow::id) {
      b.calls.push_back({id, {}, m.active});
    } else if constexpr (id == codec::basic_publish::id) {
      if (b.confirm) ++b.published;
    } else if constexpr (id == codec::basic_get::id || id == codec::basic_recover::id ||
                         id == codec::basic_qos::id || id == codec::tx_select::id ||
                         id == codec::queue_declare::id || id == codec::exchange_declare::id ||
                         id == codec::tx_commit::id) {
      b.calls.push_back({id});
    }
  }

  // The reply to the oldest call the broker has not answered.
  void broker_answer(face& f, bool get_ok) {
    broker_channel& b = f.broker;
    // Nothing left to answer: the broker reads what the client wrote first.
    if (b.calls.empty()) broker_read(b, 0);
    TRACE("  broker answers ch%u (%zu calls waiting)\n", f.core->id(), b.calls.size());
    if (b.calls.empty()) return;
    broker_channel::call c = std::move(b.calls.front());
    b.calls.pop_front();
    const std::uint16_t ch = f.core->id();
    protocol::test::scripted_peer p;
    switch (c.request) {
      case codec::channel_open::id:
        b.open_ok_sent = true;
        p.channel_open_ok(ch);
        break;
      case codec::channel_close::id: {
        std::deque<std::string> in_flight = std::move(b.in_flight);
        b = {};
        b.in_flight = std::move(in_flight);
        p.channel_close_ok(ch);
        break;
      }
      case codec::basic_consume::id: {
        std::string tag = c.tag.empty() ? "amq.ctag-b" + std::to_string(++b.named) : c.tag;
        p.method(ch, codec::basic_consume_ok{tag});
        b.consumers.push_back(std::move(tag));
        break;
      }
      case codec::basic_cancel::id:
        std::erase(b.consumers, c.tag);
        p.method(ch, codec::basic_cancel_ok{c.tag});
        break;
      case codec::basic_get::id:
        if (get_ok) {
          codec::basic_get_ok m;
          m.delivery_tag = ++b.delivery_tag;
          m.exchange = "ex";
          m.routing_key = "rk";
          p.method(ch, m).header(ch, 3).body(ch, "got");
          note_tag(f, m.delivery_tag);
        } else {
          p.method(ch, codec::basic_get_empty{});
        }
        break;
      case codec::basic_recover::id:
        p.method(ch, codec::basic_recover_ok{});
        break;
      case codec::basic_qos::id:
        p.method(ch, codec::basic_qos_ok{});
        break;
      case codec::confirm_select::id:
        p.method(ch, codec::confirm_select_ok{});
        break;
      case codec::tx_select::id:
        p.method(ch, codec::tx_select_ok{});
        break;
      case codec::channel_flow::id:
        p.method(ch, codec::channel_flow_ok{c.active});
        break;
      case codec::queue_declare::id:
        p.method(ch, codec::queue_declare_ok{"q", 0, 0});
        break;
      case codec::exchange_declare::id:
        p.method(ch, codec::exchange_declare_ok{});
        break;
      case codec::tx_commit::id:
        p.method(ch, codec::tx_commit_ok{});
        break;
      default:
        violated("the broker model holds a call it cannot answer", __LINE__);
    }
    CHECK(p.encode_status() == codec::errc::ok);
    feed(p.take());
  }

  void decide(face& f, std::uint32_t life, std::uint64_t tag, std::uint8_t how) {
    if (!machine_) return;
    const bool multiple = (how & cs::how_multiple) != 0;
    const bool requeue = (how & cs::how_requeue) != 0;
    const int kind = how & 3;
    const bool allowed = life == f.core->life() && f.core->is_open();
    TRACE("  decide ch%u life %u tag %llu how %d\n", f.core->id(), life,
          static_cast<unsigned long long>(tag), how);
    bool done = false;
    protocol::ack_action a{};
    const std::size_t before = machine_->output().size();
    if (kind == cs::how_nack) {
      done = f.core->nack(life, tag, multiple, requeue, now_);
      a = {protocol::ack_action::kind::nack, tag, multiple, requeue};
    } else if (kind == cs::how_reject) {
      done = f.core->reject(life, tag, requeue, now_);
      a = {protocol::ack_action::kind::reject, tag, false, requeue};
    } else {
      done = f.core->ack(life, tag, multiple, now_);
      a = {protocol::ack_action::kind::ack, tag, multiple, false};
    }
    // A decision on an ended life, or on a channel that is not open, is refused and sends nothing.
    if (!allowed) CHECK(!done);
    if (!done) CHECK(machine_->output().size() == before);
    if (!done || f.index != 0) return;
    // The coalescing core accepted it: the model records what the face decided.
    auto record = [&](tag_state& t) {
      t.decided = true;
      t.decision = a;
      t.decision.multiple = false;
    };
    if (!a.multiple) {
      auto it = f.tags.find(tag);
      if (it == f.tags.end()) {
        // The coalescer accepted a tag that never arrived: only a delivery the model missed.
        CHECK(f.blind);
        return;
      }
      if (it->second.duplicate) return;
      CHECK(it->second.owed && !it->second.decided);
      record(it->second);
      return;
    }
    for (auto& [t, s] : f.tags) {
      if (tag != 0 && t > tag) break;
      if (s.owed && !s.decided && !s.duplicate) record(s);
    }
  }

  // A decision frame from the coalescing core, judged against the model.
  void check_wire_decision(face& f, const protocol::ack_action& a) {
    if (!a.multiple) {
      auto it = f.tags.find(a.delivery_tag);
      if (it == f.tags.end()) {
        // A delivery the model did not see arrive: only the core's own give-back.
        CHECK(f.blind);
        CHECK(a.what == protocol::ack_action::kind::reject && a.requeue);
        return;
      }
      tag_state& t = it->second;
      if (t.duplicate) return;
      CHECK(!t.settled);
      if (t.decided) {
        CHECK(a.what == t.decision.what && a.requeue == t.decision.requeue);
      } else {
        // The core's own: a delivery nobody consumes (or a late get-ok) goes back.
        CHECK(a.what == protocol::ack_action::kind::reject && a.requeue);
      }
      t.settled = true;
      return;
    }
    CHECK(a.what != protocol::ack_action::kind::reject);
    for (auto& [tag, t] : f.tags) {
      if (a.delivery_tag != 0 && tag > a.delivery_tag) break;
      if (t.duplicate || t.settled || !t.owed) continue;
      // A multiple frame settles every delivery it spans: each must have been decided its way.
      CHECK(t.decided);
      CHECK(t.decision.what == a.what && t.decision.requeue == a.requeue);
      t.settled = true;
    }
  }

  // After a flush: every decision the face made went to the wire.
  void check_all_settled(face& f) {
    if (f.index != 0) return;
    for (auto& [tag, t] : f.tags) {
      if (t.decided && t.owed && !t.duplicate) CHECK(t.settled);
    }
  }

  void peer_method(face& f) {
    const std::uint16_t ch = f.core->id();
    protocol::test::scripted_peer p;
    const std::uint8_t what = in_.u8() % cs::peer_what_count;
    switch (static_cast<cs::peer_what>(what)) {
      case cs::open_ok:
        p.channel_open_ok(ch);
        break;
      case cs::close_ok:
        p.channel_close_ok(ch);
        break;
      case cs::channel_close:
        p.channel_close(ch, in_.u16(), "fuzz");
        break;
      case cs::deliver: {
        codec::basic_deliver m;
        const std::string tag = tag_name(in_.u8());
        m.consumer_tag = tag;
        m.delivery_tag = in_.u16();
        m.exchange = "ex";
        m.routing_key = "rk";
        const std::string body(in_.u8(), 'd');
        p.method(ch, m).header(ch, body.size());
        if (!body.empty()) p.body(ch, body);
        note_tag(f, m.delivery_tag);
        break;
      }
      case cs::get_ok: {
        codec::basic_get_ok m;
        m.delivery_tag = in_.u16();
        m.exchange = "ex";
        m.routing_key = "rk";
        p.method(ch, m).header(ch, 3).body(ch, "got");
        // The coalescing core's model: a get-ok owes a decision only to a waiting call's face,
        // which this fuzzer does not decide on; the core gives back a late one itself.
        note_tag(f, m.delivery_tag);
        break;
      }
      case cs::get_empty:
        p.method(ch, codec::basic_get_empty{});
        break;
      case cs::consume_ok: {
        const std::string tag = tag_name(in_.u8());
        p.method(ch, codec::basic_consume_ok{tag});
        break;
      }
      case cs::cancel_ok: {
        const std::string tag = tag_name(in_.u8());
        p.method(ch, codec::basic_cancel_ok{tag});
        break;
      }
      case cs::cancel_from_peer: {
        const std::string tag = tag_name(in_.u8());
        p.method(ch, codec::basic_cancel{tag, true});
        break;
      }
      case cs::confirm_ack: {
        const std::uint16_t tag = in_.u16();
        p.method(ch, codec::basic_ack{tag, in_.flag()});
        reading_confirm_ = true;
        break;
      }
      case cs::confirm_nack: {
        const std::uint16_t tag = in_.u16();
        codec::basic_nack m;
        m.delivery_tag = tag;
        m.multiple = in_.flag();
        p.method(ch, m);
        reading_confirm_ = true;
        break;
      }
      case cs::basic_return: {
        const int route = in_.u8() % cs::route_count;
        codec::basic_return m{312, "NO_ROUTE", exchanges[route], routing_keys[route]};
        p.method(ch, m).header(ch, 4).body(ch, "body");
        break;
      }
      case cs::flow_from_peer:
        p.method(ch, codec::channel_flow{in_.flag()});
        break;
      case cs::qos_ok:
        p.method(ch, codec::basic_qos_ok{});
        break;
      case cs::recover_ok:
        p.method(ch, codec::basic_recover_ok{});
        break;
      case cs::select_ok:
        p.method(ch, codec::confirm_select_ok{});
        break;
      case cs::tx_select_ok:
        p.method(ch, codec::tx_select_ok{});
        break;
      case cs::flow_ok:
        p.method(ch, codec::channel_flow_ok{in_.flag()});
        break;
      case cs::queue_declare_ok:
        p.method(ch, codec::queue_declare_ok{"q", 0, 0});
        break;
      case cs::exchange_declare_ok:
        p.method(ch, codec::exchange_declare_ok{});
        break;
      case cs::tx_commit_ok:
        p.method(ch, codec::tx_commit_ok{});
        break;
      case cs::peer_what_count:
        break;
    }
    CHECK(p.encode_status() == codec::errc::ok);
    feed(p.take());
    reading_confirm_ = false;
  }

 public:
  // A delivery tag about to reach the coalescing core (owed nothing until the face is handed it).
  // A tag that does not increase is one no broker sends: the model leaves it unjudged.
  void note_tag(face& f, std::uint64_t tag) {
    if (f.index != 0) return;
    // (Tags start at 1: the coalescer ignores a delivery-tag 0, and a jump past max_tag_jump
    // while something is owed, which the model leaves unjudged whatever is owed.)
    const std::uint64_t last = f.tags.empty() ? 0 : f.tags.rbegin()->first;
    const bool increases =
        tag > last && (last == 0 || tag - last <= protocol::ack_coalescer::max_tag_jump);
    tag_state& t = f.tags[tag];
    if (!increases) t.duplicate = true;
  }
  // The face was handed `tag`; `owed`: it must decide it.
  void owe(face& f, std::uint64_t tag, bool owed) {
    if (f.index != 0) return;
    auto it = f.tags.find(tag);
    if (it == f.tags.end()) {
      CHECK(f.blind);
      return;
    }
    if (!it->second.duplicate) it->second.owed = owed;
  }
  void hand(face& f, std::uint64_t tag) { handed_.push_back({f.index, f.core->life(), tag}); }

 private:
  void feed(const std::string& bytes) {
    if (!machine_) return;
    rx_ref buffer = rx_ref::allocate(bytes.size());
    if (!bytes.empty()) std::memcpy(buffer->data(), bytes.data(), bytes.size());
    const std::size_t used =
        machine_->feed(std::string_view(buffer->data(), bytes.size()), buffer, now_);
    CHECK(used <= bytes.size());
  }

  // The checks every step ends with.
  void check_all() {
    write_output();
    for (face& f : faces_) {
      protocol::channel_core& c = *f.core;
      CHECK(!f.ending);
      CHECK(f.holding == 0);
      // Calls waiting: the on_waiting sum, the core's count, the model's.
      std::size_t model_waiting = 0;
      for (auto& w : waiters_) {
        if (w->core != f.index) continue;
        const bool life_over =
            w->life < c.life() || (w->life == c.life() && c.state() == channel_state::closed);
        if (life_over && !w->abandoned) CHECK(w->calls == 1);
        if (w->calls == 0 && !w->abandoned) ++model_waiting;
      }
      CHECK(static_cast<std::size_t>(f.waiting) == c.calls_waiting());
      CHECK(c.calls_waiting() == model_waiting);
      // Consumers: those the core holds are those handed and not returned (pending ones aside).
      CHECK(c.consumers().size() <= f.consumers.size());
      if (c.state() == channel_state::closed) {
        CHECK(f.consumers.empty());
        CHECK(c.consumers().empty());
        CHECK(c.confirms() == nullptr);
      }
      // Publishes: every one of an ended epoch completed; the tracker counts the others.
      std::size_t open_publishes = 0;
      for (const auto& [key, p] : f.publishes) {
        if (!p.completed) {
          CHECK(key.first == f.epoch && c.confirms() != nullptr);
          ++open_publishes;
        }
      }
      if (const protocol::confirm_tracker* t = c.confirms()) {
        CHECK(t->outstanding() == open_publishes);
      }
      std::erase_if(f.publishes, [](const auto& p) { return p.second.completed; });
    }
    // Forget what is settled, so long scripts stay cheap.
    std::erase_if(waiters_, [](const auto& w) { return w->calls != 0 || w->abandoned; });
    if (handed_.size() > 64) handed_.erase(handed_.begin(), handed_.begin() + 32);
  }

  // Everything the client queued is written and decoded back.
  void write_output() {
    if (!machine_) return;
    wire_ += machine_->output();
    machine_->consume_output(machine_->output().size(), now_);
    std::string_view w(wire_);
    if (!header_seen_) {
      if (w.size() < 8) return;
      CHECK(w.substr(0, 8) == protocol::test::amqp_0_9_1_header);
      header_seen_ = true;
      w.remove_prefix(8);
    }
    while (!w.empty()) {
      codec::frame_view f;
      std::size_t consumed = 0;
      const codec::errc e = codec::decode_frame(w, machine_->frame_max(), f, consumed);
      CHECK(e == codec::errc::ok);  // the machine queues whole frames only
      if (f.type == codec::frame_method) {
        CHECK(codec::dispatch_method(f.payload, [](const auto&) {}) == codec::errc::ok);
        if (f.channel >= 1 && f.channel <= core_count) {
          faces_[f.channel - 1].broker.in_flight.emplace_back(f.payload);
        }
      }
      w.remove_prefix(consumed);
    }
    wire_.clear();
  }

  fuzz::fuzz_input& in_;
  protocol::time_point now_ = protocol::time_point{} + 1h;
  std::unique_ptr<protocol::connection_machine> machine_;
  protocol::channel_table table_;
  face faces_[core_count];
  std::vector<std::shared_ptr<fuzz_waiter>> waiters_;
  std::vector<handed> handed_;
  std::unique_ptr<fuzz_consumer> pending_consumer_;
  std::string wire_;
  bool header_seen_ = false;
  bool reading_confirm_ = false;
  bool conforming_ = true;  // the broker's side used only conforming operations
};

bool face::conforming() const {
  return owner->conforming();
}

void face::on_delivery(protocol::consumer& c, protocol::command& cmd) {
  TRACE("  delivery ch%u tag %llu consumer %s\n", core->id(),
        static_cast<unsigned long long>(cmd.deliver.delivery_tag), c.tag.c_str());
  CHECK(core->state() == channel_state::open);
  CHECK(!ending);
  CHECK(cmd.has_deliver);
  CHECK(cmd.body.size() == cmd.header.body_size);
  auto* fc = static_cast<fuzz_consumer*>(&c);
  CHECK(fc->core == index && !fc->returned);
  // Owed a decision: the coalescer's rule (not no-ack, no basic.recover unanswered).
  owner->owe(*this, cmd.deliver.delivery_tag, !c.no_ack && core->recovers_pending() == 0);
  owner->hand(*this, cmd.deliver.delivery_tag);
}

void fuzz_waiter::on_reply(protocol::command& reply) {
  on_reply_checks(reply);
  if (get_of == nullptr || !reply.is<codec::basic_get_ok>()) return;
  // The message is the face's now: it decides it like a delivery (owed unless no-ack or a
  // basic.recover is unanswered, the core's rule).
  codec::basic_get_ok m;
  if (reply.decode(m) != codec::errc::ok) return;
  face& f = *get_of;
  f.owner->owe(f, m.delivery_tag, !get_no_ack && f.core->recovers_pending() == 0);
  f.owner->hand(f, m.delivery_tag);
}

void face::on_confirm(const protocol::confirm_event& e) {
  TRACE("  confirm ch%u seq %llu outcome %d returned %d\n", core->id(),
        static_cast<unsigned long long>(e.sequence), static_cast<int>(e.outcome), e.returned);
  CHECK(holding > 0);
  auto it = publishes.find({epoch, e.token});
  CHECK(it != publishes.end());
  CHECK(!it->second.completed);
  it->second.completed = true;
  it->second.outcome = e.outcome;
  switch (e.outcome) {
    case protocol::confirm_outcome::ack:
    case protocol::confirm_outcome::nack:
      // Only the broker's answer settles a publish that way.
      CHECK(owner->confirm_frame_reading());
      CHECK(!ending);
      break;
    case protocol::confirm_outcome::timeout:
      CHECK(!ending);
      break;
    case protocol::confirm_outcome::in_doubt:
      CHECK(ending && ending_cause == protocol::end_cause::connection_lost);
      break;
    case protocol::confirm_outcome::channel_closed:
      CHECK(ending && ending_cause != protocol::end_cause::connection_lost);
      break;
  }
}

void face::on_ended(protocol::end_cause cause, const protocol::close_reason& why) {
  TRACE("  ended ch%u life %u cause %d: %u %s\n", core->id(), core->life(), static_cast<int>(cause),
        why.reply_code, why.reply_text.c_str());
  CHECK(ending && cause == ending_cause);
  CHECK(core->state() == channel_state::closed);
  ending = false;
  ++lives_ended;
  CHECK(lives_ended == core->life());
  tags.clear();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::fuzz_input in(data, size);
  run r(in);
  r.go();
  return 0;
}
