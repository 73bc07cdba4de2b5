// A stand-in for an application that exports warren's metrics, for the end-to-end test with a
// real Prometheus server (prometheus_e2e_test.py): a registry with one connection named "e2e"
// and one channel, served by http_exporter on 127.0.0.1 and a free port.
//
// Prints "port N" on stdout once it serves, then reads commands from stdin, one per line:
//   publish N    records N publishes and N confirms on the channel (a confirm latency of 2 ms)
//   deliver N    records N deliveries, acked
// and answers each with "ok" once recorded. Ends at end of input (the test closing its pipe, or
// dying): the test's lifetime bounds this process's.
#include <chrono>
#include <cstdint>
#include <iostream>
#include <sstream>
#include <string>

#include "engine/metrics/http_exporter.h"
#include "engine/metrics/metrics.h"
#include "engine/metrics/prometheus.h"

int main() {
  using namespace warren::metrics;
  registry reg;
  auto conn = reg.add_connection("e2e");
  auto ch = conn->add_channel(1);
  http_exporter exporter([&reg] { return render_prometheus(reg.take()); });
  std::cout << "port " << exporter.port() << std::endl;
  for (std::string line; std::getline(std::cin, line);) {
    std::istringstream in(line);
    std::string what;
    std::uint64_t n = 0;
    if (!(in >> what >> n)) {
      std::cout << "error: expected 'publish N' or 'deliver N'" << std::endl;
      continue;
    }
    if (what == "publish") {
      ch->on_published(n);
      ch->on_confirmed(n);
      ch->record_confirm_latency(2'000'000, n);
      conn->on_publish_frames_sent(3 * n);
    } else if (what == "deliver") {
      ch->on_delivered(n);
      ch->on_delivery_acked(n);
    } else {
      std::cout << "error: unknown command " << what << std::endl;
      continue;
    }
    std::cout << "ok" << std::endl;
  }
}
