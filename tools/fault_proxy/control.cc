#include "tools/fault_proxy/control.h"

#include <charconv>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace warren::tools {
namespace {

std::vector<std::string> words(std::string_view line) {
  std::istringstream in{std::string(line)};
  std::vector<std::string> w;
  for (std::string s; in >> s;) w.push_back(s);
  return w;
}

bool parse_u64(const std::string& s, std::uint64_t& out) {
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

control_reply error(const std::string& what) {
  return {"error: " + what, false};
}

}  // namespace

control_reply apply_command(test::fault_proxy& proxy, std::string_view line) {
  const std::vector<std::string> w = words(line);
  if (w.empty()) return error("empty command");
  const std::string& cmd = w[0];
  const std::size_t n = w.size();
  if (cmd == "quit" && n == 1) return {"ok", true};
  if (cmd == "freeze" && n == 1) {
    proxy.freeze();
  } else if (cmd == "thaw" && n == 1) {
    proxy.thaw();
  } else if (cmd == "reset" && n == 1) {
    proxy.reset_connections();
  } else if (cmd == "clear_drop" && n == 1) {
    proxy.clear_drop();
  } else if (cmd == "refuse" && n == 2 && (w[1] == "on" || w[1] == "off")) {
    proxy.refuse_new(w[1] == "on");
  } else if (cmd == "drop" && n == 4) {
    std::uint64_t bytes = 0;
    if (w[1] != "to_target" && w[1] != "to_client") return error("drop: to_target or to_client");
    if (!parse_u64(w[2], bytes)) return error("drop: BYTES is not a number: " + w[2]);
    if (w[3] != "silence" && w[3] != "reset") return error("drop: silence or reset");
    proxy.drop_after(w[1] == "to_target" ? test::flow::to_target : test::flow::to_client, bytes,
                     w[3] == "reset" ? test::cut_mode::reset : test::cut_mode::silence);
  } else if (cmd == "target" && n == 2) {
    const auto colon = w[1].rfind(':');
    std::uint64_t port = 0;
    if (colon == std::string::npos || !parse_u64(w[1].substr(colon + 1), port) || port == 0 ||
        port > 65535) {
      return error("target: HOST:PORT");
    }
    try {
      proxy.set_target(w[1].substr(0, colon), static_cast<std::uint16_t>(port));
    } catch (const std::invalid_argument& e) {
      return error(e.what());
    }
  } else if (cmd == "stats" && n == 1) {
    const test::fault_proxy_stats st = proxy.stats();
    return {"ok accepted=" + std::to_string(st.accepted) + " open=" + std::to_string(st.open) +
                " cut=" + std::to_string(st.cut) + " to_target=" + std::to_string(st.to_target) +
                " to_client=" + std::to_string(st.to_client),
            false};
  } else {
    return error("unknown command or wrong arguments: " + std::string(line));
  }
  return {"ok", false};
}

}  // namespace warren::tools
