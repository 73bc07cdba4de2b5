// Bounds-checked big-endian primitives shared by every encoder and decoder in codec/.
//
// Views: decoded shortstr/longstr/table values are std::string_view into the input buffer.
// They stay valid exactly as long as the input bytes do; the codec never owns them.
// Strings carry raw octets (AMQP longstr is binary-safe); string_view is used as a byte view.
//
// Nothing here throws, allocates (except writer in growable mode) or touches I/O.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

#include "codec/error.h"

// Forces a lambda inline where GCC's inliner, once its budget for a large caller is spent, would
// otherwise call it (the publish encoder's property visitors). Written after the parameter list.
#define WARREN_INLINE_LAMBDA __attribute__((always_inline))

namespace warren::codec {

// An encoded field table's entries: the octets after its 4-octet length prefix. Decoding a
// method or content header yields a view into the input; to build one, encode a
// `field_table` (codec/field_table.h) and view the result.
struct table_view {
  std::string_view raw;
  bool operator==(const table_view&) const = default;
};

// Reads big-endian values from a byte range. Every read checks the remaining length first and
// returns false (leaving the output untouched) when the input is short; callers map that to
// errc::truncated or errc::need_more as their layer requires.
class reader {
 public:
  reader() = default;
  explicit reader(std::string_view in) noexcept : p_(in.data()), end_(in.data() + in.size()) {}
  reader(const char* p, std::size_t n) noexcept : p_(p), end_(p + n) {}

  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - p_); }
  bool empty() const noexcept { return p_ == end_; }
  const char* position() const noexcept { return p_; }

  bool read_u8(std::uint8_t& v) noexcept {
    if (end_ - p_ < 1) return false;
    v = static_cast<std::uint8_t>(*p_++);
    return true;
  }
  bool read_u16(std::uint16_t& v) noexcept {
    if (end_ - p_ < 2) return false;
    v = load_u16(p_);
    p_ += 2;
    return true;
  }
  bool read_u32(std::uint32_t& v) noexcept {
    if (end_ - p_ < 4) return false;
    v = load_u32(p_);
    p_ += 4;
    return true;
  }
  bool read_u64(std::uint64_t& v) noexcept {
    if (end_ - p_ < 8) return false;
    v = load_u64(p_);
    p_ += 8;
    return true;
  }
  bool read_i8(std::int8_t& v) noexcept { return read_as<std::uint8_t>(v); }
  bool read_i16(std::int16_t& v) noexcept { return read_as<std::uint16_t>(v); }
  bool read_i32(std::int32_t& v) noexcept { return read_as<std::uint32_t>(v); }
  bool read_i64(std::int64_t& v) noexcept { return read_as<std::uint64_t>(v); }
  bool read_f32(float& v) noexcept {
    std::uint32_t u;
    if (!read_u32(u)) return false;
    std::memcpy(&v, &u, 4);
    return true;
  }
  bool read_f64(double& v) noexcept {
    std::uint64_t u;
    if (!read_u64(u)) return false;
    std::memcpy(&v, &u, 8);
    return true;
  }
  // n octets as a view; the length is compared against what remains, never added to a pointer
  // first, so a hostile 0xFFFFFFFF length cannot overflow.
  bool read_bytes(std::size_t n, std::string_view& v) noexcept {
    if (remaining() < n) return false;
    v = std::string_view(p_, n);
    p_ += n;
    return true;
  }
  bool read_shortstr(std::string_view& v) noexcept {
    std::uint8_t n;
    const char* save = p_;
    if (!read_u8(n)) return false;
    if (!read_bytes(n, v)) return (p_ = save, false);
    return true;
  }
  bool read_longstr(std::string_view& v) noexcept {
    std::uint32_t n;
    const char* save = p_;
    if (!read_u32(n)) return false;
    if (!read_bytes(n, v)) return (p_ = save, false);
    return true;
  }
  bool read_table(table_view& v) noexcept { return read_longstr(v.raw); }
  bool skip(std::size_t n) noexcept {
    if (remaining() < n) return false;
    p_ += n;
    return true;
  }

  static std::uint16_t load_u16(const char* p) noexcept {
    const auto* u = reinterpret_cast<const unsigned char*>(p);
    return static_cast<std::uint16_t>((u[0] << 8) | u[1]);
  }
  static std::uint32_t load_u32(const char* p) noexcept {
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    return __builtin_bswap32(v);
  }
  static std::uint64_t load_u64(const char* p) noexcept {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    return __builtin_bswap64(v);
  }

 private:
  template <class U, class S>
  bool read_as(S& v) noexcept {
    U u;
    if (!read_u(u)) return false;
    v = static_cast<S>(u);
    return true;
  }
  bool read_u(std::uint8_t& v) noexcept { return read_u8(v); }
  bool read_u(std::uint16_t& v) noexcept { return read_u16(v); }
  bool read_u(std::uint32_t& v) noexcept { return read_u32(v); }
  bool read_u(std::uint64_t& v) noexcept { return read_u64(v); }

  const char* p_ = nullptr;
  const char* end_ = nullptr;
};

