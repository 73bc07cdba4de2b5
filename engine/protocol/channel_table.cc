#include "engine/protocol/channel_table.h"

namespace warren::protocol {

std::uint16_t channel_table::allocate() {
  // The taken ids are ordered: the first gap from 1 is the lowest free one.
  std::uint32_t want = 1;
  for (const auto& [id, core] : slots_) {
    if (id != want) break;
    ++want;
  }
  if (want > max_) return 0;
  const auto id = static_cast<std::uint16_t>(want);
  slots_.emplace(id, nullptr);
  return id;
}

bool channel_table::take(std::uint16_t id) {
  if (id == 0 || id > max_) return false;
  return slots_.emplace(id, nullptr).second;
}

void channel_table::attach(channel_core& core) {
  slots_[core.id()] = &core;
  if (cached_id_ == core.id()) cached_ = nullptr;
}

void channel_table::release(std::uint16_t id) {
  slots_.erase(id);
  if (cached_id_ == id) cached_ = nullptr;
}

void channel_table::on_channel_closed(std::uint16_t id, const close_reason& why) {
  if (channel_core* c = find(id)) c->on_closed_by_peer(why);
}

void channel_table::on_connection_lost(const close_reason& why) {
  for_each([&](channel_core& c) { c.on_connection_lost(why); });
}

}  // namespace warren::protocol
