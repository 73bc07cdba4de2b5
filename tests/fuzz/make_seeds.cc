// Writes the seed corpora of the state-machine fuzzers: each seed is a short script (see
// connection_machine_script.h, channel_core_script.h) of one meaningful conversation, the broker's
// frames built with the codec through the scripted peer.
//
//   bazel run //tests/fuzz:make_seeds -- "$PWD/tests/fuzz/corpus"
//       writes <dir>/connection_machine/seed_* and <dir>/channel_core/seed_* (other files, the
//       regression inputs the fuzzers found, are left alone);
//   make_seeds --check FILE...
//       (//tests/fuzz:seeds_test) fails unless every seed is among FILE... with the same octets,
//       so the committed corpus is what this program writes.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "codec/methods.h"
#include "tests/engine/protocol/scripted_peer.h"
#include "tests/fuzz/channel_core_script.h"
#include "tests/fuzz/connection_machine_script.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using namespace warren;
using fuzz::script_writer;
using protocol::test::scripted_peer;
namespace fs = std::filesystem;

// "<corpus>/<name>" -> octets.
using seed_set = std::map<std::string, std::string>;

// connection_machine_fuzz ------------------------------------------------------------------------

namespace cs = fuzz::connection_script;

// The peer's bytes into the inbox (as many peer_bytes operations as they need).
void peer_bytes(script_writer& w, std::string_view bytes) {
  while (!bytes.empty()) {
    const std::string_view part = bytes.substr(0, 255);
    w.u8(cs::peer_bytes).u8(static_cast<std::uint8_t>(part.size())).bytes(part);
    bytes.remove_prefix(part.size());
  }
}
void peer(script_writer& w, scripted_peer& p) {
  peer_bytes(w, p.take());
}
void deliver_all(script_writer& w) {
  w.u8(cs::deliver).u16(0);
}

// Heartbeats off, the broker's frame_max 131072, bodies up to 1 MiB.
constexpr std::uint8_t plain_config = cs::heartbeat(0) | cs::frame_max(1) | cs::body_limit(3);

script_writer opened(std::uint8_t config = plain_config) {
  script_writer w;
  w.u8(config);
  w.u8(cs::open_channel).u8(0);  // channel 1
  scripted_peer p;
  p.channel_open_ok(1);
  peer(w, p);
  deliver_all(w);
  return w;
}

