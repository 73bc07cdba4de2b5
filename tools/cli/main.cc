// The `warren` command line tool; see tools/cli/cli.h.
#include <iostream>
#include <string>
#include <vector>

#include "tools/cli/cli.h"

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  const std::vector<std::string> args(argv + 1, argv + argc);
  return warren::cli::run(args, std::cin, std::cout, std::cerr);
}
