// Command-line options for the `warren` tool: GNU-style long options only.
//
//   --name value   --name=value   (options that take a value)
//   --flag                         (options that do not; `--flag=x` is an error)
//
// No positional arguments: every input has a name, so scripts read unambiguously.
// Pure string work; any thread.
#pragma once

#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace warren::cli {

// Bad usage; the tool prints what() on one line and exits with status 2.
class usage_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

struct option_spec {
  std::string name;  // without the leading "--"
  bool takes_value = false;
  bool repeatable = false;
  std::string help;  // one line, for --help
};

class parsed_args {
 public:
  bool has(std::string_view name) const { return values_.find(name) != values_.end(); }
  // The value of a non-repeatable option, if given.
  std::optional<std::string> get(std::string_view name) const;
  // Every value of a repeatable option, in command-line order.
  const std::vector<std::string>& all(std::string_view name) const;
  // The value, or usage_error "missing --name".
  const std::string& required(std::string_view name) const;
  // A decimal number (integer or not) at least `min`; usage_error naming the option otherwise.
  std::optional<double> get_number(std::string_view name, double min) const;

 private:
  friend parsed_args parse_args(std::span<const std::string>, std::span<const option_spec>);
  // A flag maps to one empty value.
  std::map<std::string, std::vector<std::string>, std::less<>> values_;
};

// Parses `args` against `specs`. usage_error for: an unknown option, a positional argument, a
// missing value, a value given to a flag, or a non-repeatable option given twice.
parsed_args parse_args(std::span<const std::string> args, std::span<const option_spec> specs);

// "  --name VALUE   help" lines, aligned, one per spec.
std::string options_help(std::span<const option_spec> specs);

}  // namespace warren::cli