// Writes big-endian values into either a caller-provided fixed buffer (never grows; the first
// write that does not fit sets overflowed() and every later write is dropped) or a
// std::string that grows as needed. Check overflowed() once at the end rather than per write.
class writer {
 public:
  writer(char* out, std::size_t capacity) noexcept : begin_(out), p_(out), end_(out + capacity) {}
  // Appends to *grow (its existing contents are kept).
  explicit writer(std::string& grow) noexcept : grow_(&grow) { rebase(grow.size()); }

  bool overflowed() const noexcept { return overflow_; }
  std::size_t size() const noexcept { return static_cast<std::size_t>(p_ - begin_); }
  char* position() noexcept { return p_; }
  const char* data() const noexcept { return begin_; }

  void u8(std::uint8_t v) noexcept {
    if (ensure(1)) *p_++ = static_cast<char>(v);
  }
  void u16(std::uint16_t v) noexcept {
    if (!ensure(2)) return;
    p_[0] = static_cast<char>(v >> 8);
    p_[1] = static_cast<char>(v);
    p_ += 2;
  }
  void u32(std::uint32_t v) noexcept {
    if (!ensure(4)) return;
    v = __builtin_bswap32(v);
    std::memcpy(p_, &v, 4);
    p_ += 4;
  }
  void u64(std::uint64_t v) noexcept {
    if (!ensure(8)) return;
    v = __builtin_bswap64(v);
    std::memcpy(p_, &v, 8);
    p_ += 8;
  }
  void i8(std::int8_t v) noexcept { u8(static_cast<std::uint8_t>(v)); }
  void i16(std::int16_t v) noexcept { u16(static_cast<std::uint16_t>(v)); }
  void i32(std::int32_t v) noexcept { u32(static_cast<std::uint32_t>(v)); }
  void i64(std::int64_t v) noexcept { u64(static_cast<std::uint64_t>(v)); }
  void f32(float v) noexcept {
    std::uint32_t u;
    std::memcpy(&u, &v, 4);
    u32(u);
  }
  void f64(double v) noexcept {
    std::uint64_t u;
    std::memcpy(&u, &v, 8);
    u64(u);
  }
  void bytes(std::string_view s) noexcept {
    if (!ensure(s.size())) return;
    if (!s.empty()) std::memcpy(p_, s.data(), s.size());
    p_ += s.size();
  }
  // A shortstr above 255 octets cannot be encoded: it sets overflowed() and returns false so
  // that the caller can report errc::string_too_long rather than truncate silently.
  bool shortstr(std::string_view s) noexcept {
    if (s.size() > 255) return (overflow_ = true, false);
    u8(static_cast<std::uint8_t>(s.size()));
    bytes(s);
    return true;
  }
  bool longstr(std::string_view s) noexcept {
    if (s.size() > 0xFFFFFFFFu) return (overflow_ = true, false);
    u32(static_cast<std::uint32_t>(s.size()));
    bytes(s);
    return true;
  }
  bool table(table_view t) noexcept { return longstr(t.raw); }

  // Reserves n octets to be filled later (e.g. a length prefix); returns their offset from
  // the start, valid across growth, or SIZE_MAX after an overflow.
  std::size_t reserve(std::size_t n) noexcept {
    if (!ensure(n)) return static_cast<std::size_t>(-1);
    std::size_t at = size();
    p_ += n;
    return at;
  }
  void patch_u32(std::size_t at, std::uint32_t v) noexcept {
    if (at == static_cast<std::size_t>(-1) || overflow_) return;
    v = __builtin_bswap32(v);
    std::memcpy(begin_ + at, &v, 4);
  }

 private:
  // The fast path is forced inline: GCC otherwise keeps the whole function out of line in some
  // translation units (about a third of encode_table's time went into calling it).
  [[gnu::always_inline]] bool ensure(std::size_t n) noexcept {
    if (static_cast<std::size_t>(end_ - p_) >= n && !overflow_) return true;
    return ensure_slow(n);
  }
  bool ensure_slow(std::size_t n) noexcept {
    if (overflow_) return false;
    if (grow_ == nullptr) return (overflow_ = true, false);
    std::size_t used = size();
    grow_->resize(std::max(used + n, grow_->size() * 2 + 64));
    rebase(used);
    return true;
  }
  void rebase(std::size_t used) noexcept {
    if (grow_->size() < used + 16) grow_->resize(used + 64);
    begin_ = grow_->data();
    p_ = begin_ + used;
    end_ = begin_ + grow_->size();
  }

