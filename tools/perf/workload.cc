// Which client drives the workload: the one place to change when switching backends.
#include "tools/perf/workload.h"

#include <algorithm>

#include "engine/client/connection.h"

namespace warren::perf {

std::unique_ptr<workload> make_blocking_workload(const perf_options& o, const topology_plan& plan,
                                                 run_stats& stats);

std::unique_ptr<workload> make_async_workload(const perf_options& o, const topology_plan& plan,
                                              run_stats& stats);

std::unique_ptr<workload> make_workload(const perf_options& o, const topology_plan& plan,
                                        run_stats& stats) {
  if (o.client == client_kind::blocking) return make_blocking_workload(o, plan, stats);
  return make_async_workload(o, plan, stats);
}

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  std::replace(s.begin(), s.end(), '\r', ' ');
  return s;
}

void declare_topology(const perf_options& o, const topology_plan& plan) {
  if (!plan.declare || (!plan.declare_exchange && plan.shared_queues.empty())) return;
  try {
    connection conn(connection_for(o, 0, "perf-setup"));
    conn.connect();
    channel& ch = conn.channel();
    if (plan.declare_exchange) {
      exchange_declare_options x;
      x.durable = true;
      x.auto_delete = false;
      ch.exchange_declare(plan.exchange, plan.exchange_type, x);
    }
    const queue_declare_options q = shared_queue_options(o);
    for (const std::string& name : plan.shared_queues) {
      ch.queue_declare(name, q);
      if (plan.exchange.empty()) continue;
      ch.queue_bind(name, plan.exchange, plan.bind_shared_by_name ? name : plan.routing_key);
    }
    conn.close();
  } catch (const std::exception& e) {
    throw run_error(
        one_line(redact_uri(o.uris.front()) + " (declaring the topology): " + e.what()));
  }
}

}  // namespace warren::perf
