// Codec micro-benchmarks: warren's codec against rabbitmq-c 0.11's in the same binary.
//
// Every row exists twice, warren_<row> and rabbitmq_c_<row>, with the same workload, so that
// bench/ratios.py can pair them. Rows named warren_* without a rabbitmq_c_* partner are extra
// views of warren (e.g. decoding with the headers table validated), printed without a ratio.
//
// What each rabbitmq-c row does, and why it is the fair counterpart, is in bench/RESULTS.md.
// In short: rabbitmq-c's own amqp_basic_publish / amqp_handle_input also do socket I/O and
// buffer management, so the rows call its exported codec functions (amqp_encode_method,
// amqp_encode_properties, amqp_decode_method, amqp_decode_properties, amqp_*_table) and frame
// them with the small frame writer/reader below, which does what rabbitmq-c's framing does.
#include <amqp.h>
#include <amqp_framing.h>
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "codec/content.h"
#include "codec/field_table.h"
#include "codec/frame.h"
#include "codec/publish.h"

namespace {

namespace wc = warren::codec;

constexpr std::uint16_t channel_id = 1;
constexpr std::uint32_t frame_max = 131072;  // RabbitMQ's default
constexpr std::string_view exchange = "amq.direct";
constexpr std::string_view routing_key = "orders.created";
constexpr std::string_view content_type = "application/json";
constexpr std::string_view consumer_tag = "amq.ctag-3fQ2kP0b8x9Yw1vZ";
constexpr std::string_view trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
constexpr std::int32_t retries = 3;

// ---------------------------------------------------------------------------------------------
// Big-endian helpers for the rabbitmq-c frame writer and reader (rabbitmq-c keeps its own
// amqp_e16/amqp_d32... private, so the benchmark supplies equivalents).

void store16(char* p, std::uint16_t v) {
  p[0] = static_cast<char>(v >> 8);
  p[1] = static_cast<char>(v);
}
void store32(char* p, std::uint32_t v) {
  v = __builtin_bswap32(v);
  std::memcpy(p, &v, 4);
}
void store64(char* p, std::uint64_t v) {
  v = __builtin_bswap64(v);
  std::memcpy(p, &v, 8);
}
std::uint16_t load16(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<std::uint16_t>((u[0] << 8) | u[1]);
}
std::uint32_t load32(const char* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return __builtin_bswap32(v);
}
std::uint64_t load64(const char* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return __builtin_bswap64(v);
}

amqp_bytes_t bytes_of(std::string_view s) {
  return {s.size(), const_cast<char*>(s.data())};
}

// ---------------------------------------------------------------------------------------------
// The message every publish/deliver row carries: content_type, delivery_mode and a headers
// table of two entries (a trace id string and a retry count).

wc::field_table warren_header_model() {
  return wc::field_table{
      {"x-trace-id", wc::field_value::long_string(std::string(trace_id))},
      {"x-retries", wc::field_value::i32(retries)},
  };
}

std::string warren_headers() {
  return wc::encode_table(warren_header_model());
}

wc::basic_properties warren_props(std::string_view headers) {
  wc::basic_properties p;
  p.set_content_type(content_type);
  p.set_delivery_mode(wc::basic_properties::persistent);
  p.set_headers(wc::table_view{headers});
  return p;
}

// Owns the entries an amqp_basic_properties_t points at.
struct rabbitmq_c_message {
  amqp_table_entry_t entries[2];
  amqp_basic_properties_t props{};

