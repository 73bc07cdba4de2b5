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

TEST(report, prometheus_counters_are_the_summarys_counts_labelled_with_the_id) {
  totals t;
  t.published = 10;
  t.confirmed = 7;
  t.nacked = 1;
  t.in_doubt = 2;
  t.returned = 3;
  t.received = 9;
  const std::string text = prometheus_counters(t, "run \"a\"");
  EXPECT_NE(text.find("# TYPE warren_perf_published_total counter\n"
                      "warren_perf_published_total{id=\"run \\\"a\\\"\"} 10\n"),
            std::string::npos)
      << text;
  for (const char* line : {"warren_perf_confirmed_total{id=\"run \\\"a\\\"\"} 7\n",
                           "warren_perf_nacked_total{id=\"run \\\"a\\\"\"} 1\n",
                           "warren_perf_in_doubt_total{id=\"run \\\"a\\\"\"} 2\n",
                           "warren_perf_returned_total{id=\"run \\\"a\\\"\"} 3\n",
                           "warren_perf_consumed_total{id=\"run \\\"a\\\"\"} 9\n"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text;
  }
}

TEST(report, cpu_per_message_counts_published_and_received) {
  EXPECT_DOUBLE_EQ(sample_summary().cpu_us_per_msg, 0.6e6 / 6000);
  EXPECT_DOUBLE_EQ(make_summary(interval_report{}, 1).cpu_us_per_msg, 0);
}

report_style with_latency() {
  report_style s;
  s.latency = true;
  return s;
}

TEST(report, interval_line_has_every_count_and_the_latencies) {
  const std::string line = format_interval(sample(3), with_latency());
  for (const char* part :
       {"time 3.0 s", "published 1000 msg/s", "confirmed 990 msg/s", "nacked 10", "in doubt 4",
        "returned 3", "received 2000 msg/s", "latency median/95th/99th 120/300/900 us"}) {
    EXPECT_NE(line.find(part), std::string::npos) << part << " in " << line;
  }
  EXPECT_EQ(format_interval(sample(3), report_style{}).find("latency"), std::string::npos);
}

TEST(report, summary_has_totals_rates_percentiles_and_cpu) {
  const std::string s = format_summary(sample_summary(), with_latency());
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
  EXPECT_NE(lines[0].find(",confirm_latency_p99_us,"), std::string::npos);
  EXPECT_NE(lines[0].find(",latency_intended_p50_us,"), std::string::npos);
  EXPECT_TRUE(lines[4].starts_with("summary,2.000,2.000,2000,"));
  EXPECT_TRUE(lines[4].ends_with(",100.000,,,,"));
}

TEST(report, confirm_and_intended_latency_show_where_the_run_measures_them) {
  interval_report r = sample(3);
  r.latency_intended = {2000, 60, 130, 160, 310, 910, 1600, 2600};
  r.confirm_latency = {1000, 70, 140, 170, 320, 920, 1700, 2700};
  r.confirm_latency_intended = {1000, 80, 150, 180, 330, 930, 1800, 2800};
  report_style style = with_latency();
  style.confirm_latency = true;
  EXPECT_NE(format_interval(r, style).find("confirm latency median/95th/99th 140/320/920 us"),
            std::string::npos);
  EXPECT_EQ(format_interval(r, style).find("intended"), std::string::npos);
  style.intended = true;
  const std::string line = format_interval(r, style);
  EXPECT_NE(line.find("latency median/95th/99th 120/300/900 us (from intended 130/310/910 us)"),
            std::string::npos)
      << line;
  EXPECT_NE(line.find("confirm latency median/95th/99th 140/320/920 us (from intended "
                      "150/330/930 us)"),
            std::string::npos)
      << line;
  run_summary summary = make_summary(r, 1);
  const std::string text = format_summary(summary, style);
  for (const char* part : {"\nlatency us: min 50.5, median 120,",
                           "\nlatency from intended send time us: min 60.0, median 130,",
                           "\nconfirm latency us: min 70.0, median 140,",
                           "\nconfirm latency from intended send time us: min 80.0, median 150,",
                           "max 2800 (1000 samples)"}) {
    EXPECT_NE(text.find(part), std::string::npos) << part << " in " << text;
  }
}

TEST(report, use_millis_shows_milliseconds_and_id_starts_every_line) {
  report_style style = with_latency();
  style.millis = true;
  style.id = "run-7";
  const std::string line = format_interval(sample(3), style);
  EXPECT_TRUE(line.starts_with("id: run-7, time 3.0 s")) << line;
  EXPECT_NE(line.find("latency median/95th/99th 0.1/0.3/0.9 ms"), std::string::npos) << line;
  const std::string text = format_summary(sample_summary(), style);
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) EXPECT_TRUE(l.starts_with("id: run-7, ")) << l;
  EXPECT_NE(text.find("latency ms: min 0.1,"), std::string::npos) << text;
}

