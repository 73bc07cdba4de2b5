// What both faces of warren take: the connection options they share, the option structs of the
// declare, bind, consume and delete calls, and the methods those calls send.
//
// The blocking API (engine/client/connection.h: warren::connection, warren::channel) and the
// async engine (engine/async/engine.h) both take these; each face's own options are in its own
// header (warren::client_options for the blocking API; the async engine's engine_options and
// callbacks). Option structs are meant to be filled with designated initializers, in
// declaration order: `warren::connection_options{.host = "broker:5672", .heartbeat = 10}`.
//
// Threading: plain values, no shared state. Errors: from_uri throws uri_error (engine/uri.h);
// machine_config, encode_arguments, quorum_queue, stream_queue and consume_arguments throw
// std::invalid_argument; check_consume throws stream_consume_error (an std::invalid_argument).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "codec/field_table.h"
#include "codec/methods.h"
#include "engine/io/socket.h"
#include "engine/io/tls.h"
#include "engine/log.h"
#include "engine/protocol/connection_machine.h"
#include "engine/protocol/streams.h"

namespace warren {

// Seconds as a double, as py-amqp's float seconds.
using seconds_f = std::chrono::duration<double>;

// Where a connection with several endpoints starts among them (the Java client's address list,
// PerfTest's --connection-allocation); recovery then goes on from there to the next.
enum class endpoint_allocation : std::uint8_t {
  in_order,     // every connection starts at the first endpoint
  shuffled,     // each connection tries them in its own random order
  round_robin,  // the k-th connection of an engine starts at endpoint k mod n
};

// How to reach and log in to a broker, for either face.
struct connection_options {
  std::string host = "localhost:5672";  // host[:port], [v6]:port
  std::string userid = "guest";
  std::string password = "guest";
  // PLAIN, AMQPLAIN, EXTERNAL, or any other name with login_response (RAW).
  std::optional<std::string> login_method;
  std::optional<std::string> login_response;
  // Explicit mechanisms in preference order; overrides login_method. Empty and no
  // login_method: EXTERNAL, AMQPLAIN, PLAIN (py-amqp's order, GSSAPI aside), the first the
  // broker offers wins.
  std::vector<protocol::sasl_credentials> authentication;
  // Answers a SASL challenge (connection.secure) from the broker: called with the challenge,
  // returns the response that connection.secure-ok carries; once per round, at most 16 rounds.
  // Unset: a challenge fails the connect with amqp_not_implemented_error (540), since the
  // built-in mechanisms have no second step. (py-amqp ignores connection.secure.) Called on the
  // thread that runs the handshake: the blocking connect()'s caller, an I/O thread in the async
  // engine. What it throws fails the connect.
  std::function<std::string(std::string_view challenge)> on_challenge;
  std::string virtual_host = "/";
  std::string locale = "en_US";
  codec::field_table client_properties;
  // TLS when set (py-amqp's ssl=True is `io::tls_options{}`).
  std::optional<io::tls_options> ssl;
  // Bounds the TCP connect and the whole AMQP handshake.
  std::optional<seconds_f> connect_timeout;
  std::uint16_t channel_max = 0;  // 0: 65535
  std::uint32_t frame_max = 0;    // 0: 131072
  std::uint16_t heartbeat = 0;    // seconds; 0 disables
  std::vector<io::socket_option> socket_settings;
  // Capabilities to claim (subset of protocol::handled_capabilities()); empty: all handled.
  std::vector<std::string> negotiate_capabilities;
  // Several endpoints of one cluster: each `host[:port]` or an amqp(s):// URI, of which only the
  // host and port are taken (credentials, vhost and the rest are this struct's). Empty: `host`
  // alone. The connection starts at one of them (`allocation`) and a recovery tries the others.
  std::vector<std::string> endpoints;
  endpoint_allocation allocation = endpoint_allocation::in_order;

