#include "codec/methods.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace warren::codec {
namespace {

// A literal's bytes without its terminating NUL; the golden payloads contain NULs.
template <std::size_t N>
constexpr std::string_view bytes(const char (&a)[N]) {
  return {a, N - 1};
}

std::string hex(std::string_view s) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
    out += ' ';
  }
  return out;
}

std::string encode_to_string(const auto& m) {
  std::string out;
  writer w(out);
  EXPECT_EQ(encode(m, w), errc::ok);
  w.finish();
  return out;
}

// Decodes `payload` through dispatch_method and returns the method if it had type T.
template <class T>
std::optional<T> dispatch_as(std::string_view payload, errc* result = nullptr) {
  std::optional<T> got;
  errc e = dispatch_method(payload, [&](const auto& m) {
    if constexpr (std::is_same_v<std::remove_cvref_t<decltype(m)>, T>) got = m;
  });
  if (result != nullptr) *result = e;
  return got;
}

// The golden payloads below are written out by hand from the spec (field order, domains, bit
// packing), not produced by the encoder.

constexpr char start_ok_bytes[] =
    "\x00\x0a"                        // class-id 10 connection
    "\x00\x0b"                        // method-id 11 start-ok
    "\x00\x00\x00\x13"                // client-properties: table of 19 octets
    "\x07product"                     //   name "product"
    "S"                               //   type long string
    "\x00\x00\x00\x06warren"          //   value "warren"
    "\x05PLAIN"                       // mechanism shortstr "PLAIN"
    "\x00\x00\x00\x0c\0guest\0guest"  // response longstr "\0guest\0guest"
    "\x05"
    "en_US";  // locale shortstr "en_US"

constexpr char publish_bytes[] =
    "\x00\x3c"  // class-id 60 basic
    "\x00\x28"  // method-id 40 publish
    "\x00\x00"  // ticket 0
    "\x01x"     // exchange "x"
    "\x02rk"    // routing-key "rk"
    "\x01";     // bits: mandatory (bit 0) set, immediate (bit 1) clear

constexpr char deliver_bytes[] =
    "\x00\x3c"                          // class-id 60 basic
    "\x00\x3c"                          // method-id 60 deliver
    "\x04"                              // consumer-tag length 4
    "ctag"                              // consumer-tag "ctag"
    "\x00\x00\x00\x01\x00\x00\x00\x02"  // delivery-tag 0x100000002
    "\x01"                              // bits: redelivered (bit 0) set
    "\x02"
    "ex"       // exchange "ex"
    "\x02rk";  // routing-key "rk"

constexpr char ack_bytes[] =
    "\x00\x3c"                          // class-id 60 basic
    "\x00\x50"                          // method-id 80 ack
    "\x00\x00\x00\x00\x00\x00\x00\x2a"  // delivery-tag 42
    "\x01";                             // bits: multiple (bit 0) set

constexpr char queue_declare_bytes[] =
    "\x00\x32"  // class-id 50 queue
    "\x00\x0a"  // method-id 10 declare
    "\x00\x00"  // ticket 0
    "\x01q"     // queue "q"
    "\x16"      // bits: passive 0 (bit 0), durable 1 (bit 1), exclusive 1 (bit 2), auto-delete 0
                // (bit 3), nowait 1 (bit 4) = 0b10110
    "\x00\x00\x00\x00";  // arguments: empty table

constexpr char nack_bytes[] =
    "\x00\x3c"                          // class-id 60 basic
    "\x00\x78"                          // method-id 120 nack
    "\x00\x00\x00\x00\x00\x00\x01\x00"  // delivery-tag 256
    "\x02";                             // bits: multiple (bit 0) clear, requeue (bit 1) set

constexpr char nack_multiple_bytes[] =
    "\x00\x3c"                          // class-id 60 basic
    "\x00\x78"                          // method-id 120 nack
    "\x00\x00\x00\x00\x00\x00\x00\x07"  // delivery-tag 7
    "\x01";                             // bits: multiple (bit 0) set, requeue (bit 1) clear