void connection_seeds(seed_set& out) {
  const std::string dir = "connection_machine/";
  {
    script_writer w = opened();
    scripted_peer p;
    p.deliver(1, 1, "hello");
    peer(w, p);
    deliver_all(w);
    w.u8(cs::ack).u8(0).u8(1).u8(0);
    w.u8(cs::write).u16(0);
    out[dir + "seed_delivery_one_body_frame"] = w.str();
  }
  {
    // Three body frames, read three octets at a time, the command kept past its reads.
    script_writer w = opened();
    scripted_peer p;
    p.deliver(1, 1, "a body in three frames", 3);
    const std::string bytes = p.take();
    peer_bytes(w, bytes);
    for (std::size_t i = 0; i < bytes.size(); i += 3) w.u8(cs::deliver).u16(3);
    w.u8(cs::drop_kept);
    out[dir + "seed_delivery_split_reads_kept"] = w.str();
  }
  {
    script_writer w = opened();
    scripted_peer p;
    p.deliver(1, 1, "");
    p.deliver(1, 2, std::string(300, 'x'), 2);
    peer(w, p);
    deliver_all(w);
    w.u8(cs::ack).u8(0).u8(2).u8(1);
    out[dir + "seed_deliveries_empty_and_two_frames"] = w.str();
  }
  {
    script_writer w = opened();
    w.u8(cs::publish).u8(0).u16(5000).u8(1);  // more than one body frame at frame_max 4096
    w.u8(cs::write).u16(100).u8(cs::write).u16(0);
    scripted_peer p;
    codec::basic_return r{312, "NO_ROUTE", "ex", "rk"};
    p.method(1, r).header(1, 4).body(1, "back");
    p.method(1, codec::basic_ack{1, false});
    peer(w, p);
    deliver_all(w);
    out[dir + "seed_publish_return_ack"] = w.str();
  }
  {
    script_writer w = opened();
    scripted_peer p;
    p.channel_close(1, 404, "NOT_FOUND - no queue 'q'", 50, 10);
    peer(w, p);
    deliver_all(w);
    w.u8(cs::open_channel).u8(0);
    p.channel_open_ok(1);
    peer(w, p);
    deliver_all(w);
    out[dir + "seed_channel_closed_by_peer_reopened"] = w.str();
  }
  {
    // Our channel.close; a delivery in flight is discarded; then close-ok.
    script_writer w = opened();
    w.u8(cs::close_channel).u8(0).u16(200);
    scripted_peer p;
    p.deliver(1, 1, "late", 2).channel_close_ok(1);
    peer(w, p);
    deliver_all(w);
    out[dir + "seed_client_close_channel"] = w.str();
  }
  {
    script_writer w = opened();
    scripted_peer p;
    codec::channel_flow f;
    f.active = false;
    p.method(1, f);
    p.method(0, codec::connection_blocked{"low on memory"});
    p.method(0, codec::connection_unblocked{});
    peer(w, p);
    deliver_all(w);
    w.u8(cs::update_secret).u8(10);
    p.method(0, codec::connection_update_secret_ok{});
    peer(w, p);
    deliver_all(w);
    out[dir + "seed_flow_blocked_update_secret"] = w.str();
  }
  {
    script_writer w = opened();
    scripted_peer p;
    p.connection_close(320, "CONNECTION_FORCED - broker forced connection closure");
    peer(w, p);
    deliver_all(w);
    out[dir + "seed_connection_closed_by_peer"] = w.str();
  }
  {
    script_writer w = opened();
    w.u8(cs::close).u16(200);
    scripted_peer p;
    p.deliver(1, 1, "discarded").connection_close_ok();
    peer(w, p);
    deliver_all(w);
    out[dir + "seed_client_close_handshake"] = w.str();
  }
  {
    // 1 s heartbeats: one sent after half a second, the broker's arrives, then silence.
    script_writer w = opened(cs::heartbeat(1) | cs::frame_max(1) | cs::body_limit(3));
    w.u8(cs::tick).u16(600).u8(cs::write).u16(0);
    scripted_peer p;
    p.heartbeat();
    peer(w, p);
    deliver_all(w);
    w.u8(cs::heartbeat_if_idle);
    w.u8(cs::tick).u16(1000).u8(cs::tick).u16(1100);
    out[dir + "seed_heartbeats_then_dead_peer"] = w.str();
  }
  {
    // A body above the client's limit (100 octets): 506 from the header.
    script_writer w = opened(cs::frame_max(0) | cs::body_limit(1));
    scripted_peer p;
    p.deliver(1, 1, std::string(101, 'x'));
    peer(w, p);
    deliver_all(w);
    out[dir + "seed_body_above_limit"] = w.str();
  }
  {
    // The whole handshake from the fuzzer: start, a SASL challenge, tune at frame_max 4096.
    script_writer w;
    w.u8(cs::no_prefix | cs::challenge | cs::frame_max(0) | cs::body_limit(3));
    scripted_peer p;
    p.start("PLAIN").secure("challenge").tune(16, 4096, 0).open_ok();
    peer(w, p);
    deliver_all(w);
    w.u8(cs::open_channel).u8(1);
    p.channel_open_ok(2);
    peer(w, p);
    w.u8(cs::deliver).u16(5).u8(cs::deliver).u16(0);
    out[dir + "seed_handshake_with_challenge"] = w.str();
  }
  {
    // Garbage after the handshake: a frame of an unknown type.
    script_writer w = opened();
    w.u8(cs::peer_frame).u8(9).u8(1).u16(3).bytes("abc");
    deliver_all(w);
    out[dir + "seed_unknown_frame_type"] = w.str();
  }
}

// channel_core_fuzz
// --------------------------------------------------------------------------------