  // The host[:port] list the connection uses: `endpoints` (URIs reduced to host:port, an IPv6
  // literal in brackets), or `host` when it is empty. Throws uri_error for a malformed URI.
  std::vector<std::string> endpoint_hosts() const;

  // What the connection tells an operator (README, "Logging"); silent by default. The
  // connection masks its own password in every message (logger::with_secret). The callback runs
  // on the connection's threads until the connection is gone (closed and released, or its engine
  // destroyed): what it refers to must live that long.
  logger log;
  // The application's name for the connection: the `connection_name` label of its metrics and
  // the prefix of its log messages. Empty: none.
  std::string connection_name;

  // Options from an amqp:// or amqps:// URI (RabbitMQ's URI spec and query keys, see
  // engine/uri.h): host, port, user, password and vhost; heartbeat, channel_max, frame_max;
  // connection_timeout as connect_timeout; amqps turns TLS on with cacertfile, certfile,
  // keyfile, verify=verify_none (no peer check) and server_name_indication ("disable": no SNI,
  // the host is still checked); auth_mechanism entries become `authentication` in URI order.
  // Everything else keeps its default. Throws uri_error (never quoting the password) for a URI
  // parse_uri rejects or an auth_mechanism other than PLAIN, AMQPLAIN or EXTERNAL.
  static connection_options from_uri(std::string_view uri);

  // The sans-I/O machine's configuration for these options (both faces use it). Throws
  // std::invalid_argument for an unknown login_method without login_response.
  protocol::connection_config machine_config() const;
};

struct queue_declare_ok {
  std::string queue;
  std::uint32_t message_count = 0;
  std::uint32_t consumer_count = 0;
};

struct exchange_declare_options {
  bool passive = false;
  bool durable = false;
  bool auto_delete = true;
  bool internal = false;
  bool nowait = false;
  codec::field_table arguments;
};
struct queue_declare_options {
  bool passive = false;
  bool durable = false;
  bool exclusive = false;
  bool auto_delete = true;
  bool nowait = false;
  codec::field_table arguments;
};
struct bind_options {
  bool nowait = false;  // queue.unbind has no nowait bit: it always waits
  codec::field_table arguments;
};
struct queue_delete_options {
  bool if_unused = false;
  bool if_empty = false;
  bool nowait = false;
};

// Quorum queues and streams (RabbitMQ 3.10): typed declare options. Each returns a
// queue_declare_options with `arguments` filled in (x-queue-type and the typed fields, on top of
// the given extra `arguments`), durable, not exclusive, not auto-delete (the broker refuses the
// others with 406), so both faces and a recovery's replay send and record it as any declare.
// std::invalid_argument for a value the broker could not read (above 2^63-1, a bad max_age).
struct quorum_queue_options {
  std::optional<std::uint64_t> delivery_limit;      // x-delivery-limit: dead-letter after it
  std::optional<std::uint64_t> initial_group_size;  // x-quorum-initial-group-size
  std::optional<std::uint64_t> max_length;          // x-max-length (messages)
  std::optional<std::uint64_t> max_length_bytes;    // x-max-length-bytes
  codec::field_table arguments;                     // any others, as given
};
queue_declare_options quorum_queue(const quorum_queue_options& o = {});

struct stream_queue_options {
  std::optional<std::uint64_t> max_length_bytes;        // x-max-length-bytes: retention by size
  std::optional<std::uint64_t> max_segment_size_bytes;  // x-stream-max-segment-size-bytes
  // x-max-age: retention by age, a number and a unit Y, M, D, h, m, s ("7D").
  std::optional<std::string> max_age;
  std::optional<std::uint64_t> initial_cluster_size;  // x-initial-cluster-size
  codec::field_table arguments;                       // any others, as given
};
queue_declare_options stream_queue(const stream_queue_options& o = {});

using cancel_callback = std::function<void(std::string_view consumer_tag)>;

struct consume_options {
  std::string consumer_tag;  // empty: the broker assigns one
  bool no_local = false;
  bool no_ack = false;
  bool exclusive = false;
  // Sends basic.consume without waiting for consume-ok; needs consumer_tag (nothing would tell
  // the broker's choice).
  bool nowait = false;
  codec::field_table arguments;
  // Called when the broker cancels the consumer (queue deleted, ...). Where it runs is the
  // face's: the blocking API calls it from the call that read the cancel (without one, that call
  // raises consumer_cancelled, as py-amqp); the async engine on the connection's I/O thread.
  cancel_callback on_cancel;
  // Consumes a stream from this point (sent as the x-stream-offset argument, replacing one in
  // `arguments`; stream_offset in engine/protocol/streams.h). Setting it, even to next (the
  // broker's default), marks the consumer as a stream consumer: the call is checked before
  // anything is sent (check_consume), and the offset of each delivery the application settles
  // is tracked for a recovery to resume after. An x-stream-offset in `arguments` does the same.
  std::optional<stream_offset> stream_start;
};

// Thrown by basic_consume, before anything is sent, when a stream consumer (see
// consume_options::stream_start) lacks what RabbitMQ requires of it: manual acknowledgement
// (no_ack would make the broker close the whole connection with 540 NOT_IMPLEMENTED) and a
// consumer prefetch on the channel (basic_qos with prefetch_count > 0 and global false; without
// one, or with only a global one, the broker closes the channel with 406 PRECONDITION_FAILED).
class stream_consume_error : public std::invalid_argument {
 public:
  enum class reason : std::uint8_t { no_ack, prefetch_not_set };
  stream_consume_error(reason r, std::string_view queue);
  reason why() const noexcept { return reason_; }

