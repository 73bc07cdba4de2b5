#include "engine/log.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace warren {
namespace {

struct line {
  log_level level;
  std::string component, message;
};

struct recorder {
  std::vector<line> lines;
  log_callback callback() {
    return [this](log_level l, std::string_view c, std::string_view m) {
      lines.push_back({l, std::string(c), std::string(m)});
    };
  }
};

TEST(logger, is_silent_by_default) {
  const logger silent;
  EXPECT_FALSE(silent.enabled(log_level::error));
  silent.log(log_level::error, log_component::connection, "nobody hears this");  // no crash
  const logger empty{log_callback{}};
  EXPECT_FALSE(empty.enabled(log_level::error));
}

TEST(logger, delivers_messages_at_or_above_its_level) {
  recorder r;
  const logger log(r.callback(), log_level::warning);
  EXPECT_FALSE(log.enabled(log_level::info));
  EXPECT_TRUE(log.enabled(log_level::warning));
  log.log(log_level::info, log_component::recovery, "dropped");
  log.log(log_level::warning, log_component::connection, "connection lost: EOF");
  log.log(log_level::error, log_component::consumer, "cancelled");
  ASSERT_EQ(r.lines.size(), 2u);
  EXPECT_EQ(r.lines[0].level, log_level::warning);
  EXPECT_EQ(r.lines[0].component, "connection");
  EXPECT_EQ(r.lines[0].message, "connection lost: EOF");
  EXPECT_EQ(r.lines[1].component, "consumer");
}

TEST(logger, never_passes_a_password_to_the_callback) {
  recorder r;
  const logger log = logger(r.callback(), log_level::debug).with_secret("s3cr:t/pw");
  log.log(log_level::error, log_component::connection,
          "connect amqp://bob:s3cr%3At%2Fpw@rabbit:5672/vhost failed; password s3cr:t/pw was "
          "refused (s3cr%3at%2fpw)");
  ASSERT_EQ(r.lines.size(), 1u);
  EXPECT_EQ(r.lines[0].message,
            "connect amqp://bob:***@rabbit:5672/vhost failed; password *** was refused (***)");
}

TEST(logger, a_throwing_callback_is_swallowed) {
  const logger log([](log_level, std::string_view, std::string_view) {
    throw std::runtime_error("sink broken");
  });
  EXPECT_NO_THROW(log.log(log_level::error, log_component::connection, "x"));
}

TEST(logger, with_secret_leaves_the_original_alone) {
  recorder r;
  const logger base(r.callback());
  const logger conn = base.with_secret("hunter2");
  base.log(log_level::info, "c", "hunter2");
  conn.log(log_level::info, "c", "hunter2");
  conn.with_secret("").log(log_level::info, "c", "empty secret ignored");
  ASSERT_EQ(r.lines.size(), 3u);
  EXPECT_EQ(r.lines[0].message, "hunter2");
  EXPECT_EQ(r.lines[1].message, "***");
  EXPECT_EQ(r.lines[2].message, "empty secret ignored");
}

TEST(redact, masks_the_password_of_every_uri) {
  EXPECT_EQ(redact_uri_passwords("amqp://guest:guest@127.0.0.1:5672"),
            "amqp://guest:***@127.0.0.1:5672");
  EXPECT_EQ(redact_uri_passwords("amqps://u:p@[::1]:5671/%2f?heartbeat=5"),
            "amqps://u:***@[::1]:5671/%2f?heartbeat=5");
  EXPECT_EQ(redact_uri_passwords("a amqp://a:1@h1, amqp://b:2@h2/v and http://c:3@h3#x"),
            "a amqp://a:***@h1, amqp://b:***@h2/v and http://c:***@h3#x");
  EXPECT_EQ(redact_uri_passwords("'amqp://u:pw@h'"), "'amqp://u:***@h'");
  // A password with a raw '@' or ':' (not percent-encoded, as people write them).
  EXPECT_EQ(redact_uri_passwords("amqp://u:p@ss:x@host/v"), "amqp://u:***@host/v");
}

TEST(redact, leaves_uris_without_a_password_and_other_text_alone) {
  for (const char* s : {"amqp://bob@host", "amqp://host:5672/v", "http://host/path@x:y",
                        "no uri here: a@b", "://u:p@h", "", "amqp://", "tail amqp://u:p"}) {
    EXPECT_EQ(redact_uri_passwords(s), s) << s;
  }
}

TEST(redact, masks_secrets_raw_and_percent_encoded) {
  const std::vector<std::string> secrets{"p@ss word", ""};
  EXPECT_EQ(redact("login with p@ss word failed", secrets), "login with *** failed");
  EXPECT_EQ(redact("uri user:p%40ss%20word", secrets), "uri user:***");
  EXPECT_EQ(redact("twice p@ss wordp@ss word", secrets), "twice ******");
  EXPECT_EQ(redact("nothing", secrets), "nothing");
  const std::vector<std::string> stars{"**"};
  EXPECT_EQ(redact("a ** b", stars), "a *** b");  // terminates though the mask contains it
}

TEST(log_level, names) {
  EXPECT_EQ(to_string(log_level::debug), "debug");
  EXPECT_EQ(to_string(log_level::info), "info");
  EXPECT_EQ(to_string(log_level::warning), "warning");
  EXPECT_EQ(to_string(log_level::error), "error");
}

}  // namespace
}  // namespace warren