namespace ccs = fuzz::channel_script;

// ch octets: channel 1 (coalescing acks), channel 2 (decisions sent at once).
constexpr std::uint8_t ch1 = 0;
constexpr std::uint8_t ch2 = 1;
constexpr std::uint8_t tag_named = 0;  // the broker names it ("amq.ctag-0")
constexpr std::uint8_t c1 = 1, c2 = 2, c3 = 3;

// Acks held up to 64 or 1 ms; 64 cancelled no-ack tags remembered.
constexpr std::uint8_t channel_config =
    ccs::max_count(3) | ccs::delay_1ms | ccs::cancelled_memory(2);

struct channel_writer {
  script_writer w;
  explicit channel_writer(std::uint8_t config = channel_config) { w.u8(config); }
  channel_writer& op(ccs::op o, std::uint8_t ch) {
    w.u8(o).u8(ch);
    return *this;
  }
  channel_writer& peer(std::uint8_t ch, ccs::peer_what what) {
    w.u8(ccs::peer_method).u8(ch).u8(what);
    return *this;
  }
  // open (with a waiter) and the broker's open-ok.
  channel_writer& opened(std::uint8_t ch) {
    op(ccs::open, ch).w.u8(1);
    return peer(ch, ccs::open_ok);
  }
  channel_writer& consume(std::uint8_t ch, std::uint8_t tag, bool no_ack, bool nowait = false) {
    op(ccs::consume, ch).w.u8(tag).u8(no_ack).u8(nowait);
    if (!nowait) peer(ch, ccs::consume_ok).w.u8(tag);
    return *this;
  }
  channel_writer& deliver(std::uint8_t ch, std::uint8_t tag, std::uint16_t delivery_tag,
                          std::uint8_t body_size = 5) {
    peer(ch, ccs::deliver).w.u8(tag).u16(delivery_tag).u8(body_size);
    return *this;
  }
  channel_writer& decide(std::uint8_t ch, std::uint8_t newest_back, std::uint8_t how) {
    op(ccs::decide, ch).w.u8(newest_back).u8(how);
    return *this;
  }
  channel_writer& tick(std::uint16_t ms) {
    w.u8(ccs::tick).u16(ms);
    return *this;
  }
  channel_writer& confirm_select(std::uint8_t ch, std::uint8_t window, std::uint16_t timeout_ms) {
    op(ccs::confirm_select, ch).w.u8(window).u16(timeout_ms).u8(0);
    return peer(ch, ccs::select_ok);
  }
  channel_writer& publish(std::uint8_t ch, bool mandatory, std::uint8_t route) {
    op(ccs::publish, ch).w.u8(mandatory).u8(route);
    return *this;
  }
  channel_writer& confirm(std::uint8_t ch, bool ack, std::uint16_t tag, bool multiple) {
    peer(ch, ack ? ccs::confirm_ack : ccs::confirm_nack).w.u16(tag).u8(multiple);
    return *this;
  }
};