const connection_start_ok golden_start_ok{
    .client_properties = {bytes("\x07productS\x00\x00\x00\x06warren")},
    .mechanism = "PLAIN",
    .response = bytes("\0guest\0guest"),
    .locale = "en_US",
};
const basic_publish golden_publish{.exchange = "x", .routing_key = "rk", .mandatory = true};
const basic_deliver golden_deliver{.consumer_tag = "ctag",
                                   .delivery_tag = 0x100000002ull,
                                   .redelivered = true,
                                   .exchange = "ex",
                                   .routing_key = "rk"};
const basic_ack golden_ack{.delivery_tag = 42, .multiple = true};
const queue_declare golden_queue_declare{
    .queue = "q", .passive = false, .durable = true, .exclusive = true, .nowait = true};
const basic_nack golden_nack{.delivery_tag = 256, .multiple = false, .requeue = true};
const basic_nack golden_nack_multiple{.delivery_tag = 7, .multiple = true, .requeue = false};

template <class T>
void expect_golden(const T& m, std::string_view golden) {
  SCOPED_TRACE(T::name);
  EXPECT_EQ(encoded_size(m), golden.size());
  EXPECT_EQ(hex(encode_to_string(m)), hex(golden));
  errc e;
  std::optional<T> got = dispatch_as<T>(golden, &e);
  EXPECT_EQ(e, errc::ok);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, m);
}

TEST(methods, connection_start_ok_matches_hand_encoded_bytes) {
  expect_golden(golden_start_ok, bytes(start_ok_bytes));
}

TEST(methods, basic_publish_matches_hand_encoded_bytes) {
  expect_golden(golden_publish, bytes(publish_bytes));
}

TEST(methods, basic_deliver_matches_hand_encoded_bytes) {
  expect_golden(golden_deliver, bytes(deliver_bytes));
}

TEST(methods, basic_ack_with_multiple_matches_hand_encoded_bytes) {
  expect_golden(golden_ack, bytes(ack_bytes));
}

TEST(methods, queue_declare_packs_bits_least_significant_first) {
  expect_golden(golden_queue_declare, bytes(queue_declare_bytes));
}

TEST(methods, basic_nack_packs_its_two_bits_into_one_octet) {
  expect_golden(golden_nack, bytes(nack_bytes));
  expect_golden(golden_nack_multiple, bytes(nack_multiple_bytes));
}

TEST(methods, decoded_strings_are_views_into_the_input) {
  const std::string payload(bytes(deliver_bytes));
  std::optional<basic_deliver> got = dispatch_as<basic_deliver>(payload);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->consumer_tag.data(), payload.data() + 5);
  EXPECT_EQ(got->routing_key.data(), payload.data() + payload.size() - 2);
}

const std::array<std::string_view, 7> all_golden = {
    bytes(start_ok_bytes),      bytes(publish_bytes), bytes(deliver_bytes),       bytes(ack_bytes),
    bytes(queue_declare_bytes), bytes(nack_bytes),    bytes(nack_multiple_bytes),
};

TEST(methods, every_truncation_of_a_golden_payload_is_truncated) {
  for (std::string_view golden : all_golden) {
    for (std::size_t n = 0; n < golden.size(); ++n) {
      // A copy of exactly n octets, so that ASan sees any read past the end.
      const std::vector<char> prefix(golden.begin(), golden.begin() + n);
      bool called = false;
      errc e =
          dispatch_method(std::string_view(prefix.data(), n), [&](const auto&) { called = true; });
      EXPECT_EQ(e, errc::truncated) << hex(golden) << " cut to " << n;
      EXPECT_FALSE(called);
    }
  }
}

TEST(methods, a_byte_after_the_last_argument_is_trailing_bytes) {
  for (std::string_view golden : all_golden) {
    const std::string longer = std::string(golden) + '\0';
    bool called = false;
    EXPECT_EQ(dispatch_method(longer, [&](const auto&) { called = true; }), errc::trailing_bytes)
        << hex(golden);
    EXPECT_FALSE(called);
  }
  EXPECT_EQ(dispatch_method(bytes("\x00\x5a\x00\x0a\x00"), [](const auto&) {}),
            errc::trailing_bytes);  // tx.select takes no arguments
}

