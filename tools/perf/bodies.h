// Bodies that are not the tool's own: -B (files, taken in turn, as PerfTest does) and
// --json-body (random JSON documents made before the run and picked at random, as PerfTest
// does, so that generating them costs nothing while publishing). With either, the latency and
// sequence stamp travels in a header (stamp.h), since the body must stay as it is.
//
// Threads: made once before the run, then read-only: any thread may call body().
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tools/perf/options.h"

namespace warren::perf {

class body_source {
 public:
  // Reads every file. Throws usage_error naming a file that cannot be read.
  static std::shared_ptr<const body_source> from_files(const std::vector<std::string>& paths,
                                                       std::string content_type);
  // `count` documents of at least `size` octets (the field that crosses `size` is the last),
  // made of `fields` random names and as many random values; `seed` makes them reproducible.
  static std::shared_ptr<const body_source> random_json(std::size_t size, unsigned count,
                                                        unsigned fields, std::uint64_t seed);
  // What the options ask for: -B, --json-body, or nothing (null). Throws usage_error.
  static std::shared_ptr<const body_source> for_options(const perf_options& o);

  // The body for a producer's n-th publish: files in turn; documents by a random `n`.
  std::string_view body(std::uint64_t n) const noexcept { return bodies_[n % bodies_.size()]; }
  std::size_t count() const noexcept { return bodies_.size(); }
  bool random_order() const noexcept { return random_order_; }
  const std::string& content_type() const noexcept { return content_type_; }

 private:
  std::vector<std::string> bodies_;
  std::string content_type_;
  bool random_order_ = false;
};

}  // namespace warren::perf
