// A main() for fuzz targets in normal (non-libFuzzer) builds: runs LLVMFuzzerTestOneInput once over
// every file named on the command line, and over every regular file below each directory named
// (in sorted order, so runs are reproducible). This is how the seed corpora and any crash
// reproducer are replayed by gcc builds and under --config=asan|ubsan.
//
// Exit status: 0 if at least one input ran and every path could be read; 1 otherwise (an empty
// corpus is an error: a replay that runs nothing proves nothing). A crash in the target is the
// target's own (abort, sanitizer report). Arguments starting with '-' are libFuzzer flags and are
// ignored, so one command line works for both builds.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

namespace {

namespace fs = std::filesystem;

bool run_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    return false;
  }
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // An exactly-sized heap copy, so a sanitizer flags any read past the input's end.
  std::unique_ptr<std::uint8_t[]> copy(new std::uint8_t[bytes.size()]);
  std::copy(bytes.begin(), bytes.end(), copy.get());
  LLVMFuzzerTestOneInput(copy.get(), bytes.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  std::size_t ran = 0;
  bool ok = true;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.starts_with("-")) continue;
    std::error_code ec;
    if (fs::is_directory(arg, ec)) {
      std::vector<fs::path> files;
      for (const auto& entry : fs::recursive_directory_iterator(arg, ec)) {
        if (entry.is_regular_file()) files.push_back(entry.path());
      }
      if (ec) {
        std::fprintf(stderr, "cannot list %s: %s\n", arg.c_str(), ec.message().c_str());
        ok = false;
      }
      std::sort(files.begin(), files.end());
      for (const auto& f : files) ran += run_file(f) ? 1 : (ok = false, 0);
    } else {
      ran += run_file(arg) ? 1 : (ok = false, 0);
    }
  }
  std::string self = fs::path(argv[0]).filename().string();
  std::fprintf(stderr, "%s: ran %zu inputs\n", self.c_str(), ran);
  if (ran == 0) {
    std::fprintf(stderr, "usage: %s FILE_OR_DIR... (no input ran)\n", self.c_str());
    return 1;
  }
  return ok ? 0 : 1;
}
