// The script channel_core_fuzz reads (see fuzz_input.h for the encoding), shared with the seed
// generator (make_seeds.cc).
//
// The fuzzer opens a connection_machine with a valid handshake, then runs two channel cores on it
// through a channel_table, as a face does: core 1 coalesces acks (the async engine), core 2 sends
// each decision at once (the blocking API). Every operation names its core with a `ch` octet
// (even: channel 1, odd: channel 2). The broker's side is commands built with the codec from the
// script's arguments (or raw frames), fed to the machine, which routes them to the cores.
//
// Script: one config octet, then operations.
//   config bits 0-1  core 1's ack coalescer max_count: 1, 2, 3, 64
//          bit  2    its max_delay: 1 ms (0: 0 ms)
//          bits 3-4  cancelled no-ack tags remembered: 1, 2, 64, 64
#pragma once

#include <cstdint>

namespace warren::fuzz::channel_script {

inline constexpr std::uint8_t max_count(std::uint8_t index) {
  return index & 3;
}
inline constexpr std::uint8_t delay_1ms = 1 << 2;
inline constexpr std::uint8_t cancelled_memory(std::uint8_t index) {
  return (index & 3) << 3;
}

// Consumer tags by index: 0 is the broker's name for a server-named consume ("amq.ctag-0"), 1..3
// are "c1".."c3". Routes (exchange, routing key) by index: 0..2.
inline constexpr int tag_count = 4;
inline constexpr int route_count = 3;

enum op : std::uint8_t {
  // The face's actions (each skipped unless the core is in the state a face would act in).
  open,            // ch unused:u8 (always with a waiter, as the faces open)
  close,           // ch waiter:u8 reply_code:u16
  consume,         // ch tag:u8 no_ack:u8 nowait:u8
  cancel,          // ch tag:u8 how:u8 (0 nowait, 1 waits for cancel-ok, 2 cancel_now)
  get,             // ch no_ack:u8
  recover,         // ch async:u8
  qos,             // ch prefetch_count:u8 global:u8
  confirm_select,  // ch window:u8 timeout_ms:u16 nowait:u8
  tx_select,       // ch
  flow,            // ch active:u8
  publish,         // ch mandatory:u8 route:u8
  decide,          // ch which:u8 how:u8 (which: the n-th newest delivery the face was handed)
  decide_tag,      // ch life_back:u8 tag:u8 how:u8 (any tag, in the life `life_back` lives ago)
  abandon,         // which:u8 (the n-th newest call still waiting)
  flush_acks,      // ch
  tick,            // ms:u16: the clock moves on, then every timer that is due
  // The broker's side.
  peer_method,            // ch what:u8, then what's arguments (see peer_what)
  peer_raw,               // ch class:u16 method:u16 size:u8 args[size] (+ body_size:u8 for content)
  peer_frame,             // type:u8 ch size:u16 payload[size]
  peer_connection_close,  // reply_code:u16
  connection_lost,        // the transport failed
  reconnect,              // when the connection has ended: a new machine and handshake
  call,  // ch what:u8: a call through expect(): queue.declare (0), exchange.declare (1),
         // tx.commit (2), each waiting for its -ok
  // A conforming broker (the model of RabbitMQ in channel_core_fuzz.cc, driven by what the client
  // wrote): while a script uses only these on the broker's side (not peer_method, peer_raw,
  // peer_frame), the client must never fail the connection nor close a channel on its own.
  // The broker reads the client's methods only when told (or when it has no call left to
  // answer), so the script decides what crosses on the wire.
  broker_read,     // ch n:u8: the broker reads n of the methods in flight (0: all)
  broker_answer,   // ch get_ok:u8: the reply to the oldest call the broker has read
  broker_deliver,  // ch consumer:u8 body_size:u8: to a consumer the broker knows
  broker_confirm,  // ch how:u8 span:u8: bit 0 nack, bit 1 multiple (up to `span` later publishes)
  broker_close,    // ch reply_code:u16: the broker closes the channel
  broker_cancel,   // ch consumer:u8: the broker cancels a consumer (its queue went)
  broker_flow,     // ch active:u8
  // Extension point: recovery's replay (a reconnect that then replays each core's settings()
  // and the topology, republishing or reporting in doubt what was unconfirmed) goes here.
  op_count,
};

// peer_method's `what`, and its arguments.
enum peer_what : std::uint8_t {
  open_ok,
  close_ok,
  channel_close,  // reply_code:u16
  deliver,        // tag:u8 delivery_tag:u16 body_size:u8
  get_ok,         // delivery_tag:u16
  get_empty,
  consume_ok,        // tag:u8
  cancel_ok,         // tag:u8
  cancel_from_peer,  // tag:u8 (the broker cancels a consumer)
  confirm_ack,       // delivery_tag:u16 multiple:u8 (a publisher confirm)
  confirm_nack,      // delivery_tag:u16 multiple:u8
  basic_return,      // route:u8
  flow_from_peer,    // active:u8
  qos_ok,
  recover_ok,
  select_ok,
  tx_select_ok,
  flow_ok,  // active:u8
  queue_declare_ok,
  exchange_declare_ok,
  tx_commit_ok,
  peer_what_count,
};

// decide's and decide_tag's `how`: bits 0-1 ack (0, 3), nack (1), reject (2); bit 2 multiple;
// bit 3 requeue.
inline constexpr std::uint8_t how_ack = 0;
inline constexpr std::uint8_t how_nack = 1;
inline constexpr std::uint8_t how_reject = 2;
inline constexpr std::uint8_t how_multiple = 1 << 2;
inline constexpr std::uint8_t how_requeue = 1 << 3;

}  // namespace warren::fuzz::channel_script
