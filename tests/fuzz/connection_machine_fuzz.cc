// Fuzzes protocol::connection_machine as the client: after a valid handshake prefix (or none, see
// connection_machine_script.h) the fuzzer's bytes are the broker's stream, cut into reads where the
// fuzzer says, interleaved with the client's own actions and a fake clock.
//
// Beyond "no crash, leak, hang or UB" (the sanitizers and libFuzzer judge those), every run checks:
//   - feed() consumes at most what it was given, and what it leaves is kept for the next read;
//   - on_closed comes at most once, every reason the client gives has an AMQP reply code the spec
//     names, and after it the handler hears nothing more;
//   - every octet the client writes is a protocol header then whole frames that decode with the
//     codec: methods known and decodable, connection methods on channel 0 only, headers
//     decodable, frames within the negotiated frame_max; after on_closed only the close handshake
//     (connection.close-ok) may follow;
//   - commands name a channel the client opened, in the state the machine reports, with a body
//     of the size its header announced; kept commands' views stay readable after the reads that
//     made them are gone (ASan sees a dangling view);
//   - with heartbeats on, on_timer after two silent intervals has closed the connection.
// A failed check aborts (a crash libFuzzer reports with the input).
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "codec/content.h"
#include "codec/frame.h"
#include "codec/methods.h"
#include "engine/protocol/connection_machine.h"
#include "tests/engine/protocol/scripted_peer.h"
#include "tests/fuzz/connection_machine_script.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using namespace warren;
using namespace std::chrono_literals;
namespace cs = fuzz::connection_script;

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "connection_machine_fuzz: invariant violated: %s\n", what);
  std::abort();
}
#define CHECK(cond)               \
  do {                            \
    if (!(cond)) violated(#cond); \
  } while (0)

constexpr std::uint16_t max_channel = 4;
constexpr std::string_view app_close_text = "closed by the application (fuzz)";

// WARREN_FUZZ_TRACE=1 in the environment: each step and event on stderr (to read a reproducer).
const bool tracing = std::getenv("WARREN_FUZZ_TRACE") != nullptr;
#define TRACE(...)                                  \
  do {                                              \
    if (tracing) std::fprintf(stderr, __VA_ARGS__); \
  } while (0)

// Reads every octet of `s`, so that ASan reports a view into freed memory.
std::uint32_t touch(std::string_view s) {
  std::uint32_t sum = 0;
  for (char c : s) sum = sum * 31 + static_cast<unsigned char>(c);
  return sum;
}

class run : public protocol::connection_handler {
 public:
  // `split`: every read is cut into up to 16 smaller reads (the same octets, in order).
  run(fuzz::fuzz_input& in, bool split) : in_(in), split_(split) {}

  // What the handler heard, and what the client wrote, each in order: the same for any cut of
  // reads (not interleaved: what is written is seen only between reads).
  const std::vector<std::string>& log() const { return log_; }
  const std::vector<std::string>& wrote() const { return wrote_; }

  void go() {
    const std::uint8_t config = in_.u8();
    static constexpr std::uint16_t heartbeats[] = {0, 1, 2, 60};
    static constexpr std::uint32_t frame_maxes[] = {4096, 131072, 0, 8192};
    static constexpr std::uint64_t body_limits[] = {0, 100, 4096, 1 << 20};
    protocol::connection_config c;
    c.authentication = {protocol::sasl_plain("guest", "guest")};
    c.heartbeat = heartbeats[config & 3];
    c.max_body_size = body_limit_ = body_limits[(config >> 5) & 3];
    if (config & cs::challenge) {
      c.on_challenge = [](std::string_view ch) { return std::string(ch.substr(0, 64)); };
    }
    machine_ = std::make_unique<protocol::connection_machine>(std::move(c), *this);
    machine_->start(now_);
    if (!(config & cs::no_prefix)) {
      protocol::test::scripted_peer peer;
      peer.start().tune(2047, frame_maxes[(config >> 3) & 3], 60).open_ok();
      inbox_ = peer.take();
      deliver(inbox_.size());
      CHECK(machine_->is_open() || frame_maxes[(config >> 3) & 3] == 4096);
    }
    while (!in_.exhausted()) {
      const auto op = static_cast<cs::op>(in_.u8() % cs::op_count);
      TRACE("op %d\n", op);
      step(op);
      check_output();
    }
    deliver(inbox_.size());
    machine_->transport_closed("end of script");
    CHECK(closed_);
    write(machine_->output().size());
    drop_kept();
  }

 private:
  void step(cs::op op) {
    protocol::connection_machine& m = *machine_;
    switch (op) {
      case cs::peer_bytes:
        inbox_ += in_.bytes(in_.u8());
        return;
      case cs::peer_frame: {
        const std::uint8_t type = in_.u8();
        const std::uint8_t channel = in_.u8();
        const std::string_view payload = in_.bytes(in_.u16());
        protocol::test::scripted_peer p;
        p.frame(type, channel, payload);
        inbox_ += p.take();
        return;
      }
      case cs::deliver: {
        const std::size_t n = in_.u16();
        deliver(n == 0 ? inbox_.size() : std::min(n, inbox_.size()));
        return;
      }
      case cs::open_channel: {
        const std::uint16_t ch = in_.u8() % max_channel + 1;
        if (acting() && m.state_of(ch) == protocol::channel_state::closed) {
          m.open_channel(ch);
          opened_[ch] = true;
        }
        return;
      }
      case cs::close_channel: {
        const std::uint16_t ch = in_.u8() % max_channel + 1;
        const std::uint16_t code = in_.u16();
        if (acting()) m.close_channel(ch, code, "fuzz");
        return;
      }
      case cs::publish: {
        const std::uint16_t ch = in_.u8() % max_channel + 1;
        const std::string body(in_.u16(), 'b');
        codec::basic_publish p;
        p.exchange = "ex";
        p.routing_key = "rk";
        p.mandatory = in_.flag();
        codec::basic_properties props;
        props.content_type = "text/plain";
        props.flags |= codec::basic_properties::content_type_flag;
        if (acting() && m.state_of(ch) == protocol::channel_state::open) {
          CHECK(m.send_publish(ch, p, props, body) == codec::errc::ok);
        }
        return;
      }
      case cs::ack: {
        const std::uint16_t ch = in_.u8() % max_channel + 1;
        codec::basic_ack a;
        a.delivery_tag = in_.u8();
        a.multiple = in_.flag();
        if (acting() && m.state_of(ch) == protocol::channel_state::open) {
          CHECK(m.send(ch, a) == codec::errc::ok);
        }
        return;
      }
      case cs::tick: {
        now_ += std::chrono::milliseconds(in_.u16());
        m.on_timer(now_);
        if (m.heartbeat() != 0 &&
            now_ - m.last_received() >= 2 * std::chrono::seconds(m.heartbeat()))
          CHECK(closed_);
        return;
      }
      case cs::write: {
        const std::size_t n = in_.u16();
        write(n == 0 ? m.output().size() : std::min(n, m.output().size()));
        return;
      }
      case cs::close: {
        // The application's code, as given (py-amqp's default is 0).
        m.close(in_.u16(), app_close_text);
        return;
      }
      case cs::transport_closed:
        m.transport_closed("fuzz");
        CHECK(closed_);
        return;
      case cs::update_secret: {
        const std::string secret(in_.u8(), 's');
        if (acting()) m.update_secret(secret, "fuzz");
        return;
      }
      case cs::heartbeat_if_idle:
        m.send_heartbeat_if_idle(now_);
        return;
      case cs::drop_kept:
        drop_kept();
        return;
      case cs::op_count:
        return;
    }
  }

  // The client acts only on a connection that is open and not reported closed, as a face does.
  bool acting() const { return machine_->is_open() && !closed_; }

  // The first n octets of the inbox as one read, in a fresh buffer after what the last read left.
  void deliver(std::size_t n) {
    if (!split_ || n < 2) return read(n);
    const std::size_t piece = (n + 15) / 16;
    while (n > 0) {
      const std::size_t k = std::min(piece, n);
      read(k);
      n -= k;
    }
  }

  void read(std::size_t n) {
    const std::string all = tail_ + inbox_.substr(0, n);
    inbox_.erase(0, n);
    rx_ref buffer = rx_ref::allocate(all.size());
    if (!all.empty()) std::memcpy(buffer->data(), all.data(), all.size());
    const std::size_t used =
        machine_->feed(std::string_view(buffer->data(), all.size()), buffer, now_);
    CHECK(used <= all.size());
    tail_ = all.substr(used);
    check_output();
  }

  // The transport writes n octets: they are decoded as the broker would.
  void write(std::size_t n) {
    check_output();
    machine_->consume_output(n, now_);
    seen_ -= n;
    consumed_ += n;
  }

  // Decodes the output not seen yet (it may end in a partial frame, which waits for more).
  void check_output() {
    const std::string_view out = machine_->output();
    // The machine's output buffer only grows at its end until consume_output.
    CHECK(out.size() >= seen_);
    wire_ += out.substr(seen_);
    seen_ = out.size();
    parse_wire();
  }

  void parse_wire() {
    std::string_view w(wire_);
    if (!header_seen_) {
      if (w.size() < 8) return;
      CHECK(w.substr(0, 8) == protocol::test::amqp_0_9_1_header);
      header_seen_ = true;
      w.remove_prefix(8);
      wire_at_ += 8;
    }
    while (!w.empty()) {
      codec::frame_view f;
      std::size_t consumed = 0;
      const std::uint32_t limit = machine_->frame_max() != 0 ? machine_->frame_max() : 0xFFFFFFFFu;
      const codec::errc e = codec::decode_frame(w, limit, f, consumed);
      if (e == codec::errc::need_more) break;
      CHECK(e == codec::errc::ok);
      TRACE("  wrote type %u ch %u size %zu\n", f.type, f.channel, f.payload.size());
      check_frame(f, wire_at_ >= closed_at_);
      wrote_.push_back(std::to_string(f.type) + " " + std::to_string(f.channel) + " " +
                       std::string(f.payload));
      w.remove_prefix(consumed);
      wire_at_ += consumed;
    }
    wire_.erase(0, wire_.size() - w.size());
  }

  // `after_closed`: the frame was queued after on_closed.
  void check_frame(const codec::frame_view& f, bool after_closed) {
    if (after_closed) {
      // After on_closed only the close handshake: close-ok to a broker's close.
      CHECK(f.type == codec::frame_method && f.channel == 0);
      std::uint32_t id = 0;
      CHECK(f.payload.size() >= 4);
      id = codec::reader::load_u32(f.payload.data());
      CHECK(id == codec::connection_close_ok::id);
      CHECK(!close_ok_after_closed_++);
    }
    switch (f.type) {
      case codec::frame_method: {
        std::uint16_t class_id = 0;
        const codec::errc e = codec::dispatch_method(
            f.payload, [&](const auto& m) { class_id = std::decay_t<decltype(m)>::class_id; });
        CHECK(e == codec::errc::ok);
        CHECK((class_id == 10) == (f.channel == 0));
        if (f.channel != 0) CHECK(f.channel <= max_channel && opened_[f.channel]);
        return;
      }
      case codec::frame_header: {
        codec::content_header h;
        CHECK(codec::decode(f.payload, h) == codec::errc::ok);
        CHECK(f.channel != 0);
        return;
      }
      case codec::frame_body:
        CHECK(f.channel != 0);
        return;
      case codec::frame_heartbeat:
        return;
      default:
        violated("unknown frame type written");
    }
  }

  void drop_kept() {
    for (const protocol::command& c : kept_) sink_ += touch(c.args) + touch(c.body);
    kept_.clear();
  }

  // connection_handler ---------------------------------------------------------------------------
  void on_open() override {
    log_.push_back("open");
    CHECK(!closed_);
    CHECK(machine_->is_open());
  }
  void on_tuned() override {
    log_.push_back("tuned");
    CHECK(!closed_);
    CHECK(machine_->frame_max() >= codec::frame_min_size);
  }
  void on_command(protocol::command& cmd) override {
    CHECK(!closed_);
    TRACE("  command ch %u %u.%u body %zu\n", cmd.channel, cmd.class_id, cmd.method_id,
          cmd.body.size());
    sink_ += touch(cmd.args);
    log_.push_back("command " + std::to_string(cmd.channel) + " " + std::to_string(cmd.id()) + " " +
                   std::string(cmd.args) +
                   (cmd.has_content ? " body " + std::string(cmd.body) : ""));
    if (cmd.channel == 0) {
      CHECK(cmd.is<codec::connection_update_secret_ok>());
      return;
    }
    CHECK(cmd.channel <= max_channel && opened_[cmd.channel]);
    CHECK(codec::method_known(cmd.class_id, cmd.method_id));
    const protocol::channel_state s = machine_->state_of(cmd.channel);
    if (cmd.is<codec::channel_close_ok>()) {
      CHECK(s == protocol::channel_state::closed);
    } else {
      CHECK(s == protocol::channel_state::open);
    }
    CHECK(cmd.has_content == codec::method_has_content(cmd.class_id, cmd.method_id));
    if (cmd.has_content) {
      CHECK(cmd.body.size() == cmd.header.body_size);
      CHECK(cmd.header.body_size <= max_body_size());
      sink_ += touch(cmd.body);
    }
    if (kept_.size() < 8) kept_.push_back(cmd);
  }
  void on_channel_closed(std::uint16_t channel, const protocol::close_reason& why) override {
    log_.push_back("channel closed " + std::to_string(channel) + " " +
                   std::to_string(why.reply_code) + " " + why.reply_text);
    CHECK(!closed_);
    CHECK(channel != 0 && channel <= max_channel && opened_[channel]);
    CHECK(machine_->state_of(channel) == protocol::channel_state::closed);
  }
  void on_blocked(std::string_view reason) override {
    log_.push_back("blocked " + std::string(reason));
    CHECK(!closed_);
    sink_ += touch(reason);
  }
  void on_unblocked() override {
    log_.push_back("unblocked");
    CHECK(!closed_);
  }
  void on_closed(const protocol::close_reason& why) override {
    TRACE("  closed: %u %s\n", why.reply_code, why.reply_text.c_str());
    log_.push_back("closed " + std::to_string(why.reply_code) + " " + why.reply_text);
    CHECK(!closed_);
    closed_ = true;
    closed_at_ = consumed_ + machine_->output().size();
    // A reason the client gives itself is a code the spec names, with a text saying what (the
    // application's own close aside: its code is the application's).
    if (!why.by_peer && why.reply_text != app_close_text) {
      CHECK(!protocol::reply_name(why.reply_code).empty());
      CHECK(!why.reply_text.empty());
    }
  }

  std::uint64_t max_body_size() const { return body_limit_; }

  fuzz::fuzz_input& in_;
  const bool split_;
  std::vector<std::string> log_;
  std::vector<std::string> wrote_;
  std::unique_ptr<protocol::connection_machine> machine_;
  protocol::time_point now_ = protocol::time_point{} + 1h;
  std::string inbox_;                     // the peer's bytes not yet read
  std::string tail_;                      // what the last feed() left (a partial frame)
  std::string wire_;                      // client output written and not yet parsed into frames
  std::size_t seen_ = 0;                  // octets of output() already in wire_ (or parsed)
  std::uint64_t consumed_ = 0;            // octets written (consume_output) so far
  std::uint64_t wire_at_ = 0;             // the offset of wire_[0] in everything the client wrote
  std::uint64_t closed_at_ = UINT64_MAX;  // the offset of the first octet queued after on_closed
  bool header_seen_ = false;
  bool closed_ = false;
  int close_ok_after_closed_ = 0;
  bool opened_[max_channel + 1] = {};
  std::vector<protocol::command> kept_;
  std::uint64_t body_limit_ = 0;
  std::uint32_t sink_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // The script as it says, then with every read cut smaller: the machine must hear and write the
  // same (its one-pass delivery path and its frame-by-frame path agree, no state depends on where
  // a read ends).
  fuzz::fuzz_input in(data, size);
  run whole(in, false);
  whole.go();
  fuzz::fuzz_input again(data, size);
  run cut(again, true);
  cut.go();
  for (bool events : {true, false}) {
    const auto& a = events ? whole.log() : whole.wrote();
    const auto& b = events ? cut.log() : cut.wrote();
    if (a == b) continue;
    std::size_t i = 0;
    while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
    std::fprintf(stderr, "%s %zu differs:\n  whole reads: %s\n  cut reads:   %s\n",
                 events ? "event" : "frame written", i, i < a.size() ? a[i].c_str() : "(none)",
                 i < b.size() ? b[i].c_str() : "(none)");
    violated("the same stream cut into other reads gave other events");
  }
  return 0;
}
