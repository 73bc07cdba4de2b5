// Runs the two examples of README's "py-amqp to warren" section against the broker: the C++ one
// must compile and receive what it published, and the Python one beside it (py-amqp, run with
// /usr/bin/python3) must receive the same, so the pair shows one program in both spellings.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "engine/client/connection.h"
#include "tests/broker_env.h"

namespace {

std::string run_python(const std::string& script) {
  const std::string command = "/usr/bin/python3 -I " + script + " 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(command.c_str(), "r"), ::pclose);
  if (!pipe) return "popen failed";
  std::string out;
  std::array<char, 256> chunk;
  while (std::fgets(chunk.data(), chunk.size(), pipe.get()) != nullptr) out += chunk.data();
  return out;
}

TEST(readme_example, cpp_block_gets_back_the_message_it_published) {
  ASSERT_TRUE(warren::test::broker_answers());
#include "tests/interop/readme_example.inc"
  ASSERT_TRUE(msg.has_value());
  EXPECT_EQ(msg->body(), "hi");
  EXPECT_EQ(msg->props().content_type, "text/plain");
  EXPECT_EQ(msg->delivery_info().routing_key, q);
}

TEST(readme_example, python_block_gets_back_the_same_message) {
  ASSERT_TRUE(warren::test::broker_answers());
  EXPECT_EQ(run_python("tests/interop/readme_example.py"), "hi text/plain\n");
}

}  // namespace
