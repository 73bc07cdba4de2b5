// What the application declared on one connection, sans-I/O: exchanges, queues (a server-named
// one under the name the broker gave it), queue and exchange-to-exchange bindings, and consumers,
// for a recovery to declare again. Both faces record into it, after the broker accepted the call
// (or, with nowait, once it was sent).
//
// Order. Each kind keeps declaration order (a redeclaration moves the entity to the end, with its
// new options), and a replay goes kind by kind: exchanges, queues, bindings, consumers. So every
// binding's ends and every consumer's queue are declared before they are used.
//
// Deletions cascade: deleting a queue removes its bindings and consumers; deleting an exchange
// removes the bindings it is the source of, or the destination of an exchange-to-exchange
// binding. A broker-side cancel or the close of a channel removes its consumers. What the broker
// deletes by itself (auto-delete, exclusive queues of a closed connection) is the recovery's to
// judge when it replays: an auto-delete queue is still recorded after its last consumer went.
//
// Renaming. A server-named queue gets a new name when it is declared again (rename_queue):
// its bindings and consumers follow it.
//
// No threads, no clock. Threading: one thread at a time (the async engine guards it with a lock,
// since any thread may read a snapshot).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "codec/field_table.h"
#include "engine/options.h"

namespace warren::protocol {

struct exchange_record {
  std::string name, type;
  exchange_declare_options options;  // nowait is never recorded (a replay waits)
};
struct queue_record {
  std::string name;  // the broker's name when it was server-named
  queue_declare_options options;
  bool server_named = false;
};
struct binding_record {
  enum class kind : std::uint8_t { queue, exchange } what;  // queue.bind or exchange.bind
  std::string destination, source, routing_key;
  codec::field_table arguments;
};
struct consumer_record {
  std::uint16_t channel = 0;
  std::string queue, consumer_tag;
  bool no_ack = false, exclusive = false, no_local = false;
  codec::field_table arguments;  // as sent: a stream consumer's x-stream-offset included
  // A stream consumer's last handled offset (stream_progress::last_handled), recorded when it left
  // its channel's consumer table at the end of the channel's life; nullopt otherwise.
  // replay_arguments() turns it into where a replay resumes.
  std::optional<std::uint64_t> stream_last_handled;
};

// The arguments a replay of `r` sends: r.arguments, and for a stream consumer with a recorded
// stream_last_handled, x-stream-offset at the offset after it (not the original start: what the
// application handled is not read again).
codec::field_table replay_arguments(const consumer_record& r);
// A snapshot: each kind in declaration order.
struct topology_record {
  std::vector<exchange_record> exchanges;
  std::vector<queue_record> queues;
  std::vector<binding_record> bindings;
  std::vector<consumer_record> consumers;
};

// Which entities a snapshot keeps; an empty predicate keeps every entity of its kind.
struct topology_filter {
  std::function<bool(const exchange_record&)> exchanges;
  std::function<bool(const queue_record&)> queues;
  std::function<bool(const binding_record&)> bindings;
  std::function<bool(const consumer_record&)> consumers;
};

class topology {
 public:
  // exchange.declare-ok (or sent with nowait). A passive declare is not recorded.
  void declare_exchange(std::string_view name, std::string_view type,
                        const exchange_declare_options& o);
  // exchange.delete: the exchange and the bindings naming it go.
  void delete_exchange(std::string_view name);
  // queue.declare-ok, under the name the broker returned. A passive declare, or an empty name
  // (server-named with nowait: the name is unknown), is not recorded.
  void declare_queue(std::string_view name, const queue_declare_options& o, bool server_named);
  // queue.delete: the queue, its bindings and its consumers go.
  void delete_queue(std::string_view name);
  // queue.bind / exchange.bind; the same binding twice is recorded once.
  void bind(binding_record::kind k, std::string_view destination, std::string_view source,
            std::string_view routing_key, const codec::field_table& arguments);
  void unbind(binding_record::kind k, std::string_view destination, std::string_view source,
              std::string_view routing_key, const codec::field_table& arguments);
  // basic.consume-ok (or sent with nowait), under the broker's tag.
  void consume(consumer_record r);
  // basic.cancel-ok, a nowait cancel, or the broker's basic.cancel.
  void cancel(std::uint16_t channel, std::string_view consumer_tag);
  // A stream consumer's last handled offset as it left its channel's consumer table (see
  // consumer_record::stream_last_handled). False when no consumer record matches.
  bool stream_handled(std::uint16_t channel, std::string_view consumer_tag, std::uint64_t offset);
  // The channel closed: its consumers go.
  void close_channel(std::uint16_t channel);
  // A server-named queue was declared again and the broker named it `to`: the queue, its
  // bindings and its consumers follow. False (nothing changes) when no queue is named `from`.
  bool rename_queue(std::string_view from, std::string_view to);

  const topology_record& record() const noexcept { return record_; }
  // A copy without the entities `filter` leaves out.
  topology_record snapshot(const topology_filter& filter = {}) const;
  bool empty() const noexcept;

 private:
  topology_record record_;
};

}  // namespace warren::protocol
