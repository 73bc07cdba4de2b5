// The text protocol of the fault proxy binary (tools/fault_proxy/main.cc): one command per line
// on standard input, one reply line on standard output, so that shell and Python benchmark
// drivers can inject faults between a client and a broker.
//
//   freeze | thaw | reset | clear_drop | stats | quit
//   refuse on|off
//   drop to_target|to_client BYTES silence|reset
//   target HOST:PORT
//
// Replies: "ok" (stats: "ok accepted=N open=N cut=N to_target=BYTES to_client=BYTES"), or
// "error: <what was wrong>" for a line that is not a valid command (the proxy is then unchanged).
//
// Thread rules: as fault_proxy's controls (any thread; blocks until the proxy applied it).
#pragma once

#include <string>
#include <string_view>

#include "tests/support/fault_proxy.h"

namespace warren::tools {

struct control_reply {
  std::string text;   // the reply line, without a newline
  bool quit = false;  // the command was "quit"
};

control_reply apply_command(test::fault_proxy& proxy, std::string_view line);

}  // namespace warren::tools
