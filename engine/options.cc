#include "engine/options.h"

#include <limits>
#include <stdexcept>
#include <string>
#include <system_error>

#include "engine/uri.h"

namespace warren {
namespace {

std::vector<protocol::sasl_credentials> build_authentication(const connection_options& o) {
  if (!o.authentication.empty()) return o.authentication;
  if (o.login_method) {
    const std::string& m = *o.login_method;
    if (m == "EXTERNAL") return {protocol::sasl_external()};
    if (m == "AMQPLAIN") return {protocol::sasl_amqplain(o.userid, o.password)};
    if (m == "PLAIN") return {protocol::sasl_plain(o.userid, o.password)};
    if (o.login_response) return {protocol::sasl_raw(m, *o.login_response)};
    throw std::invalid_argument("invalid login method '" + m +
                                "': use PLAIN, AMQPLAIN or EXTERNAL, or give login_response");
  }
  // py-amqp's default order (GSSAPI aside). EXTERNAL only makes sense with a client
  // certificate, so it is offered only over TLS with one.
  std::vector<protocol::sasl_credentials> out;
  if (o.ssl && !o.ssl->cert_file.empty()) out.push_back(protocol::sasl_external());
  out.push_back(protocol::sasl_amqplain(o.userid, o.password));
  out.push_back(protocol::sasl_plain(o.userid, o.password));
  return out;
}

// A count the broker reads as a signed 64.
codec::field_value count_value(std::string_view name, std::uint64_t v) {
  if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    throw std::invalid_argument(std::string(name) + " " + std::to_string(v) +
                                " is above 2^63-1 (the broker reads a signed 64)");
  }
  return codec::field_value::i64(static_cast<std::int64_t>(v));
}

void set_count(codec::field_table& t, std::string_view name,
               const std::optional<std::uint64_t>& v) {
  if (v) t.set(std::string(name), count_value(name, *v));
}

queue_declare_options typed_queue(codec::field_table arguments, std::string_view type) {
  queue_declare_options q;
  q.durable = true;
  q.exclusive = false;
  q.auto_delete = false;
  q.arguments = std::move(arguments);
  q.arguments.set(std::string(x_queue_type), codec::field_value::long_string(std::string(type)));
  return q;
}

std::string stream_consume_message(stream_consume_error::reason r, std::string_view queue) {
  const std::string q = "basic.consume on stream '" + std::string(queue) + "': ";
  if (r == stream_consume_error::reason::no_ack) {
    return q +
           "a stream consumer needs manual acknowledgement, and no_ack was asked (RabbitMQ would "
           "close the connection with 540 NOT_IMPLEMENTED); consume with no_ack false and ack";
  }
  return q +
         "a stream consumer needs a consumer prefetch, and the channel has none: call "
         "basic_qos(0, N > 0, global=false) on it first (RabbitMQ would close the channel with "
         "406 PRECONDITION_FAILED; a global prefetch does not count)";
}

}  // namespace

queue_declare_options quorum_queue(const quorum_queue_options& o) {
  codec::field_table t = o.arguments;
  set_count(t, "x-delivery-limit", o.delivery_limit);
  set_count(t, "x-quorum-initial-group-size", o.initial_group_size);
  set_count(t, "x-max-length", o.max_length);
  set_count(t, "x-max-length-bytes", o.max_length_bytes);
  return typed_queue(std::move(t), "quorum");
}

queue_declare_options stream_queue(const stream_queue_options& o) {
  codec::field_table t = o.arguments;
  set_count(t, "x-max-length-bytes", o.max_length_bytes);
  set_count(t, "x-stream-max-segment-size-bytes", o.max_segment_size_bytes);
  if (o.max_age) {
    // The same grammar as an offset interval ("7D"); the broker refuses anything else with 406.
    try {
      (void)stream_offset::interval(*o.max_age);
    } catch (const std::invalid_argument&) {
      throw std::invalid_argument("stream max_age '" + *o.max_age +
                                  "' is not a number and one of the units Y, M, D, h, m, s "
                                  "(e.g. 7D, 12h)");
    }
    t.set("x-max-age", codec::field_value::long_string(*o.max_age));
  }
  set_count(t, "x-initial-cluster-size", o.initial_cluster_size);
  return typed_queue(std::move(t), "stream");
}

stream_consume_error::stream_consume_error(reason r, std::string_view queue)
    : std::invalid_argument(stream_consume_message(r, queue)), reason_(r) {}

bool is_stream_consume(const consume_options& o) noexcept {
  return o.stream_start.has_value() || o.arguments.find(x_stream_offset) != nullptr;
}

codec::field_table consume_arguments(const consume_options& o) {
  codec::field_table t = o.arguments;
  if (o.stream_start) t.set(std::string(x_stream_offset), o.stream_start->to_field());
  return t;
}

void check_consume(std::string_view queue, const consume_options& o,
                   std::optional<std::uint16_t> consumer_prefetch) {
  if (!is_stream_consume(o)) return;
  if (o.no_ack) throw stream_consume_error(stream_consume_error::reason::no_ack, queue);
  if (!consumer_prefetch || *consumer_prefetch == 0) {
    throw stream_consume_error(stream_consume_error::reason::prefetch_not_set, queue);
  }
}

protocol::connection_config connection_options::machine_config() const {
  protocol::connection_config c;
  c.virtual_host = virtual_host;
  c.locale = locale;
  c.authentication = build_authentication(*this);
  c.client_properties = client_properties;
  c.capabilities = negotiate_capabilities;
  c.channel_max = channel_max;
  c.frame_max = frame_max;
  c.heartbeat = heartbeat;
  c.on_challenge = on_challenge;
  return c;
}

