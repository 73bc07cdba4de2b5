#include "codec/error.h"

#include <string>

namespace warren::codec {
namespace {

class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "warren.codec"; }
  std::string message(int v) const override {
    switch (static_cast<errc>(v)) {
      case errc::ok:
        return "ok";
      case errc::need_more:
        return "need more input";
      case errc::bad_frame_end:
        return "frame-end octet is not 0xCE";
      case errc::frame_too_large:
        return "frame size exceeds the negotiated frame-max";
      case errc::unknown_frame_type:
        return "unknown frame type";
      case errc::bad_heartbeat:
        return "malformed heartbeat frame";
      case errc::truncated:
        return "field runs past the end of the frame payload";
      case errc::trailing_bytes:
        return "unexpected bytes after the last method argument";
      case errc::bad_field_type:
        return "unknown field-value type";
      case errc::table_too_deep:
        return "field table nesting too deep";
      case errc::table_too_large:
        return "field table too large";
      case errc::bad_content_header:
        return "malformed content header";
      case errc::unknown_method:
        return "unknown class or method id";
      case errc::unexpected_frame:
        return "unexpected frame";
      case errc::buffer_too_small:
        return "output buffer too small";
      case errc::string_too_long:
        return "short string longer than 255 octets";
      case errc::value_out_of_range:
        return "value out of range for its wire type";
    }
    return "unknown codec error";
  }
};

}  // namespace

const std::error_category& codec_category() noexcept {
  static const category instance;
  return instance;
}

std::uint16_t reply_code(errc e) noexcept {
  switch (e) {
    case errc::ok:
    case errc::need_more:
      return 0;
    case errc::bad_frame_end:
    case errc::frame_too_large:
    case errc::bad_heartbeat:
      return 501;
    case errc::unknown_frame_type:
    case errc::unexpected_frame:
      return 505;
    case errc::unknown_method:
      return 540;
    case errc::truncated:
    case errc::trailing_bytes:
    case errc::bad_field_type:
    case errc::table_too_deep:
    case errc::table_too_large:
    case errc::bad_content_header:
    case errc::buffer_too_small:
    case errc::string_too_long:
    case errc::value_out_of_range:
      return 502;
  }
  return 541;
}

}  // namespace warren::codec