void channel_core_seeds(seed_set& out) {
  const std::string dir = "channel_core/";
  {
    // Decisions out of order: held, then one multiple ack, a nack on its own.
    channel_writer c;
    c.opened(ch1).consume(ch1, c1, false);
    c.deliver(ch1, c1, 1).deliver(ch1, c1, 2).deliver(ch1, c1, 3).deliver(ch1, c1, 4);
    c.decide(ch1, 0, ccs::how_nack | ccs::how_requeue);  // tag 4
    c.decide(ch1, 3, ccs::how_ack);                      // tag 1
    c.decide(ch1, 1, ccs::how_ack);                      // tag 3
    c.decide(ch1, 2, ccs::how_ack);                      // tag 2: the gap closes
    c.tick(2).op(ccs::flush_acks, ch1);
    out[dir + "seed_deliveries_coalesced_acks"] = c.w.str();
  }
  {
    channel_writer c;
    c.opened(ch1).consume(ch1, c1, false);
    c.deliver(ch1, c1, 1).deliver(ch1, c1, 2).deliver(ch1, c1, 3);
    c.decide(ch1, 0, ccs::how_ack | ccs::how_multiple);  // every delivery up to 3
    c.deliver(ch1, c1, 4).decide(ch1, 0, ccs::how_reject);
    c.op(ccs::close, ch1).w.u8(1).u16(200);
    c.deliver(ch1, c1, 5).peer(ch1, ccs::close_ok);
    out[dir + "seed_multiple_ack_then_client_close"] = c.w.str();
  }
  {
    channel_writer c;
    c.opened(ch1).confirm_select(ch1, 8, 0);
    c.publish(ch1, false, 0).publish(ch1, true, 1).publish(ch1, false, 2).publish(ch1, false, 0);
    c.peer(ch1, ccs::basic_return).w.u8(1);
    c.confirm(ch1, true, 2, true).confirm(ch1, false, 3, false).confirm(ch1, true, 0, true);
    out[dir + "seed_confirms_return_ack_nack"] = c.w.str();
  }
  {
    // Confirms time out at 100 ms; a late ack is ignored; the connection goes with one publish
    // unanswered (connection_lost), a new connection opens the channel again.
    channel_writer c;
    c.opened(ch1).confirm_select(ch1, 4, 100);
    c.publish(ch1, false, 0).publish(ch1, false, 0).tick(150);
    c.publish(ch1, true, 1).confirm(ch1, true, 1, false);
    c.w.u8(ccs::connection_lost).u8(ccs::reconnect);
    c.opened(ch1);
    out[dir + "seed_confirm_timeout_connection_lost"] = c.w.str();
  }
  {
    channel_writer c;
    c.opened(ch1);
    c.op(ccs::get, ch1).w.u8(0);
    c.peer(ch1, ccs::get_ok).w.u16(1);
    c.decide(ch1, 0, ccs::how_ack);  // the get-ok's message
    c.op(ccs::get, ch1).w.u8(0);
    c.peer(ch1, ccs::get_empty);
    c.consume(ch1, c1, false).deliver(ch1, c1, 2);
    c.op(ccs::recover, ch1).w.u8(0);
    c.deliver(ch1, c1, 3).peer(ch1, ccs::recover_ok);
    c.deliver(ch1, c1, 4).decide(ch1, 0, ccs::how_ack).decide(ch1, 1, ccs::how_ack);
    c.op(ccs::flush_acks, ch1);
    out[dir + "seed_get_and_recover"] = c.w.str();
  }
  {
    // A no-ack consumer cancelled with deliveries in flight (dropped), a delivery for a tag
    // nobody consumes (rejected with requeue), a broker-side cancel.
    channel_writer c;
    c.opened(ch1).consume(ch1, c2, true, true).consume(ch1, c1, false);
    c.deliver(ch1, c2, 1);
    c.op(ccs::cancel, ch1).w.u8(c2).u8(1);
    c.peer(ch1, ccs::cancel_ok).w.u8(c2);
    c.deliver(ch1, c2, 2).deliver(ch1, c3, 3).deliver(ch1, c1, 4);
    c.peer(ch1, ccs::cancel_from_peer).w.u8(c1);
    c.deliver(ch1, c1, 5).tick(2);
    out[dir + "seed_cancels_and_unknown_consumers"] = c.w.str();
  }
  {
    // A consume whose caller gives up: the late consume-ok cancels it; a late get-ok is given
    // back.
    channel_writer c;
    c.opened(ch1);
    c.op(ccs::consume, ch1).w.u8(c1).u8(0).u8(0);
    c.w.u8(ccs::abandon).u8(0);
    c.peer(ch1, ccs::consume_ok).w.u8(c1);
    c.deliver(ch1, c1, 1);
    c.op(ccs::get, ch1).w.u8(0);
    c.w.u8(ccs::abandon).u8(0);
    c.peer(ch1, ccs::get_ok).w.u16(2);
    c.op(ccs::qos, ch1).w.u8(10).u8(0);
    c.w.u8(ccs::abandon).u8(0);
    c.peer(ch1, ccs::qos_ok);
    out[dir + "seed_calls_given_up_late_replies"] = c.w.str();
  }
  {
    // The broker closes the channel; a decision on the ended life is refused; a new life.
    channel_writer c;
    c.opened(ch1).consume(ch1, c1, false).deliver(ch1, c1, 1);
    c.peer(ch1, ccs::channel_close).w.u16(406);
    c.decide(ch1, 0, ccs::how_ack);
    c.opened(ch1).consume(ch1, c1, false).deliver(ch1, c1, 1);
    c.op(ccs::decide_tag, ch1).w.u8(1).u8(1).u8(ccs::how_ack);  // tag 1 of the old life
    c.decide(ch1, 0, ccs::how_ack).tick(2);
    out[dir + "seed_peer_close_stale_decision"] = c.w.str();
  }
  {
    channel_writer c;
    c.opened(ch1);
    c.op(ccs::qos, ch1).w.u8(10).u8(1);
    c.peer(ch1, ccs::qos_ok);
    c.op(ccs::tx_select, ch1);
    c.peer(ch1, ccs::tx_select_ok);
    c.op(ccs::flow, ch1).w.u8(0);
    c.peer(ch1, ccs::flow_ok).w.u8(0);
    c.op(ccs::call, ch1).w.u8(0);
    c.op(ccs::call, ch1).w.u8(2);
    c.peer(ch1, ccs::queue_declare_ok).peer(ch1, ccs::tx_commit_ok);
    c.consume(ch1, tag_named, false).deliver(ch1, tag_named, 1);
    c.peer(ch1, ccs::flow_from_peer).w.u8(0);
    c.publish(ch1, false, 0);
    c.peer(ch1, ccs::flow_from_peer).w.u8(1);
    c.publish(ch1, false, 0);
    out[dir + "seed_settings_flow_server_named"] = c.w.str();
  }
  {
    // Both channels, the broker closes the connection, a new connection.
    channel_writer c;
    c.opened(ch1).opened(ch2).consume(ch1, c1, false).consume(ch2, c1, false);
    c.confirm_select(ch2, 2, 0).publish(ch2, false, 0).publish(ch2, false, 0);
    c.publish(ch2, false, 0);  // the window (2) is full: not published
    c.w.u8(ccs::peer_connection_close).u16(320);
    c.w.u8(ccs::reconnect);
    c.opened(ch2);
    out[dir + "seed_connection_closed_by_peer_reconnect"] = c.w.str();
  }
  // With the conforming broker (the model answers what the client wrote).
  {
    channel_writer c;
    c.op(ccs::open, ch1).w.u8(1);
    c.op(ccs::broker_answer, ch1).w.u8(0);
    c.op(ccs::qos, ch1).w.u8(10).u8(0);
    c.op(ccs::consume, ch1).w.u8(c1).u8(0).u8(0);
    c.op(ccs::consume, ch1).w.u8(tag_named).u8(0).u8(0);
    c.op(ccs::confirm_select, ch1).w.u8(16).u16(0).u8(0);
    for (int i = 0; i < 4; ++i) c.op(ccs::broker_answer, ch1).w.u8(0);
    c.publish(ch1, false, 0).publish(ch1, true, 1).publish(ch1, false, 2);
    c.op(ccs::broker_read, ch1).w.u8(0);
    for (int i = 0; i < 4; ++i) c.op(ccs::broker_deliver, ch1).w.u8(i).u8(4);
    c.decide(ch1, 0, ccs::how_ack).decide(ch1, 2, ccs::how_ack | ccs::how_multiple);
    c.op(ccs::broker_confirm, ch1).w.u8(0).u8(0);  // ack 1
    c.op(ccs::broker_confirm, ch1).w.u8(2).u8(1);  // ack up to 3
    c.tick(2);
    out[dir + "seed_broker_consume_confirm"] = c.w.str();
  }
  {
    // Crossing closes: the face closes while the broker closes; RabbitMQ answers both.
    channel_writer c;
    c.op(ccs::open, ch1).w.u8(1);
    c.op(ccs::broker_answer, ch1).w.u8(0);
    c.op(ccs::consume, ch1).w.u8(c1).u8(0).u8(0);
    c.op(ccs::broker_answer, ch1).w.u8(0);
    c.op(ccs::broker_deliver, ch1).w.u8(0).u8(3);
    c.op(ccs::close, ch1).w.u8(1).u16(200);  // in flight when the broker closes
    c.op(ccs::broker_close, ch1).w.u16(406);
    c.op(ccs::broker_answer, ch1).w.u8(0);  // reads the close, answers it with close-ok
    c.op(ccs::open, ch1).w.u8(1);
    c.op(ccs::broker_answer, ch1).w.u8(0);
    out[dir + "seed_broker_crossing_closes"] = c.w.str();
  }
  {
    channel_writer c;
    c.op(ccs::open, ch2).w.u8(1);
    c.op(ccs::broker_answer, ch2).w.u8(0);
    c.op(ccs::get, ch2).w.u8(0);
    c.op(ccs::get, ch2).w.u8(0);
    c.op(ccs::broker_answer, ch2).w.u8(1);  // get-ok
    c.op(ccs::broker_answer, ch2).w.u8(0);  // get-empty
    c.decide(ch2, 0, ccs::how_reject | ccs::how_requeue);
    c.op(ccs::consume, ch2).w.u8(c2).u8(1).u8(1);  // no-ack, nowait
    c.op(ccs::broker_read, ch2).w.u8(0);
    c.op(ccs::broker_deliver, ch2).w.u8(0).u8(1);
    c.op(ccs::recover, ch2).w.u8(0);
    c.op(ccs::broker_answer, ch2).w.u8(0);
    c.op(ccs::broker_flow, ch2).w.u8(0);
    c.op(ccs::broker_cancel, ch2).w.u8(0);
    c.op(ccs::call, ch2).w.u8(1);
    c.op(ccs::broker_answer, ch2).w.u8(0);
    c.op(ccs::broker_close, ch2).w.u16(404);
    out[dir + "seed_broker_get_recover_cancel_close"] = c.w.str();
  }
  {
    // The direct core: each decision goes at once, tags as given.
    channel_writer c;
    c.opened(ch2).consume(ch2, c1, false);
    c.deliver(ch2, c1, 1).deliver(ch2, c1, 2).decide(ch2, 0, ccs::how_ack | ccs::how_multiple);
    c.op(ccs::decide_tag, ch2).w.u8(0).u8(7).u8(ccs::how_reject);
    c.deliver(ch2, c3, 3);
    out[dir + "seed_direct_decisions"] = c.w.str();
  }
}

