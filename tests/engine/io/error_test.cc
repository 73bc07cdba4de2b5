#include "engine/io/error.h"

#include <gtest/gtest.h>
#include <netdb.h>

namespace warren::io {
namespace {

TEST(io_error, converts_io_errc_to_error_code_in_its_own_category) {
  std::error_code ec = io_errc::eof;
  EXPECT_EQ(&ec.category(), &io_category());
  EXPECT_STREQ(ec.category().name(), "warren.io");
  EXPECT_EQ(ec.message(), "connection closed by peer");
  EXPECT_TRUE(ec == io_errc::eof);
  EXPECT_FALSE(ec == io_errc::timeout);
}

TEST(io_error, names_every_code) {
  for (int v = static_cast<int>(io_errc::timeout); v <= static_cast<int>(io_errc::tls_protocol);
       ++v)
    EXPECT_NE(io_category().message(v), "unknown warren.io error") << v;
  EXPECT_EQ(io_category().message(999), "unknown warren.io error");
}

TEST(io_error, resolve_category_speaks_gai_strerror) {
  std::error_code ec(EAI_NONAME, resolve_category());
  EXPECT_EQ(ec.message(), ::gai_strerror(EAI_NONAME));
  EXPECT_STREQ(ec.category().name(), "getaddrinfo");
}

TEST(io_error, is_false_only_without_a_code) {
  EXPECT_FALSE(io_error{});
  EXPECT_TRUE((io_error{io_errc::timeout, "x"}));
}

}  // namespace
}  // namespace warren::io