 private:
  reason reason_;
};

// Whether `o` consumes a stream as far as the options tell: stream_start set, or x-stream-offset
// in the arguments.
bool is_stream_consume(const consume_options& o) noexcept;
// basic.consume's arguments: o.arguments with x-stream-offset from o.stream_start.
codec::field_table consume_arguments(const consume_options& o);
// Throws stream_consume_error when `o` is a stream consume and no_ack is set, or no consumer
// prefetch is set on the channel (`consumer_prefetch`: the prefetch_count of the channel's last
// basic.qos with global false that the broker acknowledged; nullopt or 0: none).
void check_consume(std::string_view queue, const consume_options& o,
                   std::optional<std::uint16_t> consumer_prefetch);

// An arguments table encoded for the wire (codec::encode_table); std::invalid_argument when it
// cannot be (a value too long for its type).
std::string encode_arguments(const codec::field_table& t);

// The methods for these options, as both faces send them. `args` is encode_arguments() of the
// options' `arguments`; the result views it and the names, which must outlive it.
codec::exchange_declare exchange_declare_method(std::string_view exchange, std::string_view type,
                                                const exchange_declare_options& o,
                                                std::string_view args);
codec::queue_declare queue_declare_method(std::string_view queue, const queue_declare_options& o,
                                          std::string_view args);
codec::queue_bind queue_bind_method(std::string_view queue, std::string_view exchange,
                                    std::string_view routing_key, const bind_options& o,
                                    std::string_view args);
// queue.unbind has no nowait bit: o.nowait is not sent.
codec::queue_unbind queue_unbind_method(std::string_view queue, std::string_view exchange,
                                        std::string_view routing_key, std::string_view args);
codec::exchange_bind exchange_bind_method(std::string_view destination, std::string_view source,
                                          std::string_view routing_key, const bind_options& o,
                                          std::string_view args);
codec::exchange_unbind exchange_unbind_method(std::string_view destination, std::string_view source,
                                              std::string_view routing_key, const bind_options& o,
                                              std::string_view args);
codec::queue_delete queue_delete_method(std::string_view queue, const queue_delete_options& o);
codec::basic_consume consume_method(std::string_view queue, const consume_options& o,
                                    std::string_view args);

}  // namespace warren
