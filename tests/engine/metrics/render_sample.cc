// Prints the sample snapshot (sample_snapshot.h) in Prometheus' text format, for the parser test
// (prometheus_client_parse_test.py). Arguments: "channels" and/or "consumers" turn those
// families on (both off by default keeps the connection families alone); "label" adds
// role="test \"x\"".
#include <cstring>
#include <iostream>

#include "engine/metrics/prometheus.h"
#include "tests/engine/metrics/sample_snapshot.h"

int main(int argc, char** argv) {
  warren::metrics::exposition_options o{.channels = false, .consumers = false};
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "channels")) o.channels = true;
    if (!std::strcmp(argv[i], "consumers")) o.consumers = true;
    if (!std::strcmp(argv[i], "label")) o.labels.emplace_back("role", "test \"x\"");
  }
  warren::metrics::test::sample s;
  std::cout << warren::metrics::render_prometheus(s.take(), o);
}
