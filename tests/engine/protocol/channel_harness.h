// A connection for unit tests of the channel core and the channel table: a connection_machine
// opened against the scripted peer, a channel_table routing the machine's per-channel events,
// a channel_wire over the machine, a fake clock, and recorders of what a face would be told.
//
// Bytes go both ways as on a socket: feed() hands the machine the peer's frames (each read in a
// fresh buffer), written() decodes what the client queued. No sockets, threads or clocks.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "engine/protocol/channel_core.h"
#include "engine/protocol/channel_table.h"
#include "engine/protocol/connection_machine.h"
#include "tests/engine/protocol/scripted_peer.h"

namespace warren::protocol::test {

using namespace std::chrono_literals;

// A consumer as a face would derive it; `name` tells test consumers apart.
struct test_consumer : consumer {
  test_consumer(std::string t, bool na, std::string n = {}) : name(std::move(n)) {
    tag = std::move(t);
    no_ack = na;
  }
  std::string name;
};

// A call's waiter: remembers its reply (the command keeps its buffers) or its failure.
struct test_waiter : reply_waiter {
  std::optional<command> reply;
  std::optional<end_cause> failed;
  close_reason why;
  int calls = 0;

  void on_reply(command& c) override {
    ++calls;
    reply = c;
  }
  void on_failed(end_cause cause, const close_reason& r) override {
    ++calls;
    failed = cause;
    why = r;
  }
};

// Everything a channel core reports, in order.
struct recording_handler : channel_handler {
  struct delivery {
    std::string consumer_name;
    std::uint64_t tag = 0;
    std::string body;
  };
  std::vector<delivery> deliveries;
  std::vector<confirm_event> confirms;
  std::vector<std::string> confirm_texts;  // the events' reply_text, copied
  int after_confirms_calls = 0;
  std::vector<confirm_event> kept;  // on_kept
  int kept_holding_lock = 0;
  std::vector<std::tuple<bool, std::uint64_t, bool>> confirm_frames;
  std::vector<std::string> returns;  // "code routing_key body"
  std::vector<bool> flows;
  std::vector<std::unique_ptr<consumer>> cancelled;  // by the broker
  std::vector<std::unique_ptr<consumer>> removed;
  int opened = 0;
  int waiting = 0;  // the sum of on_waiting deltas
  std::vector<std::pair<end_cause, close_reason>> ended;
  int locks = 0;    // lock_publish calls
  int holding = 0;  // the publish lock is held now
  int confirms_without_lock = 0;
  std::function<void(end_cause)> on_end;  // runs inside on_ended (a face reopening, say)
  std::vector<end_cause> ending;
  std::vector<channel_state> state_when_ending;
  std::function<channel_state()> core_state;  // how the test reads the core's state

  void on_delivery(consumer& c, command& cmd) override {
    deliveries.push_back(
        {static_cast<test_consumer&>(c).name, cmd.deliver.delivery_tag, std::string(cmd.body)});
  }
  void lock_publish() override {
    ++locks;
    ++holding;
  }
  void unlock_publish() override { --holding; }
  void on_confirm(const confirm_event& e) override {
    if (holding == 0) ++confirms_without_lock;
    confirms.push_back(e);
    confirm_texts.emplace_back(e.reply_text);
  }
  void after_confirms() override { ++after_confirms_calls; }
  void on_kept(const confirm_event& e) override {
    if (holding != 0) ++kept_holding_lock;
    kept.push_back(e);
  }
  void on_confirm_frame(bool ack, std::uint64_t tag, bool multiple) override {
    confirm_frames.emplace_back(ack, tag, multiple);
  }
  void on_return(command& cmd, const codec::basic_return& m) override {
    returns.push_back(std::to_string(m.reply_code) + " " + std::string(m.routing_key) + " " +
                      std::string(cmd.body));
  }
  void on_flow(bool active) override { flows.push_back(active); }
  void on_consumer_cancelled(std::unique_ptr<consumer> c) override {
    cancelled.push_back(std::move(c));
  }
  void on_consumer_removed(std::unique_ptr<consumer> c) override {
    removed.push_back(std::move(c));
  }
  void on_waiting(int delta) override { waiting += delta; }
  void on_open() override { ++opened; }
  void on_ending(end_cause cause, const close_reason&) override {
    ending.push_back(cause);
    state_when_ending.push_back(core_state ? core_state() : channel_state::closed);
  }
  void on_ended(end_cause cause, const close_reason& why) override {
    ended.emplace_back(cause, why);
    if (on_end) on_end(cause);
  }

