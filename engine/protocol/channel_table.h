// The channels of one connection, sans-I/O: channel-id allocation, the route from the
// connection_machine's per-channel events to each channel_core, and the close fan-out.
//
// Ids. 1..channel_max (negotiated in connection.tune; 0 means 65535). allocate() gives the lowest
// free id, take() a given one; an id stays taken until release(), so a face decides when an id
// may be reused (the async engine never reuses a closed channel's id while anything in flight can
// still name it; the blocking API keeps a closed channel's id for reopening it).
//
// The fan-out. When the connection ends, on_connection_lost() ends every attached channel exactly
// once: each ends its waits, its unconfirmed publishes and its consumers (channel_core::end).
// A channel already closed is not ended again.
//
// The table holds channel cores by pointer; the faces own them (inside their channel objects) and
// detach them (release) before destroying them.
//
// No threads, no clock. Threading: the connection's owner thread (the async engine's I/O thread,
// the blocking API's calling thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "engine/protocol/channel_core.h"
#include "engine/protocol/connection_machine.h"

namespace warren::protocol {

class channel_table {
 public:
  explicit channel_table(std::uint16_t channel_max = 0) { set_channel_max(channel_max); }

  // The negotiated channel_max (0: 65535). Ids above it are never handed out.
  void set_channel_max(std::uint16_t max) noexcept { max_ = max == 0 ? 65535 : max; }
  std::uint16_t channel_max() const noexcept { return max_; }

  // Takes the lowest free id; 0 when every id up to channel_max is taken.
  std::uint16_t allocate();
  // Takes `id`; false when it is 0, above channel_max, or taken.
  bool take(std::uint16_t id);
  bool taken(std::uint16_t id) const noexcept { return slots_.count(id) != 0; }
  // Routes `id`'s events to `core` (core.id() must be taken).
  void attach(channel_core& core);
  // Frees the id (its core, if any, is no longer reached).
  void release(std::uint16_t id);

  // The core attached under `id`, or null.
  channel_core* find(std::uint16_t id) noexcept {
    if (id == cached_id_ && cached_ != nullptr) return cached_;
    auto it = slots_.find(id);
    if (it == slots_.end() || it->second == nullptr) return nullptr;
    cached_id_ = id;
    cached_ = it->second;
    return cached_;
  }

  // connection_handler's per-channel events, passed on to the channel's core. A command for a
  // channel with no core is dropped.
  void on_command(command& cmd, time_point now) {
    if (channel_core* c = find(cmd.channel)) c->on_command(cmd, now);
  }
  void on_channel_closed(std::uint16_t id, const close_reason& why);
  // The connection ended: every attached channel ends (once), in id order.
  void on_connection_lost(const close_reason& why);

  // Every attached core, in id order: `f(channel_core&)`. `f` may release ids.
  template <class F>
  void for_each(F&& f) {
    std::vector<channel_core*> all;
    all.reserve(slots_.size());
    for (auto& [id, core] : slots_) {
      if (core != nullptr) all.push_back(core);
    }
    for (channel_core* c : all) {
      // Released (or replaced) by an earlier call: skipped.
      auto it = slots_.find(c->id());
      if (it != slots_.end() && it->second == c) f(*c);
    }
  }

  // Ids taken.
  std::size_t size() const noexcept { return slots_.size(); }

 private:
  std::map<std::uint16_t, channel_core*> slots_;  // taken ids; null until attached
  std::uint16_t max_ = 65535;
  std::uint16_t cached_id_ = 0;
  channel_core* cached_ = nullptr;
};

}  // namespace warren::protocol