  rabbitmq_c_message() {
    entries[0].key = amqp_cstring_bytes("x-trace-id");
    entries[0].value.kind = AMQP_FIELD_KIND_UTF8;
    entries[0].value.value.bytes = bytes_of(trace_id);
    entries[1].key = amqp_cstring_bytes("x-retries");
    entries[1].value.kind = AMQP_FIELD_KIND_I32;
    entries[1].value.value.i32 = retries;
    props._flags =
        AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_HEADERS_FLAG;
    props.content_type = bytes_of(content_type);
    props.delivery_mode = 2;
    props.headers.num_entries = 2;
    props.headers.entries = entries;
  }
  rabbitmq_c_message(const rabbitmq_c_message&) = delete;
  rabbitmq_c_message& operator=(const rabbitmq_c_message&) = delete;
};

// Stops a row before timing when the two libraries do not agree on its bytes.
bool agreed(benchmark::State& s, bool agree) {
  if (!agree) s.SkipWithError("warren and rabbitmq-c disagree on these bytes");
  return agree;
}

void count(benchmark::State& s, std::size_t wire_bytes) {
  s.SetItemsProcessed(static_cast<std::int64_t>(s.iterations()));
  s.SetBytesProcessed(static_cast<std::int64_t>(s.iterations() * wire_bytes));
}

// ---------------------------------------------------------------------------------------------
// Encode basic.publish: method + content header + body frames into one buffer.

bool check_publishes(std::size_t body_size);

void warren_encode_publish(benchmark::State& s) {
  const std::string body(static_cast<std::size_t>(s.range(0)), 'b');
  const std::string headers = warren_headers();
  const wc::basic_properties props = warren_props(headers);
  const wc::basic_publish m{.exchange = exchange, .routing_key = routing_key};
  std::vector<char> out(wc::publish_size(m, props, body.size(), frame_max));
  if (!agreed(s, check_publishes(body.size()))) return;
  std::size_t written = 0;
  for (auto _ : s) {
    const wc::errc e =
        wc::encode_publish(out.data(), out.size(), written, channel_id, m, props, body, frame_max);
    benchmark::DoNotOptimize(e);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  if (written != out.size()) s.SkipWithError("encode_publish failed");
  count(s, out.size());
}

// What amqp_basic_publish() puts on the wire, built the way rabbitmq-c builds it: the method
// frame around amqp_encode_method() (as amqp_send_method_inner does), the header frame's class,
// weight and body size followed by amqp_encode_properties() (as amqp_send_frame_inner does),
// and the body cut into frame_max - 8 octet body frames. Returns the octets written, or a
// negative rabbitmq-c status.
long rabbitmq_c_encode_publish(char* out, std::size_t cap, std::uint16_t channel,
                               amqp_basic_publish_t* m, amqp_basic_properties_t* props,
                               amqp_bytes_t body, std::size_t frame_limit) {
  constexpr std::size_t header = 7;
  // Method frame: header · method id · arguments · frame end.
  if (cap < header + 4 + 1) return AMQP_STATUS_TABLE_TOO_BIG;
  int n = amqp_encode_method(AMQP_BASIC_PUBLISH_METHOD, m,
                             amqp_bytes_t{cap - header - 4 - 1, out + header + 4});
  if (n < 0) return n;
  out[0] = AMQP_FRAME_METHOD;
  store16(out + 1, channel);
  store32(out + 3, static_cast<std::uint32_t>(n + 4));
  store32(out + header, AMQP_BASIC_PUBLISH_METHOD);
  std::size_t pos = header + 4 + static_cast<std::size_t>(n);
  out[pos++] = static_cast<char>(AMQP_FRAME_END);

  // Header frame: header · class · weight · body size · flags and properties · frame end.
  char* h = out + pos;
  if (cap - pos < header + 12 + 1) return AMQP_STATUS_TABLE_TOO_BIG;
  n = amqp_encode_properties(AMQP_BASIC_CLASS, props,
                             amqp_bytes_t{cap - pos - header - 12 - 1, h + header + 12});
  if (n < 0) return n;
  h[0] = AMQP_FRAME_HEADER;
  store16(h + 1, channel);
  store32(h + 3, static_cast<std::uint32_t>(n + 12));
  store16(h + header, AMQP_BASIC_CLASS);
  store16(h + header + 2, 0);
  store64(h + header + 4, body.len);
  pos += header + 12 + static_cast<std::size_t>(n);
  out[pos++] = static_cast<char>(AMQP_FRAME_END);

  // Body frames.
  const std::size_t chunk_max = frame_limit - header - 1;
  for (std::size_t done = 0; done < body.len;) {
    const std::size_t chunk = std::min(chunk_max, body.len - done);
    if (cap - pos < header + chunk + 1) return AMQP_STATUS_TABLE_TOO_BIG;
    out[pos] = AMQP_FRAME_BODY;
    store16(out + pos + 1, channel);
    store32(out + pos + 3, static_cast<std::uint32_t>(chunk));
    std::memcpy(out + pos + header, static_cast<const char*>(body.bytes) + done, chunk);
    pos += header + chunk;
    out[pos++] = static_cast<char>(AMQP_FRAME_END);
    done += chunk;
  }
  return static_cast<long>(pos);
}

// warren's encode_publish() octets for the benchmark message with this body (empty on error).
std::string warren_publish_bytes(std::string_view body) {
  const std::string headers = warren_headers();
  const wc::basic_properties props = warren_props(headers);
  const wc::basic_publish m{.exchange = exchange, .routing_key = routing_key};
  std::string w(wc::publish_size(m, props, body.size(), frame_max), '\0');
  std::size_t written = 0;
  if (wc::encode_publish(w.data(), w.size(), written, channel_id, m, props, body, frame_max) !=
      wc::errc::ok) {
    w.clear();
  }
  return w;
}

// The template must write encode_publish()'s octets.
bool check_template(const wc::publish_template& t, std::string_view body) {
  std::string out(t.size(body.size()), '\0');
  std::size_t written = 0;
  return t.encode(out.data(), out.size(), body, written) == wc::errc::ok &&
         out == warren_publish_bytes(body);
}

// Both encoders must write the same octets for the same publish before either is timed.
bool check_publishes(std::size_t body_size) {
  const std::string body(body_size, 'b');
  const std::string w = warren_publish_bytes(body);
  if (w.empty()) return false;
  rabbitmq_c_message msg;
  amqp_basic_publish_t rm{};
  rm.exchange = bytes_of(exchange);
  rm.routing_key = bytes_of(routing_key);
  std::string r(body_size + 4096, '\0');
  const long n = rabbitmq_c_encode_publish(r.data(), r.size(), channel_id, &rm, &msg.props,
                                           bytes_of(body), frame_max);
  return n > 0 && std::string_view(r).substr(0, static_cast<std::size_t>(n)) == w;
}

void rabbitmq_c_encode_publish(benchmark::State& s) {
  std::string body(static_cast<std::size_t>(s.range(0)), 'b');
  rabbitmq_c_message msg;
  amqp_basic_publish_t m{};
  m.exchange = bytes_of(exchange);
  m.routing_key = bytes_of(routing_key);
  std::vector<char> out(body.size() + 4096);
  if (!agreed(s, check_publishes(body.size()))) return;
  long written = 0;
  for (auto _ : s) {
    written = rabbitmq_c_encode_publish(out.data(), out.size(), channel_id, &m, &msg.props,
                                        bytes_of(body), frame_max);
    benchmark::DoNotOptimize(written);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  if (written <= 0) {
    s.SkipWithError("rabbitmq-c encode failed");
    return;
  }
  count(s, static_cast<std::size_t>(written));
}

BENCHMARK(warren_encode_publish)->Arg(16)->Arg(1024)->Arg(65536);
BENCHMARK(rabbitmq_c_encode_publish)->Arg(16)->Arg(1024)->Arg(65536);

// encode_publish when the headers come as a model built per message: the table is encoded
// first (as rabbitmq-c always does from its amqp_table_t), then the publish.
void warren_encode_publish_with_table(benchmark::State& s) {
  const std::string body(static_cast<std::size_t>(s.range(0)), 'b');
  const wc::field_table model = warren_header_model();
  std::string headers = warren_headers();
  const wc::basic_publish m{.exchange = exchange, .routing_key = routing_key};
  std::vector<char> out(wc::publish_size(m, warren_props(headers), body.size(), frame_max));
  std::vector<char> table(headers.size());
  if (!agreed(s, check_publishes(body.size()))) return;
  std::size_t written = 0;
  for (auto _ : s) {
    wc::writer w(table.data(), table.size());
    wc::errc e = wc::encode_table_entries(model, w);
    if (e == wc::errc::ok) {
      const wc::basic_properties props = warren_props(std::string_view(table.data(), w.size()));
      e = wc::encode_publish(out.data(), out.size(), written, channel_id, m, props, body,
                             frame_max);
    }
    benchmark::DoNotOptimize(e);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  if (written != out.size()) s.SkipWithError("encode_publish failed");
  count(s, out.size());
}

BENCHMARK(warren_encode_publish_with_table)->Arg(16)->Arg(1024);

// The same publish through a publish_template built once: per message, the cached method and
// header frames are copied, the body size patched and the body frames written.
void warren_publish_template(benchmark::State& s) {
  const std::string body(static_cast<std::size_t>(s.range(0)), 'b');
  const std::string headers = warren_headers();
  const wc::basic_publish m{.exchange = exchange, .routing_key = routing_key};
  wc::publish_template t;
  if (t.assign(channel_id, m, warren_props(headers), frame_max) != wc::errc::ok) {
    s.SkipWithError("publish_template::assign failed");
    return;
  }
  std::vector<char> out(t.size(body.size()));
  if (!agreed(s, check_publishes(body.size()) && check_template(t, body))) return;
  std::size_t written = 0;
  for (auto _ : s) {
    const wc::errc e = t.encode(out.data(), out.size(), body, written);
    benchmark::DoNotOptimize(e);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  if (written != out.size()) s.SkipWithError("publish_template::encode failed");
  count(s, out.size());
}

// Not rabbitmq-c's API (it has no such cache) but what a rabbitmq-c user could hand-roll on top
// of it: its method and header frames encoded once by rabbitmq-c_encode_publish(), then per
// message the same copy, patch and body frames as warren's template. Shows how much of the
// template's gain is the caching rather than the codec.
void rabbitmq_c_hand_cached_head(benchmark::State& s) {
  const std::string body(static_cast<std::size_t>(s.range(0)), 'b');
  rabbitmq_c_message msg;
  amqp_basic_publish_t m{};
  m.exchange = bytes_of(exchange);
  m.routing_key = bytes_of(routing_key);
  std::string head(4096, '\0');
  const long head_size = rabbitmq_c_encode_publish(head.data(), head.size(), channel_id, &m,
                                                   &msg.props, amqp_empty_bytes, frame_max);
  if (head_size <= 0) {
    s.SkipWithError("rabbitmq-c encode failed");
    return;
  }
  head.resize(static_cast<std::size_t>(head_size));
  // The body size sits after the method frame, the header frame's header, class and weight.
  const std::size_t body_size_at = 7 + load32(head.data() + 3) + 1 + 7 + 4;
  std::vector<char> out(body.size() + head.size() + 4096);
  if (!agreed(s, check_publishes(body.size()))) return;
  std::size_t pos = 0;
  for (auto _ : s) {
    std::memcpy(out.data(), head.data(), head.size());
    store64(out.data() + body_size_at, body.size());
    pos = head.size();
    const std::size_t chunk_max = frame_max - 8;
    for (std::size_t done = 0; done < body.size();) {
      const std::size_t chunk = std::min(chunk_max, body.size() - done);
      out[pos] = AMQP_FRAME_BODY;
      store16(out.data() + pos + 1, channel_id);
      store32(out.data() + pos + 3, static_cast<std::uint32_t>(chunk));
      std::memcpy(out.data() + pos + 7, body.data() + done, chunk);
      pos += 7 + chunk;
      out[pos++] = static_cast<char>(AMQP_FRAME_END);
      done += chunk;
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  // Same octets as warren's encode_publish for this message.
  const std::string w = warren_publish_bytes(body);
  if (std::string_view(out.data(), pos) != w) s.SkipWithError("hand-cached head differs");
  count(s, pos);
}

BENCHMARK(warren_publish_template)->Arg(16)->Arg(1024)->Arg(65536);
BENCHMARK(rabbitmq_c_hand_cached_head)->Arg(16)->Arg(1024)->Arg(65536);

// ---------------------------------------------------------------------------------------------
// Decode basic.deliver + content header + body from a ready buffer.

// The three frames of one delivery, as RabbitMQ sends them (encoded with warren; the
// encode_publish rows above check that both codecs agree on the publish side, and
// check_deliveries() below that both decode these bytes to the same values).
std::string delivery_bytes(std::size_t body_size) {
  const std::string headers = warren_headers();
  std::string out;
  wc::writer w(out);
  const wc::basic_deliver m{.consumer_tag = consumer_tag,
                            .delivery_tag = 4711,
                            .redelivered = false,
                            .exchange = exchange,
                            .routing_key = routing_key};
  (void)wc::encode_method_frame(channel_id, m, w);
  const wc::content_header h{.body_size = body_size, .properties = warren_props(headers)};
  const std::size_t header_payload = wc::encoded_size(h);
  const std::size_t at = w.reserve(wc::frame_header_size);
  (void)wc::encode(h, w);
  w.u8(wc::frame_end);
  w.u8(wc::frame_body);
  w.u16(channel_id);
  w.u32(static_cast<std::uint32_t>(body_size));
  w.bytes(std::string(body_size, 'd'));
  w.u8(wc::frame_end);
  w.finish();
  wc::write_frame_header(out.data() + at, wc::frame_header, channel_id,
                         static_cast<std::uint32_t>(header_payload));
  return out;
}

struct rabbitmq_c_delivery {
  amqp_basic_deliver_t* method = nullptr;
  amqp_basic_properties_t* props = nullptr;
  std::uint64_t body_size = 0;
  amqp_bytes_t body{};  // the body when it came in one frame
};

struct raw_frame {
  std::uint8_t type = 0;
  std::uint16_t channel = 0;
  amqp_bytes_t payload{};
};

// Reads the frame at p as amqp_handle_input() does: header, size against frame-max, payload,
// frame-end octet. Returns the position after it, or nullptr.
const char* next_frame(const char* p, const char* end, raw_frame& f) {
  if (end - p < 8) return nullptr;
  const std::uint32_t size = load32(p + 3);
  if (size > frame_max - 8 || static_cast<std::size_t>(end - p) < size + 8u) return nullptr;
  if (static_cast<std::uint8_t>(p[7 + size]) != AMQP_FRAME_END) return nullptr;
  f.type = static_cast<std::uint8_t>(p[0]);
  f.channel = load16(p + 1);
  f.payload = {size, const_cast<char*>(p + 7)};
  return p + 8 + size;
}

// The decode half of amqp_handle_input() for a method, header and body frames, with the
// pool in the role of rabbitmq-c's per-channel decoding pool. Returns an amqp_status_enum.
int rabbitmq_c_decode_delivery(std::string_view in, amqp_pool_t* pool, rabbitmq_c_delivery& d) {
  const char* p = in.data();
  const char* const end = p + in.size();
  raw_frame f;
  if ((p = next_frame(p, end, f)) == nullptr) return AMQP_STATUS_BAD_AMQP_DATA;
  if (f.type != AMQP_FRAME_METHOD || f.payload.len < 4) return AMQP_STATUS_BAD_AMQP_DATA;
  const char* payload = static_cast<const char*>(f.payload.bytes);
  const amqp_method_number_t id = load32(payload);
  if (id != AMQP_BASIC_DELIVER_METHOD) return AMQP_STATUS_UNEXPECTED_STATE;
  void* decoded = nullptr;
  int rc =
      amqp_decode_method(id, pool, {f.payload.len - 4, const_cast<char*>(payload + 4)}, &decoded);
  if (rc != AMQP_STATUS_OK) return rc;
  d.method = static_cast<amqp_basic_deliver_t*>(decoded);
  const std::uint16_t channel = f.channel;

  if ((p = next_frame(p, end, f)) == nullptr) return AMQP_STATUS_BAD_AMQP_DATA;
  if (f.type != AMQP_FRAME_HEADER || f.channel != channel || f.payload.len < 12) {
    return AMQP_STATUS_BAD_AMQP_DATA;
  }
  payload = static_cast<const char*>(f.payload.bytes);
  d.body_size = load64(payload + 4);
  rc = amqp_decode_properties(load16(payload), pool,
                              {f.payload.len - 12, const_cast<char*>(payload + 12)}, &decoded);
  if (rc != AMQP_STATUS_OK) return rc;
  d.props = static_cast<amqp_basic_properties_t*>(decoded);

  d.body = {};
  for (std::uint64_t left = d.body_size; left != 0;) {
    if ((p = next_frame(p, end, f)) == nullptr) return AMQP_STATUS_BAD_AMQP_DATA;
    if (f.type != AMQP_FRAME_BODY || f.channel != channel || f.payload.len > left) {
      return AMQP_STATUS_BAD_AMQP_DATA;
    }
    d.body = left == d.body_size ? f.payload : amqp_empty_bytes;
    left -= f.payload.len;
  }
  return AMQP_STATUS_OK;
}

std::string_view view(amqp_bytes_t b) {
  return {static_cast<const char*>(b.bytes), b.len};
}

// Both decoders must read the same delivery out of the same bytes before either is timed.
bool check_deliveries(std::string_view in, std::size_t body_size) {
  wc::delivery_view w;
  std::size_t consumed = 0;
  if (wc::decode_delivery(in, frame_max, w, consumed) != wc::errc::ok) return false;
  amqp_pool_t pool;
  init_amqp_pool(&pool, 4096);
  rabbitmq_c_delivery r;
  const bool ok =
      rabbitmq_c_decode_delivery(in, &pool, r) == AMQP_STATUS_OK && consumed == in.size() &&
      w.method.delivery_tag == 4711 && r.method->delivery_tag == 4711 &&
      w.method.consumer_tag == consumer_tag && view(r.method->consumer_tag) == consumer_tag &&
      w.method.routing_key == routing_key && view(r.method->routing_key) == routing_key &&
      w.header.body_size == body_size && r.body_size == body_size && w.body.size() == body_size &&
      r.body.len == body_size && w.header.properties.content_type == content_type &&
      view(r.props->content_type) == content_type && r.props->headers.num_entries == 2 &&
      view(r.props->headers.entries[0].value.value.bytes) == trace_id &&
      wc::validate_table(w.header.properties.headers.raw) == wc::errc::ok;
  empty_amqp_pool(&pool);
  return ok;
}

// decode_delivery() plus validate_table() over the headers: the same guarantee rabbitmq-c's
// decode gives (every octet of the delivery, headers table included, is well-formed) and the
// same access afterwards (warren through a table_cursor, rabbitmq-c through its entries).
wc::errc warren_decode_checked(std::string_view in, wc::delivery_view& d) {
  std::size_t consumed = 0;
  wc::errc e = wc::decode_delivery(in, frame_max, d, consumed);
  if (e == wc::errc::ok) e = wc::validate_table(d.header.properties.headers.raw);
  return e;
}

void warren_decode_deliver(benchmark::State& s) {
  const auto body_size = static_cast<std::size_t>(s.range(0));
  const std::string in = delivery_bytes(body_size);
  if (!agreed(s, check_deliveries(in, body_size))) return;
  // One view for all iterations, as a receive loop keeps one: decode_delivery() sets every
  // member, and constructing a fresh 328-octet view per call is measured separately below.
  wc::delivery_view d;
  for (auto _ : s) {
    const wc::errc e = warren_decode_checked(in, d);
    benchmark::DoNotOptimize(e);
    benchmark::DoNotOptimize(d);
  }
  count(s, in.size());
}

// As above with a default-constructed view per call (the compiler clears it with `rep stos`).
void warren_decode_deliver_fresh_view(benchmark::State& s) {
  const std::string in = delivery_bytes(static_cast<std::size_t>(s.range(0)));
  for (auto _ : s) {
    wc::delivery_view d;
    const wc::errc e = warren_decode_checked(in, d);
    benchmark::DoNotOptimize(e);
    benchmark::DoNotOptimize(d);
  }
  count(s, in.size());
}

// decode_delivery() alone: the headers table stays a bounds-checked view whose entries are
// checked only when read (warren's receive path). Less work than rabbitmq-c's row, so no ratio.
void warren_decode_deliver_headers_unchecked(benchmark::State& s) {
  const std::string in = delivery_bytes(static_cast<std::size_t>(s.range(0)));
  wc::delivery_view d;
  for (auto _ : s) {
    std::size_t consumed = 0;
    const wc::errc e = wc::decode_delivery(in, frame_max, d, consumed);
    benchmark::DoNotOptimize(e);
    benchmark::DoNotOptimize(d);
  }
  count(s, in.size());
}

void rabbitmq_c_decode_deliver(benchmark::State& s) {
  const auto body_size = static_cast<std::size_t>(s.range(0));
  const std::string in = delivery_bytes(body_size);
  if (!agreed(s, check_deliveries(in, body_size))) return;
  amqp_pool_t pool;
  // rabbitmq-c's decoding pools use the negotiated frame-max as their page size.
  init_amqp_pool(&pool, frame_max);
  for (auto _ : s) {
    rabbitmq_c_delivery d;
    const int rc = rabbitmq_c_decode_delivery(in, &pool, d);
    benchmark::DoNotOptimize(rc);
    benchmark::DoNotOptimize(d);
    recycle_amqp_pool(&pool);
  }
  empty_amqp_pool(&pool);
  count(s, in.size());
}

BENCHMARK(warren_decode_deliver)->Arg(16)->Arg(1024);
BENCHMARK(rabbitmq_c_decode_deliver)->Arg(16)->Arg(1024);
BENCHMARK(warren_decode_deliver_fresh_view)->Arg(16);
BENCHMARK(warren_decode_deliver_headers_unchecked)->Arg(16)->Arg(1024);

// ---------------------------------------------------------------------------------------------
// A 10-entry table of mixed types: encode from each library's model, decode into it.

wc::field_table warren_table() {
  using v = wc::field_value;
  return {
      {"enabled", v::boolean(true)},
      {"tiny", v::i8(-5)},
      {"port", v::i16(5672)},
      {"offset", v::i32(-100000)},
      {"big", v::i64(std::int64_t{1} << 40)},
      {"ratio", v::f64(3.25)},
      {"price", v::decimal(2, 12345)},
      {"created", v::timestamp(1700000000)},
      {"name", v::long_string("warren benchmark table value")},
      {"ids", v::array({v::i32(1), v::i32(2), v::i32(3)})},
  };
}

// The same table as rabbitmq-c's model; owns its entries.
struct rabbitmq_c_table {
  amqp_field_value_t ids[3];
  amqp_table_entry_t entries[10];
  amqp_table_t table{10, entries};

  rabbitmq_c_table() {
    for (int i = 0; i < 3; ++i) {
      ids[i].kind = AMQP_FIELD_KIND_I32;
      ids[i].value.i32 = i + 1;
    }
    auto set = [&](int i, const char* key, std::uint8_t kind) -> amqp_field_value_t& {
      entries[i].key = amqp_cstring_bytes(key);
      entries[i].value.kind = kind;
      return entries[i].value;
    };
    set(0, "enabled", AMQP_FIELD_KIND_BOOLEAN).value.boolean = 1;
    set(1, "tiny", AMQP_FIELD_KIND_I8).value.i8 = -5;
    set(2, "port", AMQP_FIELD_KIND_I16).value.i16 = 5672;
    set(3, "offset", AMQP_FIELD_KIND_I32).value.i32 = -100000;
    set(4, "big", AMQP_FIELD_KIND_I64).value.i64 = std::int64_t{1} << 40;
    set(5, "ratio", AMQP_FIELD_KIND_F64).value.f64 = 3.25;
    set(6, "price", AMQP_FIELD_KIND_DECIMAL).value.decimal = {2, 12345};
    set(7, "created", AMQP_FIELD_KIND_TIMESTAMP).value.u64 = 1700000000;
    set(8, "name", AMQP_FIELD_KIND_UTF8).value.bytes =
        amqp_cstring_bytes("warren benchmark table value");
    set(9, "ids", AMQP_FIELD_KIND_ARRAY).value.array = {3, ids};
  }
  rabbitmq_c_table(const rabbitmq_c_table&) = delete;
  rabbitmq_c_table& operator=(const rabbitmq_c_table&) = delete;
};

// The table with its 4-octet length, as both encoders write it; checked to be the same octets.
bool encoded_tables(std::string& warren_bytes) {
  wc::errc e = wc::errc::ok;
  const std::string entries = wc::encode_table(warren_table(), &e);
  warren_bytes.assign(4, '\0');
  store32(warren_bytes.data(), static_cast<std::uint32_t>(entries.size()));
  warren_bytes += entries;
  rabbitmq_c_table t;
  std::string r(1024, '\0');
  std::size_t offset = 0;
  if (e != wc::errc::ok ||
      amqp_encode_table(amqp_bytes_t{r.size(), r.data()}, &t.table, &offset) != AMQP_STATUS_OK) {
    return false;
  }
  r.resize(offset);
  return r == warren_bytes;
}

void warren_encode_table(benchmark::State& s) {
  const wc::field_table t = warren_table();
  std::string expected;
  if (!agreed(s, encoded_tables(expected))) return;
  std::vector<char> out(1024);
  for (auto _ : s) {
    wc::writer w(out.data(), out.size());
    const wc::errc e = wc::encode_table(t, w);
    benchmark::DoNotOptimize(e);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  count(s, expected.size());
}

void rabbitmq_c_encode_table(benchmark::State& s) {
  rabbitmq_c_table t;
  std::string expected;
  if (!agreed(s, encoded_tables(expected))) return;
  std::vector<char> out(1024);
  for (auto _ : s) {
    std::size_t offset = 0;
    const int rc = amqp_encode_table(amqp_bytes_t{out.size(), out.data()}, &t.table, &offset);
    benchmark::DoNotOptimize(rc);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  count(s, expected.size());
}

void warren_decode_table(benchmark::State& s) {
  std::string in;
  if (!agreed(s, encoded_tables(in))) return;
  const wc::table_view entries{std::string_view(in).substr(4)};
  wc::field_table check;
  if (wc::decode_table(entries, check) != wc::errc::ok || check != warren_table()) {
    s.SkipWithError("decode_table does not round-trip");
    return;
  }
  for (auto _ : s) {
    wc::field_table t;
    const wc::errc e = wc::decode_table(entries, t);
    benchmark::DoNotOptimize(e);
    benchmark::DoNotOptimize(t);
  }
  count(s, in.size());
}

// The same decode into warren's non-owning model: a decoded_table reused across iterations (as
// rabbitmq-c's pool is recycled), every value decoded, names and strings as views into the
// input, nested entries in the same object. Checked against the owning model first.
void warren_decoded_table(benchmark::State& s) {
  std::string in;
  if (!agreed(s, encoded_tables(in))) return;
  const wc::table_view entries{std::string_view(in).substr(4)};
  wc::decoded_table t;
  if (t.decode(entries) != wc::errc::ok || t.to_field_table() != warren_table()) {
    s.SkipWithError("decoded_table does not round-trip");
    return;
  }
  for (auto _ : s) {
    const wc::errc e = t.decode(entries);
    benchmark::DoNotOptimize(e);
    benchmark::DoNotOptimize(t.entries().data());
    benchmark::ClobberMemory();
  }
  count(s, in.size());
}

// Zero-copy access: validate the table, then walk its entries without building a model.
void warren_walk_table(benchmark::State& s) {
  std::string in;
  if (!agreed(s, encoded_tables(in))) return;
  const wc::table_view entries{std::string_view(in).substr(4)};
  for (auto _ : s) {
    wc::errc e = wc::validate_table(entries.raw);
    std::size_t n = 0;
    wc::table_cursor c(entries);
    for (wc::entry_view ev; c.next(ev);) {
      benchmark::DoNotOptimize(ev);
      ++n;
    }
    benchmark::DoNotOptimize(e);
    benchmark::DoNotOptimize(n);
  }
  count(s, in.size());
}

void rabbitmq_c_decode_table(benchmark::State& s) {
  std::string in;
  if (!agreed(s, encoded_tables(in))) return;
  amqp_pool_t pool;
  init_amqp_pool(&pool, 4096);
  for (auto _ : s) {
    amqp_table_t t;
    std::size_t offset = 0;
    const int rc = amqp_decode_table(bytes_of(in), &pool, &t, &offset);
    benchmark::DoNotOptimize(rc);
    benchmark::DoNotOptimize(t);
    recycle_amqp_pool(&pool);
  }
  empty_amqp_pool(&pool);
  count(s, in.size());
}

BENCHMARK(warren_encode_table);
BENCHMARK(rabbitmq_c_encode_table);
BENCHMARK(warren_decode_table);
BENCHMARK(rabbitmq_c_decode_table);
BENCHMARK(warren_decoded_table);
BENCHMARK(warren_walk_table);

}  // namespace