 public:
  // For growable writers: shrink the string to what was written. Call when done.
  void finish() noexcept {
    if (grow_ != nullptr) grow_->resize(size());
  }

 private:
  char* begin_ = nullptr;
  char* p_ = nullptr;
  char* end_ = nullptr;
  std::string* grow_ = nullptr;
  bool overflow_ = false;
};

namespace detail {

// Unchecked big-endian stores for encoders that compute their exact size first and reserve it
// once (writer::reserve), so that the encoding itself is straight-line stores. Each returns the
// position after what it wrote. The caller guarantees the room, and for put_shortstr and
// put_longstr that the length fits (255 and 0xFFFFFFFF octets).
inline char* put_u8(char* p, std::uint8_t v) noexcept {
  *p = static_cast<char>(v);
  return p + 1;
}
inline char* put_u16(char* p, std::uint16_t v) noexcept {
  p[0] = static_cast<char>(v >> 8);
  p[1] = static_cast<char>(v);
  return p + 2;
}
inline char* put_u32(char* p, std::uint32_t v) noexcept {
  v = __builtin_bswap32(v);
  std::memcpy(p, &v, 4);
  return p + 4;
}
inline char* put_u64(char* p, std::uint64_t v) noexcept {
  v = __builtin_bswap64(v);
  std::memcpy(p, &v, 8);
  return p + 8;
}
// A chunk of W octets moved through a register: an integer, or a GCC vector of 16 (SSE2 on
// x86-64). Not a char array, which the stack protector would instrument once it is on the stack.
template <std::size_t W>
struct chunk {
  using octets16 = char __attribute__((vector_size(16)));
  using type = std::conditional_t<W == 4, std::uint32_t,
                                  std::conditional_t<W == 8, std::uint64_t, octets16>>;
  static_assert(sizeof(type) == W);
};

// The first and the last W octets of [src, src + n) to the same places at dst, for
// W <= n <= 2 * W: the two overlap in the middle and together cover all n octets, and nothing
// outside [src, src + n) or [dst, dst + n) is read or written. Both loads come before the stores
// (the ranges do not overlap).
template <std::size_t W>
[[gnu::always_inline]] inline void copy_ends(char* dst, const char* src, std::size_t n) noexcept {
  typename chunk<W>::type head, tail;
  std::memcpy(&head, src, W);
  std::memcpy(&tail, src + n - W, W);
  std::memcpy(dst, &head, W);
  std::memcpy(dst + n - W, &tail, W);
}

// Copies n <= 64 octets between non-overlapping ranges with fixed-size loads and stores (see
// copy_ends) instead of a libc memcpy call. Names, routing keys, content types and small bodies
// are this short, and a memcpy call per field cost about a third of a 16-octet publish (the call,
// the PLT stub and the registers spilled around it).
[[gnu::always_inline]] inline void copy_short(char* dst, const char* src, std::size_t n) noexcept {
  if (n >= 16) {
    if (n > 32) {
      // The first 32 and the last 32 octets, as two 16-octet halves each.
      copy_ends<16>(dst, src, 32);
      copy_ends<16>(dst + n - 32, src + n - 32, 32);
    } else {
      copy_ends<16>(dst, src, n);
    }
  } else if (n >= 8) {
    copy_ends<8>(dst, src, n);
  } else if (n >= 4) {
    copy_ends<4>(dst, src, n);
  } else if (n != 0) {
    // 1 to 3 octets: first, middle and last (some of them the same octet).
    const char a = src[0], b = src[n / 2], c = src[n - 1];
    dst[0] = a;
    dst[n / 2] = b;
    dst[n - 1] = c;
  }
}

[[gnu::always_inline]] inline char* put_bytes(char* p, std::string_view s) noexcept {
  if (s.size() <= 64) {
    copy_short(p, s.data(), s.size());
  } else {
    std::memcpy(p, s.data(), s.size());
  }
  return p + s.size();
}
// always_inline, like put_bytes: called once per field on the publish path.
[[gnu::always_inline]] inline char* put_shortstr(char* p, std::string_view s) noexcept {
  return put_bytes(put_u8(p, static_cast<std::uint8_t>(s.size())), s);
}
[[gnu::always_inline]] inline char* put_longstr(char* p, std::string_view s) noexcept {
  return put_bytes(put_u32(p, static_cast<std::uint32_t>(s.size())), s);
}
[[gnu::always_inline]] inline char* put_table(char* p, table_view t) noexcept {
  return put_longstr(p, t.raw);
}

}  // namespace detail

}  // namespace warren::codec
