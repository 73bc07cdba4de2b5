// The script connection_machine_fuzz reads (see fuzz_input.h for the encoding), shared with the
// seed generator (make_seeds.cc) so that the seeds and the fuzzer agree on every octet.
//
// Script: one config octet, then operations.
//   config bits 0-1  heartbeat the client asks for: 0, 1, 2 or 60 s (the broker's tune offers 60)
//          bit  2    no handshake prefix: the peer's stream starts right after the protocol
//                    header (the fuzzer then plays the handshake too)
//          bits 3-4  frame_max the broker's tune offers: 4096, 131072, 0 (no limit), 8192
//          bits 5-6  the client's max_body_size: 0, 100, 4096, 1 MiB
//          bit  7    the client answers SASL challenges (on_challenge set)
// The peer's bytes go to an inbox; `deliver` hands a prefix of it to the machine as one read,
// so the fuzzer chooses where reads split. At the end of the script the rest of the inbox is
// delivered, then the transport closes.
#pragma once

#include <cstdint>

namespace warren::fuzz::connection_script {

inline constexpr std::uint8_t no_prefix = 1 << 2;
inline constexpr std::uint8_t challenge = 1 << 7;
inline constexpr std::uint8_t heartbeat(std::uint8_t index) {
  return index & 3;
}
inline constexpr std::uint8_t frame_max(std::uint8_t index) {
  return (index & 3) << 3;
}
inline constexpr std::uint8_t body_limit(std::uint8_t index) {
  return (index & 3) << 5;
}

enum op : std::uint8_t {
  peer_bytes,     // n:u8, then n octets into the inbox
  peer_frame,     // type:u8 channel:u8 size:u16, then size octets: one frame into the inbox
  deliver,        // n:u16: the first n octets of the inbox (0: all of it) to feed() as one read
  open_channel,   // channel:u8 (1..4)
  close_channel,  // channel:u8 (1..4) reply_code:u16
  publish,        // channel:u8 (1..4) body_size:u16 mandatory:u8
  ack,            // channel:u8 (1..4) delivery_tag:u8 multiple:u8
  tick,           // ms:u16: the clock moves on, then on_timer
  write,          // n:u16: the transport wrote n octets of the output (0: all of it)
  close,          // reply_code:u16: connection.close from the client
  transport_closed,
  update_secret,  // size:u8 of the new secret
  heartbeat_if_idle,
  drop_kept,  // the commands kept from the receive path are released (their bodies read first)
  // Extension point: the recovery's replay (a new machine on a new transport that replays the
  // topology) goes here, before op_count; see the report of the fuzz branch.
  op_count,
};

}  // namespace warren::fuzz::connection_script