TEST(methods, unknown_ids_are_unknown_method) {
  for (std::string_view payload : {bytes("\x00\x0a\x00\x0c"),  // connection 12
                                   bytes("\x00\x00\x00\x00"),  // class 0
                                   bytes("\x00\x28\x00\x29"),  // exchange 41: not unbind-ok
                                   bytes("\xff\xff\x00\x0a\x01\x02")}) {
    bool called = false;
    EXPECT_EQ(dispatch_method(payload, [&](const auto&) { called = true; }), errc::unknown_method)
        << hex(payload);
    EXPECT_FALSE(called);
  }
}

TEST(methods, rejects_table_whose_length_prefix_runs_past_the_payload) {
  // queue.declare whose arguments table claims 16 octets but carries 4.
  EXPECT_EQ(dispatch_method(bytes("\x00\x32\x00\x0a\x00\x00\x01q\x00"
                                  "\x00\x00\x00\x10"
                                  "abcd"),
                            [](const auto&) {}),
            errc::truncated);
  // A hostile 4 GiB length must not wrap a pointer.
  EXPECT_EQ(dispatch_method(bytes("\x00\x32\x00\x0a\x00\x00\x01q\x00"
                                  "\xff\xff\xff\xff"
                                  "abcd"),
                            [](const auto&) {}),
            errc::truncated);
}

TEST(methods, decode_leaves_output_unchanged_on_error) {
  basic_ack m{.delivery_tag = 9, .multiple = true};
  const basic_ack before = m;
  std::string_view args = bytes(ack_bytes).substr(4);
  EXPECT_EQ(decode(args.substr(0, args.size() - 1), m), errc::truncated);
  EXPECT_EQ(m, before);
  EXPECT_EQ(decode(std::string(args) + "x", m), errc::trailing_bytes);
  EXPECT_EQ(m, before);
}

TEST(methods, ignores_unused_bits_in_a_bit_octet) {
  std::optional<basic_ack> got =
      dispatch_as<basic_ack>(bytes("\x00\x3c\x00\x50\x00\x00\x00\x00\x00\x00\x00\x01\xfe"));
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->delivery_tag, 1u);
  EXPECT_FALSE(got->multiple);
}

TEST(methods, refuses_shortstr_over_255_octets_without_writing) {
  const std::string long_key(256, 'k');
  std::string out;
  writer w(out);
  EXPECT_EQ(encode(basic_publish{.routing_key = long_key}, w), errc::string_too_long);
  EXPECT_EQ(w.size(), 0u);
  EXPECT_FALSE(w.overflowed());
  EXPECT_EQ(encode(basic_publish{.routing_key = std::string_view(long_key).substr(1)}, w),
            errc::ok);
  EXPECT_EQ(w.size(), 4u + 2 + 1 + 1 + 255 + 1);
}

TEST(methods, fixed_buffer_too_small_is_buffer_too_small_and_writes_nothing) {
  std::array<char, 16> buf;
  buf.fill('#');
  writer w(buf.data(), encoded_size(golden_publish) - 1);
  EXPECT_EQ(encode(golden_publish, w), errc::buffer_too_small);
  EXPECT_TRUE(w.overflowed());
  EXPECT_EQ(std::string_view(buf.data(), buf.size()), std::string(buf.size(), '#'));
}

TEST(methods, encode_appends_after_existing_writer_contents) {
  std::string out = "head";
  writer w(out);
  ASSERT_EQ(encode(golden_ack, w), errc::ok);
  ASSERT_EQ(encode(golden_publish, w), errc::ok);
  w.finish();
  EXPECT_EQ(out, "head" + std::string(bytes(ack_bytes)) + std::string(bytes(publish_bytes)));
}

