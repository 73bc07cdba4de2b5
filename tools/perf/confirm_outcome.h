// The one place that decides what an async engine confirm outcome counts as: confirmed (the
// broker took the message), nacked (the broker refused it) or in doubt (nobody knows: the
// connection or the channel went before the confirm came, or the confirm timed out, so the
// broker may or may not have the message). A new outcome in the engine is a compile error here
// (-Wswitch with -Werror), never a silent default.
#pragma once

#include "engine/async/engine.h"
#include "tools/perf/stats.h"

namespace warren::perf {

constexpr settlement settlement_of(async::confirm_result::outcome o) noexcept {
  using outcome = async::confirm_result::outcome;
  switch (o) {
    case outcome::ack:
      return settlement::confirmed;
    case outcome::nack:
      return settlement::nacked;
    case outcome::timeout:
    case outcome::in_doubt:
    case outcome::channel_closed:
      return settlement::in_doubt;
  }
  return settlement::in_doubt;
}

}  // namespace warren::perf
