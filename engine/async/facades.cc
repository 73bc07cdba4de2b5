// The public handles of engine.h: each member hands its work to the part that does it
// (engine_impl, connection_impl, channel_impl, the consumers' routes). No logic of their own.
#include "engine/async/channel_impl.h"
#include "engine/async/connection_impl.h"
#include "engine/async/engine.h"
#include "engine/async/engine_impl.h"

namespace warren::async {

using detail::channel_impl;
using detail::connection_impl;

std::string_view to_string(publish_status s) noexcept {
  switch (s) {
    case publish_status::ok:
      return "ok";
    case publish_status::buffer_full:
      return "buffer_full";
    case publish_status::window_full:
      return "window_full";
    case publish_status::blocked:
      return "blocked";
    case publish_status::closed:
      return "closed";
    case publish_status::too_large:
      return "too_large";
    case publish_status::timeout:
      return "timeout";
    case publish_status::recovering:
      return "recovering";
  }
  return "unknown";
}

std::string_view to_string(connection_state s) noexcept {
  switch (s) {
    case connection_state::open:
      return "open";
    case connection_state::recovering:
      return "recovering";
    case connection_state::closed:
      return "closed";
  }
  return "unknown";
}

publish_rejected::publish_rejected(publish_status s)
    : std::runtime_error("publish not accepted: " + std::string(to_string(s))), status_(s) {}

// engine ------------------------------------------------------------------------------------------

engine::engine(engine_options o) : impl_(std::make_unique<detail::engine_impl>(o)) {}
engine::~engine() = default;

const engine_options& engine::options() const noexcept {
  return impl_->options;
}

std::shared_ptr<connection> engine::connect(const warren::connection_options& opts) {
  return std::make_shared<connection>(impl_->connect(opts));
}

metrics::snapshot engine::metrics() const {
  if (!impl_->options.metrics) return {};
  return impl_->options.metrics->take();
}

std::shared_ptr<connection> engine::adopt(io::unique_fd fd,
                                          const warren::connection_options& opts) {
  return std::make_shared<connection>(impl_->adopt(std::move(fd), opts));
}

// connection --------------------------------------------------------------------------------------

connection::connection(std::shared_ptr<connection_impl> impl) : impl_(std::move(impl)) {}
connection::~connection() = default;

std::shared_ptr<channel> connection::open_channel() {
  return std::make_shared<channel>(impl_->open_channel());
}
void connection::close() {
  impl_->close();
}
bool connection::is_open() const noexcept {
  return impl_->is_open();
}
bool connection::blocked() const noexcept {
  return impl_->blocked();
}
void connection::on_blocked(std::function<void(std::string_view)> f) {
  impl_->set_on_blocked(std::move(f));
}
void connection::on_unblocked(std::function<void()> f) {
  impl_->set_on_unblocked(std::move(f));
}
void connection::on_closed(std::function<void(const protocol::close_reason&)> f) {
  impl_->set_on_closed(std::move(f));
}
protocol::close_reason connection::close_reason() const {
  return impl_->close_reason();
}
connection_state connection::state() const noexcept {
  return impl_->state();
}
void connection::on_recovery_started(std::function<void(const protocol::close_reason&)> f) {
  impl_->set_on_recovery_started(std::move(f));
}
void connection::on_recovered(std::function<void(const recovery_report&)> f) {
  impl_->set_on_recovered(std::move(f));
}
void connection::on_recovery_failed(std::function<void(const protocol::close_reason&)> f) {
  impl_->set_on_recovery_failed(std::move(f));
}
std::string connection::endpoint() const {
  return impl_->endpoint();
}
topology_record connection::topology() const {
  return impl_->topology();
}
void connection::update_secret(std::string_view new_secret, std::string_view reason) {
  impl_->update_secret(new_secret, reason);
}
std::size_t connection::outgoing_bytes() const noexcept {
  return impl_->outgoing_bytes();
}
std::uint32_t connection::frame_max() const noexcept {
  return impl_->frame_max();
}
std::size_t connection::pending_deliveries() const noexcept {
  return impl_->pending_deliveries();
}
metrics::connection_snapshot connection::metrics() const {
  return impl_->metrics_snapshot();
}

// channel -----------------------------------------------------------------------------------------

channel::channel(std::shared_ptr<channel_impl> impl) : impl_(std::move(impl)) {}
channel::~channel() = default;

queue_declare_ok channel::queue_declare(std::string_view queue, const queue_declare_options& o) {
  return impl_->queue_declare(queue, o);
}
void channel::exchange_declare(std::string_view exchange, std::string_view type,
                               const exchange_declare_options& o) {
  impl_->exchange_declare(exchange, type, o);
}
void channel::queue_bind(std::string_view queue, std::string_view exchange,
                         std::string_view routing_key, const bind_options& o) {
  impl_->bind(binding_record::kind::queue, true, queue, exchange, routing_key, o);
}
void channel::queue_unbind(std::string_view queue, std::string_view exchange,
                           std::string_view routing_key, const bind_options& o) {
  impl_->bind(binding_record::kind::queue, false, queue, exchange, routing_key, o);
}
void channel::exchange_bind(std::string_view destination, std::string_view source,
                            std::string_view routing_key, const bind_options& o) {
  impl_->bind(binding_record::kind::exchange, true, destination, source, routing_key, o);
}
void channel::exchange_unbind(std::string_view destination, std::string_view source,
                              std::string_view routing_key, const bind_options& o) {
  impl_->bind(binding_record::kind::exchange, false, destination, source, routing_key, o);
}
std::uint32_t channel::queue_purge(std::string_view queue, bool nowait) {
  return impl_->queue_purge(queue, nowait);
}
std::uint32_t channel::queue_delete(std::string_view queue, const queue_delete_options& o) {
  return impl_->queue_delete(queue, o);
}
void channel::exchange_delete(std::string_view exchange, bool if_unused, bool nowait) {
  impl_->exchange_delete(exchange, if_unused, nowait);
}
void channel::basic_qos(std::uint32_t prefetch_size, std::uint16_t prefetch_count, bool global) {
  impl_->basic_qos(prefetch_size, prefetch_count, global);
}
bool channel::flow(bool active) {
  return impl_->flow(active);
}
void channel::confirm_select(std::size_t window, std::chrono::milliseconds timeout) {
  impl_->confirm_select(window, timeout);
}
void channel::tx_select() {
  impl_->tx(codec::tx_select::id);
}
void channel::tx_commit() {
  impl_->tx(codec::tx_commit::id);
}
void channel::tx_rollback() {
  impl_->tx(codec::tx_rollback::id);
}
std::optional<delivery> channel::basic_get(std::string_view queue, bool no_ack) {
  return impl_->basic_get(queue, no_ack);
}
void channel::basic_recover(bool requeue) {
  impl_->basic_recover(requeue, true);
}
void channel::basic_recover_async(bool requeue) {
  impl_->basic_recover(requeue, false);
}
publish_status channel::try_publish(std::string_view exchange, std::string_view routing_key,
                                    const codec::basic_properties& props, std::string_view body,
                                    const publish_options& o, confirm_callback on_confirm) {
  return impl_->try_publish(exchange, routing_key, props, body, o, on_confirm);
}
publish_status channel::publish(std::string_view exchange, std::string_view routing_key,
                                const codec::basic_properties& props, std::string_view body,
                                std::chrono::steady_clock::time_point deadline,
                                const publish_options& o, confirm_callback on_confirm) {
  return impl_->publish(exchange, routing_key, props, body, deadline, o, on_confirm);
}
std::future<confirm_result> channel::publish_confirmed(std::string_view exchange,
                                                       std::string_view routing_key,
                                                       const codec::basic_properties& props,
                                                       std::string_view body,
                                                       const publish_options& o) {
  return impl_->publish_confirmed(exchange, routing_key, props, body, o);
}
void channel::on_return(std::function<void(const returned_message&)> f) {
  impl_->set_on_return(std::move(f));
}
std::size_t channel::outstanding_confirms() const noexcept {
  return impl_->outstanding_confirms();
}
bool channel::wait_for_confirms(std::chrono::steady_clock::time_point deadline) {
  return impl_->wait_for_confirms(deadline);
}
std::string channel::basic_consume(std::string_view queue, delivery_handler handler,
                                   const consumer_options& o, const ack_coalescing& ac,
                                   unsigned concurrency) {
  return impl_->basic_consume(queue, std::move(handler), o, ac, concurrency);
}
void channel::basic_cancel(std::string_view consumer_tag, bool nowait) {
  impl_->basic_cancel(consumer_tag, nowait);
}
std::optional<std::uint64_t> channel::stream_last_handled(std::string_view consumer_tag) const {
  detail::check_not_io("stream_last_handled");
  std::optional<std::uint64_t> last;
  impl_->io().run_and_wait([&] {
    // Decisions made before this call and still queued for the I/O thread count.
    impl_->io().apply_acks(std::chrono::steady_clock::now());
    if (const auto* p = impl_->core().stream_progress_of(consumer_tag)) last = p->last_handled();
  });
  return last;
}
void channel::close() {
  impl_->close();
}
bool channel::is_open() const noexcept {
  return impl_->is_open();
}
bool channel::flow_active() const noexcept {
  return impl_->flow_active();
}
std::uint16_t channel::id() const noexcept {
  return impl_->id();
}
std::exception_ptr channel::error() const {
  return impl_->error();
}

// test_probe --------------------------------------------------------------------------------------

std::size_t detail::test_probe::replies_awaited(const connection& c) {
  detail::check_not_io("test_probe");
  std::size_t n = 0;
  c.impl_->io().run_and_wait([&] { n = c.impl_->replies_awaited(); });
  return n;
}

std::size_t detail::test_probe::cancelled_no_ack_remembered(const channel& ch) {
  detail::check_not_io("test_probe");
  std::size_t n = 0;
  ch.impl_->io().run_and_wait([&] { n = ch.impl_->core().consumers().cancelled_remembered(); });
  return n;
}

// delivery ----------------------------------------------------------------------------------------

std::uint16_t delivery::channel_id() const noexcept {
  return consumer_ ? consumer_->ch->id() : std::uint16_t{0};
}

bool delivery::ack(bool multiple) {
  return detail::route_decision(consumer_, tag_, static_cast<int>(detail::ack_request::kind::ack),
                                multiple, false);
}
bool delivery::nack(bool multiple, bool requeue) {
  return detail::route_decision(consumer_, tag_, static_cast<int>(detail::ack_request::kind::nack),
                                multiple, requeue);
}
bool delivery::reject(bool requeue) {
  return detail::route_decision(
      consumer_, tag_, static_cast<int>(detail::ack_request::kind::reject), false, requeue);
}

}  // namespace warren::async