TEST(methods, visitor_returning_errc_is_passed_through) {
  EXPECT_EQ(dispatch_method(bytes(ack_bytes), [](const auto&) { return errc::unexpected_frame; }),
            errc::unexpected_frame);
}

TEST(methods, struct_constants_follow_the_spec) {
  static_assert(basic_publish::class_id == 60 && basic_publish::method_id == 40);
  static_assert(basic_publish::id == 0x003C0028u);
  static_assert(basic_publish::has_content && !basic_publish::synchronous);
  static_assert(queue_declare::synchronous && !queue_declare::has_content);
  static_assert(basic_get_ok::has_content && basic_return::has_content);
  static_assert(exchange_unbind_ok::class_id == 40 && exchange_unbind_ok::method_id == 51);
  static_assert(connection_update_secret::id == 0x000A0046u);
  static_assert(connection_blocked::method_id == 60 && connection_unblocked::method_id == 61);
  static_assert(confirm_select::class_id == 85 && tx_rollback_ok::method_id == 31);
  EXPECT_EQ(basic_publish::name, "basic.publish");
  EXPECT_EQ(exchange_unbind_ok::name, "exchange.unbind-ok");
}

TEST(methods, defaults_come_from_the_spec) {
  const connection_start_ok start_ok;
  EXPECT_EQ(start_ok.mechanism, "PLAIN");
  EXPECT_EQ(start_ok.locale, "en_US");
  const connection_open open;
  EXPECT_EQ(open.virtual_host, "/");
  EXPECT_EQ(basic_nack{}.requeue, true);
  EXPECT_EQ(basic_reject{}.requeue, true);
  EXPECT_EQ(exchange_declare{}.type, "direct");
  EXPECT_EQ(connection_start{}.version_minor, 9);
  EXPECT_TRUE(queue_declare{}.arguments.raw.empty());
}

TEST(methods, close_names_the_failing_method_without_clashing_with_its_own_ids) {
  const connection_close m{.reply_code = constants::not_found,
                           .reply_text = "NOT_FOUND",
                           .failing_class_id = queue_declare::class_id,
                           .failing_method_id = queue_declare::method_id};
  std::optional<connection_close> got = dispatch_as<connection_close>(encode_to_string(m));
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->failing_class_id, 50);
  EXPECT_EQ(got->failing_method_id, 10);
}

TEST(methods, lookup_helpers_describe_known_methods_and_reject_others) {
  EXPECT_EQ(method_name(60, 40), "basic.publish");
  EXPECT_EQ(method_name(40, 51), "exchange.unbind-ok");
  EXPECT_EQ(method_name(40, 41), "");
  EXPECT_TRUE(method_known(10, 70));
  EXPECT_FALSE(method_known(10, 12));
  EXPECT_TRUE(method_has_content(60, 60));
  EXPECT_FALSE(method_has_content(60, 80));
  EXPECT_TRUE(method_is_synchronous(50, 10));
  EXPECT_FALSE(method_is_synchronous(50, 11));
  EXPECT_FALSE(method_has_content(99, 1));
  EXPECT_FALSE(method_is_synchronous(99, 1));
}

TEST(methods, constants_follow_the_spec) {
  static_assert(constants::frame_method == 1 && constants::frame_header == 2);
  static_assert(constants::frame_body == 3 && constants::frame_heartbeat == 8);
  static_assert(constants::frame_end == 0xCE);
  static_assert(constants::frame_min_size == 4096);
  static_assert(constants::reply_success == 200 && constants::no_route == 312);
  static_assert(constants::class_connection == 10 && constants::class_confirm == 85);
  static_assert(constants::class_basic == 60 && constants::class_tx == 90);
  EXPECT_TRUE(constants::is_hard_error(constants::connection_forced));
  EXPECT_TRUE(constants::is_hard_error(constants::frame_error));
  EXPECT_FALSE(constants::is_hard_error(constants::not_found));
  EXPECT_FALSE(constants::is_hard_error(constants::reply_success));
}

