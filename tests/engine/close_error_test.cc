#include "engine/close_error.h"

#include <gtest/gtest.h>

#include <string>

namespace warren {
namespace {

template <class E>
E thrown(std::exception_ptr p) {
  try {
    std::rethrow_exception(p);
  } catch (const E& e) {
    return e;
  }
}

TEST(error_from, a_reply_code_gives_its_class_with_text_and_method) {
  const protocol::close_reason why{404, "NOT_FOUND - no queue 'q'", 50, 10, true};
  const not_found e = thrown<not_found>(error_from(why));
  EXPECT_EQ(e.reply_code(), 404);
  EXPECT_EQ(e.reply_text(), "NOT_FOUND - no queue 'q'");
  EXPECT_EQ(e.method_name(), "queue.declare");
  EXPECT_EQ(
      thrown<connection_forced>(error_from({320, "CONNECTION_FORCED", 0, 0, true})).reply_code(),
      320);
}

TEST(error_from, no_reply_code_is_a_recoverable_connection_error) {
  EXPECT_STREQ(
      thrown<recoverable_connection_error>(error_from({0, "recv: reset", 0, 0, false})).what(),
      "recv: reset");
  EXPECT_STREQ(thrown<recoverable_connection_error>(error_from({})).what(), "connection lost");
}

}  // namespace
}  // namespace warren
