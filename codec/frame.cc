#include "codec/frame.h"

namespace warren::codec {

errc decode_frame(std::string_view in, std::uint32_t frame_max, frame_view& out,
                  std::size_t& consumed, std::uint32_t pre_tune_frame_max) noexcept {
  consumed = 0;
  if (in.size() < frame_header_size) return errc::need_more;
  const char* p = in.data();
  const auto type = static_cast<std::uint8_t>(p[0]);
  const std::uint16_t channel = reader::load_u16(p + 1);
  const std::uint32_t size = reader::load_u32(p + 3);

  switch (type) {
    case frame_method:
    case frame_header:
    case frame_body:
      break;
    case frame_heartbeat:
      if (channel != 0 || size != 0) return errc::bad_heartbeat;
      break;
    default:
      return errc::unknown_frame_type;
  }
  // 64-bit arithmetic: a frame_max below 8 must reject every payload rather than wrap.
  const std::uint64_t limit = effective_frame_max(frame_max, pre_tune_frame_max);
  if (std::uint64_t{size} + frame_overhead > limit) return errc::frame_too_large;
  // Compared against what remains rather than added to a pointer, so no overflow.
  if (in.size() - frame_header_size <= size) return errc::need_more;
  if (static_cast<std::uint8_t>(p[frame_header_size + size]) != frame_end) {
    return errc::bad_frame_end;
  }
  out.type = type;
  out.channel = channel;
  out.payload = std::string_view(p + frame_header_size, size);
  consumed = frame_header_size + size + 1;
  return errc::ok;
}

}  // namespace warren::codec