// Writing and checking
// -----------------------------------------------------------------------------

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

int main(int argc, char** argv) {
  seed_set seeds;
  connection_seeds(seeds);
  channel_core_seeds(seeds);
  if (argc >= 2 && std::string_view(argv[1]) == "--check") {
    std::map<std::string, fs::path> given;  // "<corpus>/<name>" -> path
    for (int i = 2; i < argc; ++i) {
      const fs::path p(argv[i]);
      given[p.parent_path().filename().string() + "/" + p.filename().string()] = p;
    }
    int bad = 0;
    for (const auto& [name, bytes] : seeds) {
      auto it = given.find(name);
      if (it == given.end()) {
        std::fprintf(stderr, "missing from the corpus: %s (run make_seeds)\n", name.c_str());
        ++bad;
      } else if (read_file(it->second) != bytes) {
        std::fprintf(stderr, "differs from what make_seeds writes: %s\n", name.c_str());
        ++bad;
      }
    }
    std::fprintf(stderr, "%zu seeds checked, %d bad\n", seeds.size(), bad);
    return bad == 0 ? 0 : 1;
  }
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR | --check FILE...\n", argv[0]);
    return 2;
  }
  for (const auto& [name, bytes] : seeds) {
    const fs::path p = fs::path(argv[1]) / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
  }
  std::fprintf(stderr, "wrote %zu seeds under %s\n", seeds.size(), argv[1]);
  return 0;
}
