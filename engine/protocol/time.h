// The clock of the sans-I/O protocol machines: they never read it, callers pass `now` in.
//
// engine/protocol/connection_machine.h declares the same two aliases; redeclaring an alias to the
// same type is allowed, so a file may include both.
#pragma once

#include <chrono>

namespace warren::protocol {

using clock = std::chrono::steady_clock;
using time_point = clock::time_point;

}  // namespace warren::protocol
