#include "tools/cli/args.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

namespace warren::cli {

std::optional<std::string> parsed_args::get(std::string_view name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second.front();
}

const std::vector<std::string>& parsed_args::all(std::string_view name) const {
  static const std::vector<std::string> none;
  auto it = values_.find(name);
  return it == values_.end() ? none : it->second;
}

const std::string& parsed_args::required(std::string_view name) const {
  auto it = values_.find(name);
  if (it == values_.end()) throw usage_error("missing --" + std::string(name));
  return it->second.front();
}

std::optional<double> parsed_args::get_number(std::string_view name, double min) const {
  std::optional<std::string> text = get(name);
  if (!text) return std::nullopt;
  char* end = nullptr;
  const double d = std::strtod(text->c_str(), &end);
  if (text->empty() || *end != '\0' || !std::isfinite(d) || d < min) {
    throw usage_error("--" + std::string(name) + " needs a number of at least " +
                      std::to_string(static_cast<long long>(min)) + ", not '" + *text + "'");
  }
  return d;
}

parsed_args parse_args(std::span<const std::string> args, std::span<const option_spec> specs) {
  parsed_args out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.size() < 3 || a.compare(0, 2, "--") != 0) {
      throw usage_error("unexpected argument '" + a + "' (options are --name VALUE)");
    }
    const std::size_t eq = a.find('=');
    const std::string name = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    const auto spec = std::find_if(specs.begin(), specs.end(),
                                   [&](const option_spec& s) { return s.name == name; });
    if (spec == specs.end()) throw usage_error("unknown option --" + name);
    std::string value;
    if (spec->takes_value) {
      if (eq != std::string::npos) {
        value = a.substr(eq + 1);
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        throw usage_error("--" + name + " needs a value");
      }
    } else if (eq != std::string::npos) {
      throw usage_error("--" + name + " takes no value");
    }
    auto& slot = out.values_[name];
    if (!slot.empty() && !spec->repeatable) throw usage_error("--" + name + " given twice");
    slot.push_back(std::move(value));
  }
  return out;
}

std::string options_help(std::span<const option_spec> specs) {
  std::vector<std::string> left;
  std::size_t width = 0;
  for (const option_spec& s : specs) {
    left.push_back("  --" + s.name + (s.takes_value ? " VALUE" : ""));
    width = std::max(width, left.back().size());
  }
  std::string out;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    out += left[i] + std::string(width + 2 - left[i].size(), ' ') + specs[i].help +
           (specs[i].repeatable ? " (repeatable)" : "") + "\n";
  }
  return out;
}

}  // namespace warren::cli
