#include "tools/cli/args.h"

#include <gtest/gtest.h>

#include <vector>

namespace warren::cli {
namespace {

const std::vector<option_spec> specs = {
    {"queue", true, false, "queue name"},
    {"header", true, true, "a header"},
    {"json", false, false, "JSON output"},
    {"count", true, false, "how many"},
};

parsed_args parse(std::vector<std::string> args) {
  return parse_args(args, specs);
}

TEST(args, reads_values_in_both_spellings_and_flags) {
  const parsed_args a = parse({"--queue", "q1", "--json", "--count=5"});
  EXPECT_EQ(a.get("queue"), "q1");
  EXPECT_EQ(a.get("count"), "5");
  EXPECT_TRUE(a.has("json"));
  EXPECT_FALSE(a.has("header"));
  EXPECT_EQ(a.get("header"), std::nullopt);
}

TEST(args, a_value_may_start_with_dashes_or_contain_equals) {
  const parsed_args a = parse({"--queue", "--odd", "--header=k=S:v"});
  EXPECT_EQ(a.get("queue"), "--odd");
  EXPECT_EQ(a.all("header"), std::vector<std::string>{"k=S:v"});
}

TEST(args, repeatable_options_keep_command_line_order) {
  const parsed_args a = parse({"--header", "a=I:1", "--header", "b=I:2"});
  EXPECT_EQ(a.all("header"), (std::vector<std::string>{"a=I:1", "b=I:2"}));
  EXPECT_TRUE(parse({}).all("header").empty());
}

TEST(args, rejects_bad_usage_with_a_message_naming_the_option) {
  const auto message_of = [](std::vector<std::string> args) -> std::string {
    try {
      parse(std::move(args));
    } catch (const usage_error& e) {
      return e.what();
    }
    return "accepted";
  };
  EXPECT_EQ(message_of({"--nope"}), "unknown option --nope");
  EXPECT_EQ(message_of({"--queue"}), "--queue needs a value");
  EXPECT_EQ(message_of({"--json=yes"}), "--json takes no value");
  EXPECT_EQ(message_of({"--queue", "a", "--queue", "b"}), "--queue given twice");
  EXPECT_EQ(message_of({"stray"}), "unexpected argument 'stray' (options are --name VALUE)");
  EXPECT_EQ(message_of({"-q"}), "unexpected argument '-q' (options are --name VALUE)");
}

TEST(args, required_and_number_accessors_report_usage_errors) {
  const parsed_args a = parse({"--count", "2.5"});
  EXPECT_EQ(a.get_number("count", 0), 2.5);
  EXPECT_EQ(a.get_number("queue", 0), std::nullopt);
  EXPECT_THROW(a.get_number("count", 3), usage_error);
  EXPECT_THROW(parse({"--count", "x"}).get_number("count", 0), usage_error);
  EXPECT_THROW(parse({"--count", "nan"}).get_number("count", 0), usage_error);
  EXPECT_THROW(a.required("queue"), usage_error);
  EXPECT_EQ(parse({"--queue", "q"}).required("queue"), "q");
}

TEST(args, help_lists_each_option_aligned) {
  EXPECT_EQ(options_help(specs),
            "  --queue VALUE   queue name\n"
            "  --header VALUE  a header (repeatable)\n"
            "  --json          JSON output\n"
            "  --count VALUE   how many\n");
}

}  // namespace
}  // namespace warren::cli
