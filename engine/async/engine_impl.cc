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
  io::host_port peer;
  const std::uint16_t default_port = opts.ssl ? io::default_amqps_port : io::default_amqp_port;
  if (auto e = io::parse_host_port(opts.host, default_port, peer); e) {
    throw std::system_error(e.code, e.message);
  }
  const time_point deadline =
      opts.connect_timeout
          ? clock::now() + std::chrono::duration_cast<clock::duration>(*opts.connect_timeout)
          : time_point::max();
  // Without py-amqp's TCP_USER_TIMEOUT unless asked for: see engine::connect in engine.h.
  const auto settings = io::effective_socket_settings(opts.socket_settings, false);
  io::io_error err;
  io::unique_fd fd = io::connect_tcp(peer, settings, deadline, err);
  if (!fd.valid()) throw std::system_error(err.code, err.message);
  return adopt(std::move(fd), opts);
}

std::shared_ptr<connection_impl> engine_impl::adopt(io::unique_fd fd,
                                                    const connection_options& opts) {
  check_not_io("engine::adopt");
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
  auto c = std::make_shared<connection_impl>(*this, io, opts, std::move(s));
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
