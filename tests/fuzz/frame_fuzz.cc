// Fuzzes the frame layer and content headers. The first input octet picks a frame-max; the rest
// is one receive buffer walked by frame_decoder. Every frame handed out must lie inside the
// input and obey its frame-max and type rules, a frame must need more input at every shorter
// length, an error must not advance the decoder, and every content header that decodes must
// re-encode and decode to the same value (byte for byte unless it used a continuation word),
// and a publish_template with its properties must write encode_publish()'s octets. The same
// buffer is also given to decode_delivery.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "codec/content.h"
#include "codec/frame.h"
#include "codec/publish.h"

namespace {

using namespace warren::codec;

void check(bool ok) {
  if (!ok) std::abort();
}

constexpr std::uint32_t frame_max_choices[] = {0, 4096, 131072, 1,    7,        8,
                                               9, 16,   64,     1024, 1u << 20, 0xFFFFFFFFu};

bool is_frame_error(errc e) {
  return e == errc::bad_frame_end || e == errc::frame_too_large || e == errc::unknown_frame_type ||
         e == errc::bad_heartbeat;
}

// A publish_template built from decoded properties writes what encode_publish() writes, with the
// header payload itself as a body (split at frame-max 4096 when it is long).
void check_template(const basic_properties& p, std::string_view body) {
  basic_publish m;
  m.exchange = "ex";
  m.routing_key = "rk";
  publish_template t;
  const errc e = t.assign(3, m, p, 4096);
  std::string expected(publish_size(m, p, body.size(), 4096), '\0');
  std::size_t written = 0;
  check(encode_publish(expected.data(), expected.size(), written, 3, m, p, body, 4096) == e);
  if (e != errc::ok) return;
  std::string out(t.size(body.size()), '\0');
  check(t.encode(out.data(), out.size(), body, written) == errc::ok && written == out.size());
  check(out == expected);
}

void check_content_header(std::string_view payload) {
  content_header h;
  const errc e = decode(payload, h);
  if (e != errc::ok) {
    check(e == errc::truncated || e == errc::bad_content_header);
    return;
  }
  check(payload.size() >= encoded_size(h));
  std::string out;
  writer w(out);
  check(encode(h, w) == errc::ok);
  w.finish();
  check(out.size() == encoded_size(h));
  const bool continued = (reader::load_u16(payload.data() + 12) & 1) != 0;
  if (!continued) check(out == payload);
  content_header again;
  check(decode(out, again) == errc::ok && again == h);
  check_template(h.properties, payload);
}

// decode_delivery() as its contract describes it, one frame at a time through the public
// frame decoder and the generic method and content-header decoders: frame errors first, then
// the frame's type and channel, then its payload.
errc reference_delivery(std::string_view in, std::uint32_t frame_max, delivery_view& out,
                        std::size_t& consumed) {
  consumed = 0;
  frame_decoder dec(frame_max);
  dec.set_input(in);
  frame_view f;
  if (const errc e = dec.next(f); e != errc::ok) return e;
  if (f.type != frame_method || f.payload.size() < 4 ||
      reader::load_u32(f.payload.data()) != basic_deliver::id) {
    return errc::unexpected_frame;
  }
  if (const errc e = decode(f.payload.substr(4), out.method); e != errc::ok) return e;
  out.channel = f.channel;
  if (const errc e = dec.next(f); e != errc::ok) return e;
  if (f.type != frame_header || f.channel != out.channel) return errc::unexpected_frame;
  if (const errc e = decode(f.payload, out.header); e != errc::ok) return e;
  const std::size_t body_begin = dec.consumed();
  out.body = {};
  out.body_frame_count = 0;
  for (std::uint64_t left = out.header.body_size; left != 0;) {
    if (const errc e = dec.next(f); e != errc::ok) return e;
    if (f.type != frame_body || f.channel != out.channel || f.payload.size() > left) {
      return errc::unexpected_frame;
    }
    out.body = out.body_frame_count++ == 0 ? f.payload : std::string_view{};
    left -= f.payload.size();
  }
  out.body_frames = in.substr(body_begin, dec.consumed() - body_begin);
  consumed = dec.consumed();
  return errc::ok;
}

// Views compared by position as well as content: both must point into the same input.
bool same_view(std::string_view a, std::string_view b) {
  return a.data() == b.data() && a.size() == b.size();
}

void check_delivery(std::string_view in, std::uint32_t frame_max) {
  delivery_view d;
  std::size_t consumed = 0;
  const errc e = decode_delivery(in, frame_max, d, consumed);
  delivery_view r;
  std::size_t reference_consumed = 0;
  check(reference_delivery(in, frame_max, r, reference_consumed) == e);
  if (e != errc::ok) {
    check(consumed == 0);
    return;
  }
  check(consumed == reference_consumed && d.channel == r.channel && d.method == r.method &&
        d.header == r.header && same_view(d.method.consumer_tag, r.method.consumer_tag) &&
        same_view(d.method.exchange, r.method.exchange) &&
        same_view(d.method.routing_key, r.method.routing_key) &&
        same_view(d.header.properties.headers.raw, r.header.properties.headers.raw) &&
        same_view(d.body, r.body) && same_view(d.body_frames, r.body_frames) &&
        d.body_frame_count == r.body_frame_count);
  check(consumed <= in.size());
  std::string body(d.header.body_size, '\0');
  copy_body(d, body.data());
  // Gather the body again through the frame decoder.
  frame_decoder dec(frame_max);
  dec.set_input(d.body_frames);
  std::string expected;
  frame_view f;
  while (dec.next(f) == errc::ok) expected += f.payload;
  check(dec.consumed() == d.body_frames.size());
  check(body == expected);
  if (d.body_frame_count == 1) check(d.body == expected);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint32_t frame_max =
      frame_max_choices[data[0] % (sizeof frame_max_choices / sizeof frame_max_choices[0])];
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::uint64_t limit = effective_frame_max(frame_max);

  frame_decoder dec(frame_max);
  dec.set_input(in);
  frame_view f;
  errc e;
  bool first = true;
  while (true) {
    const std::size_t before = dec.consumed();
    e = dec.next(f);
    if (e != errc::ok) {
      check(dec.consumed() == before);
      break;
    }
    const std::size_t took = dec.consumed() - before;
    check(took == frame_overhead + f.payload.size());
    check(f.payload.data() == in.data() + before + frame_header_size);
    check(f.payload.size() + frame_overhead <= limit);
    check(f.type == frame_method || f.type == frame_header || f.type == frame_body ||
          f.type == frame_heartbeat);
    if (f.type == frame_heartbeat) check(f.channel == 0 && f.payload.empty());
    if (f.type == frame_header) check_content_header(f.payload);
    if (first) {
      // Every shorter prefix of a good frame only needs more.
      for (std::size_t n = 0; n < took; ++n) {
        frame_view g;
        std::size_t c = 1;
        check(decode_frame(in.substr(0, n), frame_max, g, c) == errc::need_more && c == 0);
      }
      first = false;
    }
  }
  check(e == errc::need_more || is_frame_error(e));
  if (e != errc::need_more) {
    frame_view g;
    check(dec.next(g) == e);
  }
  check_delivery(in, frame_max);
  return 0;
}
