// One client connection of the null broker, sans-I/O: bytes from the client go in, control
// bytes and pre-encoded deliveries come out. The null broker is a measuring instrument for the
// client alone (issue 4): it completes the AMQP 0-9-1 handshake, answers the methods a
// benchmark client sends, discards publishes and, in firehose mode, floods consumers with
// deliveries. It keeps no queues and routes nothing; never use it in place of RabbitMQ in a
// test of behaviour.
//
// Cost model (why the receive path looks the way it does): the sink must not be the bottleneck
// of a writer that pushes tens of millions of 16-octet publishes a second. Reads land straight
// in the session's buffer (read_space/commit_read); complete frames are found by their headers
// alone; a publish is recognised by its 4 method-id octets and counted, its content frames
// skipped, and a body frame that runs past the end of the buffer is skipped on the next reads
// without being copied. Only method frames other than basic.publish are decoded.
//
// Threads: a session belongs to one thread at a time. Nothing here blocks, allocates on the
// per-message path, or throws except std::bad_alloc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "codec/error.h"

namespace warren::null_broker {

enum class mode { sink, firehose };

struct options {
  null_broker::mode mode = mode::sink;
  // Body octets of each firehose delivery (0: no body frame).
  std::size_t body_size = 16;
  // Offered in connection.tune; the client's tune-ok value is then used (0 there: ours).
  std::uint32_t frame_max = 131072;
  // Offered in connection.tune, in seconds; the client's tune-ok value is then used.
  std::uint16_t heartbeat = 0;
  // Octets of pre-encoded deliveries per chunk handed to the socket at once.
  std::size_t firehose_chunk_octets = 256 * 1024;
};

inline constexpr std::uint16_t channel_max = 2047;

// What one session has done so far; every counter only grows.
struct counters {
  std::uint64_t published = 0;      // basic.publish frames received
  std::uint64_t delivered = 0;      // basic.deliver frames handed out by next_deliveries()
  std::uint64_t acks_sent = 0;      // basic.ack frames sent (confirms)
  std::uint64_t acks_received = 0;  // basic.ack / nack / reject frames received (consumers)
  std::uint64_t octets_received = 0;
};

class session {
 public:
  // Queues the protocol header check; connection.start is sent once the client's protocol
  // header has arrived.
  explicit session(const options& o);

  // Where the next read may put its bytes: at least 64 KiB, until commit_read().
  char* read_space() noexcept { return in_.data() + in_used_; }
  std::size_t read_space_size() const noexcept { return in_.size() - in_used_; }

  // Processes `n` octets just read into read_space(). Returns false when the connection must
  // be closed: after a protocol error (a connection.close has then been queued, or, for a bad
  // protocol header, our own header) or once the client's connection.close-ok or our
  // close-ok has been queued. Flush take_control() before closing either way. Confirms for the
  // publishes of this batch are queued as one basic.ack multiple=true per channel.
  bool commit_read(std::size_t n);

  // Moves the queued control frames (method replies, confirms, heartbeats) to the end of
  // `out`. Call only when no chunk from next_deliveries() is partly written, so that a reply
  // never lands inside another content's frames.
  void take_control(std::string& out);
  bool has_control() const noexcept { return !control_.empty(); }

  // Firehose: the next chunk of pre-encoded deliveries for one of the live consumers (taking
  // turns), delivery tags already patched; empty when there is none or in sink mode. The view
  // is valid until the next call of next_deliveries() or the session's destruction, and the
  // caller must write all of it before it calls take_control() or next_deliveries() again.
  std::string_view next_deliveries();

  // Queues a heartbeat frame (the caller keeps the time).
  void queue_heartbeat();
  // The heartbeat interval agreed in tune-ok, in seconds (0: none, or not negotiated yet).
  std::uint16_t heartbeat() const noexcept { return heartbeat_; }
  bool open() const noexcept { return state_ == state::open; }

  const counters& totals() const noexcept { return counters_; }

 private:
  enum class state { protocol_header, start_ok, tune_ok, connection_open, open, closing };

  struct channel_state {
    bool open = false;
    bool confirm = false;
    bool ack_due = false;
    std::uint64_t published = 0;      // confirm sequence: tags of this channel's publishes
    std::uint64_t next_delivery = 1;  // next basic.deliver tag
  };

  // A consumer's pre-encoded deliveries: `chunk` holds `tag_offsets.size()` deliveries whose
  // 8-octet delivery tags sit at those offsets.
  struct stream {
    std::uint16_t channel = 0;
    std::string consumer_tag;
    std::string chunk;
    std::vector<std::size_t> tag_offsets;
    bool cancelled = false;
  };

  bool process_frames(const char* p, std::size_t n, std::size_t& consumed);
  bool on_method(std::uint16_t channel, std::string_view payload);
  bool on_protocol_header(std::string_view header);
  template <class Method>
  void send(std::uint16_t channel, const Method& m);
  bool close_connection(std::uint16_t code, std::string_view text, std::uint32_t method_id);
  void queue_confirms();
  void start_stream(std::uint16_t channel, std::string_view consumer_tag, std::string_view queue);
  void drop_streams(std::uint16_t channel, std::string_view consumer_tag);

  options options_;
  state state_ = state::protocol_header;
  std::uint32_t frame_max_;
  std::uint16_t heartbeat_ = 0;

  // Received octets: [0, in_used_) are unprocessed (a partial frame); reads append after them.
  std::string in_;
  std::size_t in_used_ = 0;
  // Octets of a body frame still to be thrown away as they arrive.
  std::uint64_t skip_ = 0;

  std::string control_;
  std::vector<channel_state> channels_;
  std::vector<std::uint16_t> ack_due_;
  std::vector<stream> streams_;
  std::size_t next_stream_ = 0;
  std::uint64_t generated_names_ = 0;
  counters counters_;
};

}  // namespace warren::null_broker
