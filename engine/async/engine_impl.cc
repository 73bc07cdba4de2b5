#include "engine/async/engine_impl.h"

#include <future>
#include <system_error>

#include "engine/async/channel_impl.h"
#include "engine/async/connection_impl.h"
#include "engine/io/stream.h"
#include "engine/io/tls.h"

namespace warren::async::detail {

using protocol::clock;
using protocol::time_point;

engine_impl::engine_impl(engine_options o) : options(o), pool(o.workers) {
  const unsigned n = std::max(1u, o.io_threads);
  for (unsigned i = 0; i < n; ++i) ios_.push_back(std::make_unique<io_thread>(options));
}

engine_impl::~engine_impl() {
  std::vector<std::shared_ptr<connection_impl>> all;
  {
    std::lock_guard lock(conns_mu);
    all = conns;
  }
  for (auto& c : all) {
    try {
      c->close();
    } catch (...) {
    }
  }
  for (auto& c : all) c->drain_retired();
  for (auto& io : ios_) io->stop();
  for (auto& c : all) c->drain_retired();
}

std::shared_ptr<connection_impl> engine_impl::connect(const connection_options& opts) {
  check_not_io("engine::connect");
  std::vector<std::string> hosts;
  try {
    hosts = opts.endpoint_hosts();
  } catch (const std::exception& e) {
    throw std::system_error(std::make_error_code(std::errc::invalid_argument), e.what());
  }
  const std::uint64_t k = connections_made_.fetch_add(1, std::memory_order_relaxed);
  protocol::endpoint_list endpoints(std::move(hosts), opts.allocation, k,
                                    reinterpret_cast<std::uintptr_t>(this) ^ (k << 32));
  const std::uint16_t default_port = opts.ssl ? io::default_amqps_port : io::default_amqp_port;
  const time_point deadline =
      opts.connect_timeout
          ? clock::now() + std::chrono::duration_cast<clock::duration>(*opts.connect_timeout)
          : time_point::max();
  // Without py-amqp's TCP_USER_TIMEOUT unless asked for: see engine::connect in engine.h.
  const auto settings = io::effective_socket_settings(opts.socket_settings, false);
  // Each endpoint in this connection's order until one accepts; the last error otherwise.
  std::system_error last(std::make_error_code(std::errc::invalid_argument), "no endpoint");
  for (std::size_t i = 0; i < endpoints.size(); ++i) {
    io::host_port peer;
    if (auto e = io::parse_host_port(endpoints.at(i), default_port, peer); e) {
      last = std::system_error(e.code, e.message);
      continue;
    }
    io::io_error err;
    io::unique_fd fd = io::connect_tcp(peer, settings, deadline, err);
    if (!fd.valid()) {
      last = std::system_error(err.code, err.message);
      continue;
    }
    connection_options at = opts;
    at.host = endpoints.at(i);  // TLS names this peer
    return start(std::move(fd), at, std::move(endpoints), i, true);
  }
  throw last;
}

std::shared_ptr<connection_impl> engine_impl::adopt(io::unique_fd fd,
                                                    const connection_options& opts) {
  check_not_io("engine::adopt");
  return start(std::move(fd), opts, protocol::endpoint_list({opts.host}, {}, 0, 0), 0, false);
}

std::shared_ptr<connection_impl> engine_impl::start(io::unique_fd fd,
                                                    const connection_options& opts,
                                                    protocol::endpoint_list endpoints,
                                                    std::size_t index, bool recover) {
  io::io_error err;
  std::unique_ptr<io::tls_session> tls;
  if (opts.ssl) {
    auto ctx = io::tls_context::create(*opts.ssl, err);
    if (!ctx) throw std::system_error(err.code, err.message);
    io::host_port peer;
    io::parse_host_port(opts.host, io::default_amqps_port, peer);
    tls = io::tls_session::create(ctx, peer.host, err);
    if (!tls) throw std::system_error(err.code, err.message);
  }
  io::stream s = io::stream::open(std::move(fd), std::move(tls), err);
  if (err) throw std::system_error(err.code, err.message);
  io_thread& io = next_io();
  auto c =
      std::make_shared<connection_impl>(*this, io, opts, std::move(s), std::move(endpoints), index);
  if (!recover) c->disable_recovery();
  std::future<void> opened = c->opened();
  io.post([c, &io] {
    io.add(c);
    c->start(clock::now());
  });
  opened.get();  // throws what closed the connection before open-ok
  {
    std::lock_guard lock(conns_mu);
    conns.push_back(c);
  }
  return c;
}

}  // namespace warren::async::detail