std::vector<std::string> connection_options::endpoint_hosts() const {
  if (endpoints.empty()) return {host};
  std::vector<std::string> out;
  out.reserve(endpoints.size());
  for (const std::string& e : endpoints) {
    if (e.starts_with("amqp://") || e.starts_with("amqps://")) {
      const connection_uri u = parse_uri(e);
      const bool v6 = u.host.find(':') != std::string::npos;
      out.push_back((v6 ? "[" + u.host + "]" : u.host) + ":" + std::to_string(u.port));
    } else {
      out.push_back(e);
    }
  }
  return out;
}

connection_options connection_options::from_uri(std::string_view uri) {
  const connection_uri u = parse_uri(uri);
  connection_options o;
  o.host = io::format_host_port(u.host, u.port);
  o.userid = u.user;
  o.password = u.password;
  o.virtual_host = u.vhost;
  if (u.heartbeat) o.heartbeat = *u.heartbeat;
  if (u.channel_max) o.channel_max = *u.channel_max;
  if (u.frame_max) o.frame_max = *u.frame_max;
  if (u.connection_timeout) o.connect_timeout = seconds_f(*u.connection_timeout);
  if (u.tls) {
    io::tls_options t;
    if (u.cacertfile) t.ca_file = *u.cacertfile;
    if (u.certfile) t.cert_file = *u.certfile;
    if (u.keyfile) t.key_file = *u.keyfile;
    if (u.verify == tls_verify::verify_none) t.verify_peer = false;
    // "disable" turns SNI off; the certificate is still checked against the host.
    if (u.server_name_indication) {
      t.server_name = *u.server_name_indication == "disable" ? "" : *u.server_name_indication;
    }
    o.ssl = std::move(t);
  }
  for (const std::string& m : u.auth_mechanisms) {
    if (m == "PLAIN") {
      o.authentication.push_back(protocol::sasl_plain(u.user, u.password));
    } else if (m == "AMQPLAIN") {
      o.authentication.push_back(protocol::sasl_amqplain(u.user, u.password));
    } else if (m == "EXTERNAL") {
      o.authentication.push_back(protocol::sasl_external());
    } else {
      throw uri_error("invalid AMQP URI: auth_mechanism " + m +
                      " is not supported (PLAIN, AMQPLAIN or EXTERNAL)");
    }
  }
  return o;
}

std::string encode_arguments(const codec::field_table& t) {
  codec::errc e = codec::errc::ok;
  std::string s = codec::encode_table(t, &e);
  if (e != codec::errc::ok) {
    throw std::invalid_argument("arguments table cannot be encoded: " +
                                std::error_code(e).message());
  }
  return s;
}

codec::exchange_declare exchange_declare_method(std::string_view exchange, std::string_view type,
                                                const exchange_declare_options& o,
                                                std::string_view args) {
  codec::exchange_declare m;
  m.exchange = exchange;
  m.type = type;
  m.passive = o.passive;
  m.durable = o.durable;
  m.auto_delete = o.auto_delete;
  m.internal = o.internal;
  m.nowait = o.nowait;
  m.arguments = codec::table_view{args};
  return m;
}

codec::queue_declare queue_declare_method(std::string_view queue, const queue_declare_options& o,
                                          std::string_view args) {
  codec::queue_declare m;
  m.queue = queue;
  m.passive = o.passive;
  m.durable = o.durable;
  m.exclusive = o.exclusive;
  m.auto_delete = o.auto_delete;
  m.nowait = o.nowait;
  m.arguments = codec::table_view{args};
  return m;
}

codec::queue_bind queue_bind_method(std::string_view queue, std::string_view exchange,
                                    std::string_view routing_key, const bind_options& o,
                                    std::string_view args) {
  codec::queue_bind m;
  m.queue = queue;
  m.exchange = exchange;
  m.routing_key = routing_key;
  m.nowait = o.nowait;
  m.arguments = codec::table_view{args};
  return m;
}

codec::queue_unbind queue_unbind_method(std::string_view queue, std::string_view exchange,
                                        std::string_view routing_key, std::string_view args) {
  codec::queue_unbind m;
  m.queue = queue;
  m.exchange = exchange;
  m.routing_key = routing_key;
  m.arguments = codec::table_view{args};
  return m;
}

codec::exchange_bind exchange_bind_method(std::string_view destination, std::string_view source,
                                          std::string_view routing_key, const bind_options& o,
                                          std::string_view args) {
  codec::exchange_bind m;
  m.destination = destination;
  m.source = source;
  m.routing_key = routing_key;
  m.nowait = o.nowait;
  m.arguments = codec::table_view{args};
  return m;
}

codec::exchange_unbind exchange_unbind_method(std::string_view destination, std::string_view source,
                                              std::string_view routing_key, const bind_options& o,
                                              std::string_view args) {
  codec::exchange_unbind m;
  m.destination = destination;
  m.source = source;
  m.routing_key = routing_key;
  m.nowait = o.nowait;
  m.arguments = codec::table_view{args};
  return m;
}

codec::queue_delete queue_delete_method(std::string_view queue, const queue_delete_options& o) {
  codec::queue_delete m;
  m.queue = queue;
  m.if_unused = o.if_unused;
  m.if_empty = o.if_empty;
  m.nowait = o.nowait;
  return m;
}

codec::basic_consume consume_method(std::string_view queue, const consume_options& o,
                                    std::string_view args) {
  codec::basic_consume m;
  m.queue = queue;
  m.consumer_tag = o.consumer_tag;
  m.no_local = o.no_local;
  m.no_ack = o.no_ack;
  m.exclusive = o.exclusive;
  m.nowait = o.nowait;
  m.arguments = codec::table_view{args};
  return m;
}

}  // namespace warren
