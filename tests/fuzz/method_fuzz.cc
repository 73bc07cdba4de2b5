// Fuzzes the generated method decoders through dispatch_method. Any input must either decode or
// fail with an errc, never read out of bounds; whatever decodes must re-encode to exactly as
// many octets as it came from (decode accepts no slack) and decode again to an equal method.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <type_traits>

#include "codec/methods.h"

namespace {

using namespace warren::codec;

template <class T>
void check_reencodes(const T& m, std::size_t input_size) {
  std::string out;
  writer w(out);
  if (encode(m, w) != errc::ok) std::abort();
  w.finish();
  if (out.size() != encoded_size(m) || out.size() != input_size) std::abort();
  if (reader::load_u32(out.data()) != T::id) std::abort();
  T again;
  if (decode(std::string_view(out).substr(4), again) != errc::ok) std::abort();
  if (!(again == m)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const errc e = dispatch_method(in, [size](const auto& m) { check_reencodes(m, size); });
  // dispatch_method reports failures only through these; anything else is a bug.
  if (e != errc::ok && e != errc::truncated && e != errc::trailing_bytes &&
      e != errc::unknown_method) {
    std::abort();
  }
  return 0;
}