  std::string removed_names() const {
    std::string out;
    for (const auto& c : removed) {
      out += (out.empty() ? "" : ",") + static_cast<const test_consumer&>(*c).name;
    }
    return out;
  }
};

// The open connection: machine, table, wire, clock.
class connection_harness : public connection_handler, public channel_wire {
 public:
  time_point now = time_point{} + 1h;
  scripted_peer peer;
  std::unique_ptr<connection_machine> machine;
  channel_table table;
  std::vector<std::uint16_t> updates_ok;  // channel-0 commands (update-secret-ok)

  // Connects (start, tune, open-ok), with `channel_max` from the broker.
  void connect(std::uint16_t channel_max = 2047) {
    connection_config c;
    c.authentication = {sasl_plain("guest", "guest")};
    machine = std::make_unique<connection_machine>(std::move(c), *this);
    machine->start(now);
    feed(peer.start().tune(channel_max, 131072, 0).open_ok());
    ASSERT_TRUE(machine->is_open());
    table.set_channel_max(machine->channel_max());
    written();
  }

  // Each read lands in a fresh buffer after the unconsumed tail of the previous one.
  void feed(std::string_view bytes) {
    const std::string all = tail_ + std::string(bytes);
    rx_ref buffer = rx_ref::allocate(all.size());
    if (!all.empty()) std::memcpy(buffer->data(), all.data(), all.size());
    const std::size_t used =
        machine->feed(std::string_view(buffer->data(), all.size()), buffer, now);
    tail_ = all.substr(used);
  }
  void feed(scripted_peer& p) {
    EXPECT_EQ(p.encode_status(), codec::errc::ok) << "the script itself did not encode";
    feed(p.take());
  }

  // What the client queued since the last call; all of it is "written" at `now`.
  client_output written() {
    client_output out = parse_client_output(machine->output());
    EXPECT_EQ(out.error, codec::errc::ok) << "the client wrote a malformed stream";
    machine->consume_output(machine->output().size(), now);
    return out;
  }

  // connection_handler: the channel events go to the table.
  void on_command(command& cmd) override {
    if (cmd.channel == 0) {
      updates_ok.push_back(0);
      return;
    }
    table.on_command(cmd, now);
  }
  void on_channel_closed(std::uint16_t channel, const close_reason& why) override {
    table.on_channel_closed(channel, why);
  }
  void on_closed(const close_reason& why) override { table.on_connection_lost(why); }

  // channel_wire over the machine.
  void send_ack(std::uint16_t channel, const ack_action& a) override {
    send_ack_action(*machine, channel, a);
  }
  void send_cancel(std::uint16_t channel, std::string_view tag) override {
    codec::basic_cancel m;
    m.consumer_tag = tag;
    m.nowait = true;
    machine->send(channel, m);
  }
  void open_channel(std::uint16_t channel) override { machine->open_channel(channel); }
  void close_channel(std::uint16_t channel, std::uint16_t code, std::string_view text,
                     std::uint16_t class_id, std::uint16_t method_id) override {
    machine->close_channel(channel, code, text, class_id, method_id);
  }

 private:
  std::string tail_;
};

// The frames of `out` that are M, decoded.
template <class M>
std::vector<M> frames_of(const client_output& out) {
  std::vector<M> v;
  for (const client_frame& f : out.frames) {
    if (auto m = f.as<M>()) v.push_back(*m);
  }
  return v;
}

}  // namespace warren::protocol::test
