#include "tools/perf/bodies.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

namespace warren::perf {

std::shared_ptr<const body_source> body_source::from_files(const std::vector<std::string>& paths,
                                                           std::string content_type) {
  auto s = std::make_shared<body_source>();
  for (const std::string& path : paths) {
    std::error_code ec;
    std::ifstream f(path, std::ios::binary);
    if (!std::filesystem::is_regular_file(path, ec) || !f) {
      throw usage_error("-B: cannot read '" + path + "' (not a readable file)");
    }
    std::string body(std::istreambuf_iterator<char>(f), {});
    if (f.bad()) throw usage_error("-B: cannot read '" + path + "'");
    s->bodies_.push_back(std::move(body));
  }
  if (s->bodies_.empty()) throw usage_error("-B: no body file");
  s->content_type_ = std::move(content_type);
  return s;
}

std::shared_ptr<const body_source> body_source::random_json(std::size_t size, unsigned count,
                                                            unsigned fields, std::uint64_t seed) {
  static constexpr std::string_view lower = "abcdefghijklmnopqrstuvwxyz";
  static constexpr std::string_view alnum =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::mt19937_64 rng(seed);
  auto random_text = [&](std::string_view symbols, std::size_t max_size) {
    // 5 to max_size characters: names and values need no escaping in JSON.
    std::uniform_int_distribution<std::size_t> len(5, max_size);
    std::uniform_int_distribution<std::size_t> pick(0, symbols.size() - 1);
    std::string t(len(rng), ' ');
    for (char& c : t) c = symbols[pick(rng)];
    return t;
  };
  std::vector<std::string> names, values;
  for (unsigned i = 0; i < fields; ++i) {
    names.push_back(random_text(lower, 30));
    values.push_back(random_text(alnum, 200));
  }
  auto s = std::make_shared<body_source>();
  std::uniform_int_distribution<std::size_t> value_of(0, values.size() - 1);
  for (unsigned d = 0; d < count; ++d) {
    std::shuffle(names.begin(), names.end(), rng);
    std::string doc = "{ ";
    for (std::size_t i = 0;; i = (i + 1) % names.size()) {
      doc += '"' + names[i] + "\" : \"" + values[value_of(rng)] + '"';
      if (doc.size() >= size) break;
      doc += ", ";
    }
    doc += " }";
    s->bodies_.push_back(std::move(doc));
  }
  s->content_type_ = "application/json";
  s->random_order_ = true;
  return s;
}

std::shared_ptr<const body_source> body_source::for_options(const perf_options& o) {
  if (!o.body_files.empty()) return from_files(o.body_files, o.body_content_type);
  if (o.json_body) {
    const auto seed =
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    return random_json(static_cast<std::size_t>(o.message_size), o.body_count, o.body_field_count,
                       seed);
  }
  return nullptr;
}

}  // namespace warren::perf