// ---- Round trip of every method in the spec ----

static_assert(all_methods::size == 66,
              "connection 14, channel 6, access 2, exchange 8, "
              "queue 10, basic 18, tx 6, confirm 2");

// Sets every field of m to a value other than its default. Bits are all flipped, or, with
// `only_bit`, all false except the one with that index, so that a bit written to the wrong
// position cannot round-trip.
template <class T>
void fill(T& m, int seed, std::optional<int> only_bit = std::nullopt) {
  static const char table_raw[] = "\x03keyt\x01";  // {key: true}
  static const std::array<std::string_view, 4> strings = {"alpha", "b", "a-much-longer-string",
                                                          bytes("bin\0ary")};
  int k = seed;
  int bit = 0;
  T::for_each_field(m, [&](std::string_view, auto& v) {
    using V = std::remove_cvref_t<decltype(v)>;
    ++k;
    if constexpr (std::is_same_v<V, bool>) {
      v = only_bit ? bit == *only_bit : !v;
      ++bit;
    } else if constexpr (std::is_integral_v<V>) {
      // Every octet non-zero and distinct, so that a byte-order slip shows.
      const V candidate = static_cast<V>(0x8172635445362718ull + static_cast<unsigned>(k));
      v = candidate == v ? static_cast<V>(candidate + 1) : candidate;
    } else if constexpr (std::is_same_v<V, std::string_view>) {
      v = strings[static_cast<std::size_t>(k) % strings.size()];
    } else {
      static_assert(std::is_same_v<V, table_view>);
      v.raw = bytes(table_raw);
    }
  });
}

template <class T>
int bit_count() {
  int n = 0;
  T m;
  T::for_each_field(m, [&](std::string_view, auto& v) {
    n += std::is_same_v<std::remove_cvref_t<decltype(v)>, bool>;
  });
  return n;
}

template <class T>
void expect_round_trip(const T& m) {
  const std::string payload = encode_to_string(m);
  EXPECT_EQ(payload.size(), encoded_size(m));
  std::optional<T> got = dispatch_as<T>(payload);
  ASSERT_TRUE(got.has_value()) << hex(payload);
  EXPECT_EQ(*got, m) << hex(payload);
  // A fixed buffer one octet short of any size below the encoding refuses it.
  std::vector<char> buf(payload.size());
  for (std::size_t n = 0; n < payload.size(); ++n) {
    writer w(buf.data(), n);
    EXPECT_EQ(encode(m, w), errc::buffer_too_small) << n;
  }
}

template <class T>
void check_method() {
  SCOPED_TRACE(T::name);
  EXPECT_TRUE(method_known(T::class_id, T::method_id));
  EXPECT_EQ(method_name(T::class_id, T::method_id), T::name);
  EXPECT_EQ(method_has_content(T::class_id, T::method_id), T::has_content);
  EXPECT_EQ(method_is_synchronous(T::class_id, T::method_id), T::synchronous);

  expect_round_trip(T{});
  T m;
  fill(m, 0);
  expect_round_trip(m);
  for (int b = 0; b < bit_count<T>(); ++b) {
    T one_hot;
    fill(one_hot, b, b);
    expect_round_trip(one_hot);
  }
}

template <class... Ts>
void check_all(method_list<Ts...>) {
  (check_method<Ts>(), ...);
}

TEST(methods, every_method_round_trips_through_encode_and_dispatch) {
  check_all(all_methods{});
}

template <class... Ts>
int distinct_ids(method_list<Ts...>) {
  const std::array<std::uint32_t, sizeof...(Ts)> ids = {Ts::id...};
  int distinct = 0;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    bool seen = false;
    for (std::size_t j = 0; j < i; ++j) seen = seen || ids[j] == ids[i];
    distinct += !seen;
  }
  return distinct;
}

TEST(methods, every_method_has_its_own_id) {
  EXPECT_EQ(distinct_ids(all_methods{}), static_cast<int>(all_methods::size));
}

}  // namespace
}  // namespace warren::codec
