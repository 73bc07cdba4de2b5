#include "tools/perf/bodies.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>

namespace warren::perf {
namespace {

std::string temp_file(const std::string& name, const std::string& content) {
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string path =
      std::string(dir ? dir : "/tmp") + "/" + name + "." + std::to_string(::getpid());
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

TEST(body_source, files_are_taken_in_turn_with_their_content_type) {
  const std::string a = temp_file("a.json", "{\"a\": 1}");
  const std::string b = temp_file("b.bin", std::string("\0\1\2", 3));
  const auto s = body_source::from_files({a, b}, "application/x-test");
  ASSERT_EQ(s->count(), 2u);
  EXPECT_FALSE(s->random_order());
  EXPECT_EQ(s->body(0), "{\"a\": 1}");
  EXPECT_EQ(s->body(1), std::string_view("\0\1\2", 3));
  EXPECT_EQ(s->body(2), "{\"a\": 1}");
  EXPECT_EQ(s->content_type(), "application/x-test");
}

TEST(body_source, a_file_that_cannot_be_read_is_a_usage_error_naming_it) {
  try {
    body_source::from_files({"/nonexistent/body.json"}, "");
    FAIL() << "no error";
  } catch (const usage_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/body.json"), std::string::npos);
  }
  EXPECT_THROW(body_source::from_files({"/"}, ""), usage_error);  // a directory
}

TEST(body_source, random_json_documents_parse_and_reach_the_size) {
  const auto s = body_source::random_json(1000, 20, 50, 42);
  ASSERT_EQ(s->count(), 20u);
  EXPECT_TRUE(s->random_order());
  EXPECT_EQ(s->content_type(), "application/json");
  for (std::size_t i = 0; i < s->count(); ++i) {
    const std::string_view body = s->body(i);
    EXPECT_GE(body.size(), 1000u);
    // One name-value pair past the size at most: names <= 30, values <= 200 characters.
    EXPECT_LT(body.size(), 1000u + 250u);
    const auto doc = nlohmann::json::parse(body);
    EXPECT_TRUE(doc.is_object());
  }
  EXPECT_NE(s->body(0), s->body(1));
  // The same seed makes the same documents.
  EXPECT_EQ(body_source::random_json(1000, 20, 50, 42)->body(3), s->body(3));
}

TEST(body_source, for_options_follows_the_options) {
  EXPECT_EQ(body_source::for_options(parse_options(std::vector<std::string>{})), nullptr);
  const auto json = body_source::for_options(
      parse_options(std::vector<std::string>{"--json-body", "-s", "300", "--body-count", "3"}));
  ASSERT_NE(json, nullptr);
  EXPECT_EQ(json->count(), 3u);
  EXPECT_GE(json->body(0).size(), 300u);
}

}  // namespace
}  // namespace warren::perf
