#include "tools/perf/svg_plot.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "tests/tools/perf/svg_check.h"

namespace warren::perf {
namespace {

std::vector<interval_report> sample_intervals(int n) {
  std::vector<interval_report> v;
  for (int i = 1; i <= n; ++i) {
    interval_report r;
    r.elapsed_s = i;
    r.seconds = 1;
    r.publish_rate = 10000 + 100 * i;
    r.confirm_rate = 9900 + 100 * i;
    r.receive_rate = 20000 - 50 * i;
    r.latency.count = i == 3 ? 0 : 100;  // one interval without samples
    r.latency.p50 = 100 + i;
    r.latency.p95 = 400 + i;
    r.latency.p99 = 2000 + i;
    r.latency.p999 = 9000 + i;
    v.push_back(r);
  }
  return v;
}

std::string write_temp(const std::string& name, const std::string& text) {
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string path =
      std::string(dir ? dir : "/tmp") + "/" + name + "." + std::to_string(::getpid());
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

TEST(svg_plot, parses_as_xml_with_size_and_every_series) {
  const auto iv = sample_intervals(10);
  test::svg_facts f =
      test::check_svg(write_temp("plot.svg", render_svg(iv, "run <1> & \"x\"", true)));
  ASSERT_TRUE(f.parsed) << f.error;
  EXPECT_EQ(f.root, "svg");
  EXPECT_EQ(f.width, std::to_string(plot_width));
  EXPECT_EQ(f.height, std::to_string(plot_height));
  EXPECT_EQ(f.series_points.at("published"), 10);
  EXPECT_EQ(f.series_points.at("confirmed"), 10);
  EXPECT_EQ(f.series_points.at("received"), 10);
  // The interval without samples is left out of the latency lines.
  for (const char* s : {"median", "95th", "99th", "99.9th"})
    EXPECT_EQ(f.series_points.at(s), 9) << s;
  auto has_text = [&](const std::string& t) {
    return std::find(f.texts.begin(), f.texts.end(), t) != f.texts.end();
  };
  EXPECT_TRUE(has_text("run <1> & \"x\""));  // escaped in the file, intact once parsed
  EXPECT_TRUE(has_text("elapsed time (s)"));
  EXPECT_TRUE(has_text("msg/s"));
  EXPECT_TRUE(has_text("latency (us) (log scale)"));
}

TEST(svg_plot, latencies_of_ten_ms_and_more_are_drawn_in_ms) {
  auto iv = sample_intervals(3);
  for (interval_report& r : iv) r.latency.p999 = 25'000;
  test::svg_facts f = test::check_svg(write_temp("ms.svg", render_svg(iv, "t", true)));
  ASSERT_TRUE(f.parsed) << f.error;
  EXPECT_NE(std::find(f.texts.begin(), f.texts.end(), "latency (ms) (log scale)"), f.texts.end());
}

TEST(svg_plot, has_no_script_or_external_reference) {
  const std::string svg = render_svg(sample_intervals(5), "t", true);
  EXPECT_EQ(svg.find("<script"), std::string::npos);
  EXPECT_EQ(svg.find("href"), std::string::npos);
  EXPECT_EQ(svg.find("http://", svg.find("xmlns=") + 40), std::string::npos);
}

TEST(svg_plot, without_latency_says_why_and_draws_rates_only) {
  test::svg_facts f =
      test::check_svg(write_temp("nolat.svg", render_svg(sample_intervals(4), "t", false)));
  ASSERT_TRUE(f.parsed) << f.error;
  EXPECT_EQ(f.series_points.count("median"), 0u);
  EXPECT_EQ(f.series_points.at("published"), 4);
}

TEST(svg_plot, an_empty_run_still_renders) {
  test::svg_facts f = test::check_svg(write_temp("empty.svg", render_svg({}, "t", true)));
  ASSERT_TRUE(f.parsed) << f.error;
  EXPECT_EQ(f.series_points.at("published"), 0);
}

TEST(svg_plot, the_checker_rejects_broken_xml) {
  test::svg_facts f = test::check_svg(write_temp("broken.svg", "<svg><g></svg>"));
  EXPECT_FALSE(f.parsed);
  EXPECT_FALSE(f.error.empty());
}

TEST(xml_escape, escapes_markup_and_drops_control_characters) {
  EXPECT_EQ(xml_escape("a<b>&\"c'\x01"), "a&lt;b&gt;&amp;&quot;c&apos; ");
}

}  // namespace
}  // namespace warren::perf
