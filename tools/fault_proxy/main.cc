// fault_proxy --target HOST:PORT: a TCP proxy with faults for benchmark drivers. Prints
// "listening 127.0.0.1:PORT", then reads commands from standard input (tools/fault_proxy/control.h)
// and answers each on one line; exits at "quit" or at the end of its input.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include "tests/support/fault_proxy.h"
#include "tools/fault_proxy/control.h"

int main(int argc, char** argv) {
  std::string target;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--target") == 0 && i + 1 < argc) {
      target = argv[++i];
    } else {
      std::cerr << "usage: fault_proxy --target HOST:PORT\n";
      return 2;
    }
  }
  const auto colon = target.rfind(':');
  if (colon == std::string::npos) {
    std::cerr << "fault_proxy: --target HOST:PORT is required\n";
    return 2;
  }
  try {
    const unsigned long port = std::stoul(target.substr(colon + 1));
    if (port == 0 || port > 65535) throw std::out_of_range("port");
    warren::test::fault_proxy proxy(target.substr(0, colon), static_cast<std::uint16_t>(port));
    std::cout << "listening " << proxy.address() << std::endl;
    for (std::string line; std::getline(std::cin, line);) {
      const auto reply = warren::tools::apply_command(proxy, line);
      std::cout << reply.text << std::endl;
      if (reply.quit) break;
    }
  } catch (const std::exception& e) {
    std::cerr << "fault_proxy: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
