// The state-machine fuzzers' input: a script of operations read from the fuzzer's bytes, and the
// writer that builds the same scripts for the seed corpora (tests/fuzz/make_seeds.cc).
//
// A script is a run of operations, each one opcode octet (taken modulo the number of operations,
// so every octet is some operation) followed by its arguments. Reads past the end give zeros and
// set exhausted(), so every input is a valid script and a truncated one is its own prefix.
// Integers are big-endian, like AMQP's.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace warren::fuzz {

class fuzz_input {
 public:
  fuzz_input(const std::uint8_t* data, std::size_t size)
      : in_(reinterpret_cast<const char*>(data), size) {}

  bool exhausted() const noexcept { return at_ >= in_.size(); }

  std::uint8_t u8() noexcept {
    if (at_ >= in_.size()) return 0;
    return static_cast<std::uint8_t>(in_[at_++]);
  }
  std::uint16_t u16() noexcept { return static_cast<std::uint16_t>(u8() << 8 | u8()); }
  std::uint32_t u32() noexcept { return std::uint32_t{u16()} << 16 | u16(); }
  std::uint64_t u64() noexcept { return std::uint64_t{u32()} << 32 | u32(); }
  bool flag() noexcept { return (u8() & 1) != 0; }
  // Up to `n` octets (fewer at the end of the input).
  std::string_view bytes(std::size_t n) noexcept {
    const std::size_t left = in_.size() - std::min(at_, in_.size());
    const std::string_view out = in_.substr(std::min(at_, in_.size()), std::min(n, left));
    at_ += out.size();
    return out;
  }

 private:
  std::string_view in_;
  std::size_t at_ = 0;
};

// Builds a script octet by octet, mirroring fuzz_input's reads.
class script_writer {
 public:
  script_writer& u8(std::uint8_t v) {
    out_ += static_cast<char>(v);
    return *this;
  }
  script_writer& u16(std::uint16_t v) { return u8(static_cast<std::uint8_t>(v >> 8)).u8(v & 0xFF); }
  script_writer& u32(std::uint32_t v) {
    return u16(static_cast<std::uint16_t>(v >> 16)).u16(v & 0xFFFF);
  }
  script_writer& u64(std::uint64_t v) {
    return u32(static_cast<std::uint32_t>(v >> 32)).u32(v & 0xFFFFFFFF);
  }
  script_writer& bytes(std::string_view b) {
    out_ += b;
    return *this;
  }
  const std::string& str() const noexcept { return out_; }

 private:
  std::string out_;
};

}  // namespace warren::fuzz