TEST(report, the_sequence_check_is_summarized_in_every_output) {
  run_summary s = sample_summary();
  EXPECT_EQ(format_summary(s, report_style{}).find("sequence"), std::string::npos);
  s.sequence = sequence_summary{4, 1000, 7, 2, 3, 5};
  EXPECT_NE(format_summary(s, report_style{})
                .find("sequence: 4 streams, 1000 received, 7 missing in 2 gaps, 3 duplicates, "
                      "5 reordered"),
            std::string::npos);
  perf_options o = parse_options(std::vector<std::string>{});
  const auto j = nlohmann::json::parse(to_json(o, {sample(1)}, s)).at("summary").at("sequence");
  EXPECT_EQ(j.at("missing").get<int>(), 7);
  EXPECT_EQ(j.at("gaps").get<int>(), 2);
  EXPECT_EQ(j.at("duplicates").get<int>(), 3);
  EXPECT_EQ(j.at("reordered").get<int>(), 5);
  EXPECT_TRUE(to_csv({sample(1)}, s).ends_with(",7,2,3,5\n"));
}

TEST(report, json_has_null_for_latencies_the_run_does_not_measure) {
  const perf_options unpaced = parse_options(std::vector<std::string>{});
  const auto j = nlohmann::json::parse(to_json(unpaced, {sample(1)}, sample_summary()));
  EXPECT_TRUE(j.at("summary").at("latency_intended_us").is_null());
  EXPECT_TRUE(j.at("summary").at("confirm_latency_us").is_null());
  EXPECT_TRUE(j.at("summary").at("sequence").is_null());
  const perf_options paced = parse_options(std::vector<std::string>{"-r", "100", "-c", "10"});
  const auto k = nlohmann::json::parse(to_json(paced, {sample(1)}, sample_summary()));
  EXPECT_TRUE(k.at("summary").at("latency_intended_us").is_object());
  EXPECT_TRUE(k.at("summary").at("confirm_latency_us").is_object());
  EXPECT_TRUE(k.at("intervals")[0].at("confirm_latency_intended_us").is_object());
}

// PerfTest's CsvMetricsFormatter: its header, and rows of id, time, the five rates (returned
// only with mandatory, confirmed and nacked only with confirms) and the latencies.
TEST(report, perftest_csv_has_perftests_header_and_row_format) {
  const perf_options o = parse_options(std::vector<std::string>{"-c", "100"});
  EXPECT_EQ(perftest_csv_header(o),
            "id,time (s),published (msg/s),returned (msg/s),confirmed (msg/s),nacked (msg/s),"
            "received (msg/s),min consumer latency (\xc2\xb5s),median consumer latency "
            "(\xc2\xb5s),75th p. consumer latency (\xc2\xb5s),95th p. consumer latency "
            "(\xc2\xb5s),99th p. consumer latency (\xc2\xb5s),min confirm latency "
            "(\xc2\xb5s),median confirm latency (\xc2\xb5s),75th p. confirm latency "
            "(\xc2\xb5s),95th p. confirm latency (\xc2\xb5s),99th p. confirm latency "
            "(\xc2\xb5s)\n");
  interval_report r = sample(3);
  r.confirm_latency = {1000, 70.9, 140, 170, 320.5, 920, 1700, 2700};
  EXPECT_EQ(perftest_csv_row(o, "test-1", r),
            "test-1,3.000,1000,,990,10,2000,50,120,150,300,900,70,140,170,320,920\n");
  // No confirms: their columns are empty; -ms: milliseconds.
  const perf_options plain = parse_options(std::vector<std::string>{"-ms", "-f", "mandatory"});
  EXPECT_TRUE(perftest_csv_header(plain).find("(ms)") != std::string::npos);
  EXPECT_EQ(perftest_csv_row(plain, "t", r), "t,3.000,1000,3.0,,,2000,0,0,0,0,0,,,,,\n");
  const perf_options consumer_only = parse_options(std::vector<std::string>{"-x", "0"});
  EXPECT_EQ(perftest_csv_row(consumer_only, "t", r), "t,3.000,,,,,2000,50,120,150,300,900,,,,,\n");
}

TEST(report, perftest_rates_round_as_perftest_does) {
  EXPECT_EQ(perftest_rate(0), "0");
  EXPECT_EQ(perftest_rate(0.456), "0.46");
  EXPECT_EQ(perftest_rate(3.14), "3.1");
  EXPECT_EQ(perftest_rate(1234.9), "1234");
}

}  // namespace
}  // namespace warren::perf
