#include "tools/perf/report.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

namespace warren::perf {
namespace {

interval_report sample(double elapsed) {
  interval_report r;
  r.elapsed_s = elapsed;
  r.seconds = 1;
  r.published = 1000;
  r.confirmed = 990;
  r.nacked = 10;
  r.in_doubt = 4;
  r.returned = 3;
  r.received = 2000;
  r.publish_rate = 1000;
  r.confirm_rate = 990;
  r.receive_rate = 2000;
  r.latency = {2000, 50.5, 120, 150, 300, 900, 1500, 2500};
  return r;
}

run_summary sample_summary() {
  interval_report whole = sample(2);
  whole.seconds = 2;
  whole.published = 2000;
  whole.received = 4000;
  return make_summary(whole, 0.6);
}

TEST(report, cpu_per_message_counts_published_and_received) {
  EXPECT_DOUBLE_EQ(sample_summary().cpu_us_per_msg, 0.6e6 / 6000);
  EXPECT_DOUBLE_EQ(make_summary(interval_report{}, 1).cpu_us_per_msg, 0);
}

TEST(report, interval_line_has_every_count_and_the_latencies) {
  const std::string line = format_interval(sample(3), true);
  for (const char* part :
       {"time 3.0 s", "published 1000 msg/s", "confirmed 990 msg/s", "nacked 10", "in doubt 4",
        "returned 3", "received 2000 msg/s", "latency median/95th/99th 120/300/900 us"}) {
    EXPECT_NE(line.find(part), std::string::npos) << part << " in " << line;
  }
  EXPECT_EQ(format_interval(sample(3), false).find("latency"), std::string::npos);
}

TEST(report, summary_has_totals_rates_percentiles_and_cpu) {
  const std::string s = format_summary(sample_summary(), true);
  for (const char* part :
       {"published 2000 (1000 msg/s)", "nacked 10, in doubt 4", "received 4000 (2000 msg/s)",
        "min 50.5", "median 120", "75th 150", "95th 300", "99th 900", "99.9th 1500", "max 2500",
        "client cpu: 100.00 us/msg"}) {
    EXPECT_NE(s.find(part), std::string::npos) << part << " in " << s;
  }
}

TEST(report, json_has_the_names_bench_compare_reads) {
  perf_options o = parse_options(std::vector<std::string>{"-H", "amqp://u:s3cret@h:5672/v"});
  const auto j = nlohmann::json::parse(to_json(o, {sample(1), sample(2)}, sample_summary()));
  const auto& s = j.at("summary");
  for (const char* k : {"published", "confirmed", "nacked", "in_doubt", "returned", "received",
                        "seconds", "publish_rate", "receive_rate", "client_cpu_us_per_msg"}) {
    EXPECT_TRUE(s.contains(k)) << k;
    EXPECT_TRUE(j.at("intervals")[0].contains(k) || k == std::string("client_cpu_us_per_msg")) << k;
  }
  EXPECT_EQ(s.at("nacked").get<int>(), 10);
  EXPECT_EQ(s.at("in_doubt").get<int>(), 4);
  for (const char* k : {"min", "p50", "p75", "p95", "p99", "p999", "max"}) {
    EXPECT_TRUE(s.at("latency_us").contains(k)) << k;
  }
  EXPECT_EQ(s.at("published").get<int>(), 2000);
  EXPECT_DOUBLE_EQ(s.at("latency_us").at("p999").get<double>(), 1500);
  ASSERT_EQ(j.at("intervals").size(), 2u);
  EXPECT_EQ(j.at("intervals")[1].at("elapsed").get<double>(), 2);
  EXPECT_EQ(j.at("options").at("producers").get<int>(), 1);
  // Options are written without the password.
  EXPECT_EQ(j.dump().find("s3cret"), std::string::npos);
  EXPECT_EQ(j.at("options").at("uris")[0].get<std::string>(), "amqp://u:***@h:5672/v");
}

TEST(report, csv_has_a_header_a_row_per_interval_and_a_summary_row) {
  const std::string csv = to_csv({sample(1), sample(2), sample(3)}, sample_summary());
  std::istringstream in(csv);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_TRUE(lines[0].starts_with("kind,elapsed_s,seconds,published"));
  const auto columns = [](const std::string& l) { return std::count(l.begin(), l.end(), ','); };
  for (const std::string& l : lines) EXPECT_EQ(columns(l), columns(lines[0])) << l;
  EXPECT_TRUE(lines[0].starts_with("kind,elapsed_s,seconds,published,confirmed,nacked,in_doubt,"));
  EXPECT_TRUE(lines[1].starts_with("interval,1.000,1.000,1000,990,10,4,3,2000,"));
  EXPECT_TRUE(lines[4].starts_with("summary,2.000,2.000,2000,"));
  EXPECT_TRUE(lines[4].ends_with(",100.000"));
}

}  // namespace
}  // namespace warren::perf
