// An application of warren as its users build it: the same source compiles inside the Bazel
// workspace (//tests/install:app_test, against //:warren) and outside it, against the files
// tools/install.sh installs (tests/install/cmake_app with find_package(warren), and
// tests/install/make_app with pkg-config). tests/install/run.sh builds and runs the outside ones.
//
// It publishes with publisher confirms and consumes the message back, through both faces of the
// library: the blocking API publishes (waiting for the ack) and the async engine consumes on a
// TBB worker; then the async engine publishes (waiting for its confirm) and the blocking API
// gets it. It exits 0 only when both messages came back intact (every byte of a body holding
// all 256 octet values, and the properties), and 1 with a line saying what went wrong otherwise,
// including when no broker answers.
//
// Usage: app [AMQP-URI]   (default amqp://guest:guest@127.0.0.1:5672, the broker of
// tools/setup.sh)
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "engine/async/engine.h"
#include "engine/client/connection.h"

namespace {

constexpr auto wait_limit = std::chrono::seconds(30);

// Every octet value, so that a NUL or a high byte lost or changed on the way shows.
std::string body_for(std::string_view tag) {
  std::string body = "warren install check: ";
  body += tag;
  body += '\n';
  for (int i = 0; i < 256; ++i) body += static_cast<char>(i);
  return body;
}

struct received {
  std::string body, content_type, message_id;
};

// Reports a mismatch precisely (length, first differing octet); true when equal.
bool same(const char* what, const received& got, const std::string& body,
          std::string_view content_type, std::string_view message_id) {
  bool ok = true;
  if (got.body != body) {
    std::size_t i = 0;
    while (i < got.body.size() && i < body.size() && got.body[i] == body[i]) ++i;
    std::fprintf(stderr,
                 "%s: body differs: %zu octets back for %zu sent, first difference at %zu\n", what,
                 got.body.size(), body.size(), i);
    ok = false;
  }
  if (got.content_type != content_type || got.message_id != message_id) {
    std::fprintf(stderr, "%s: properties differ: content_type '%s' message_id '%s'\n", what,
                 got.content_type.c_str(), got.message_id.c_str());
    ok = false;
  }
  return ok;
}

int run(const std::string& uri) {
  const std::string queue =
      "warren-install-app-" + std::to_string(::getpid()) + "-" +
      std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  const std::string body1 = body_for("blocking publish, async consume");
  const std::string body2 = body_for("async publish, blocking get");
  const std::string content_type = "application/octet-stream";

  // The blocking face: confirm_publish makes basic_publish wait for the broker's ack.
  warren::connection_options options = warren::connection_options::from_uri(uri);
  options.connect_timeout = warren::seconds_f(10);
  warren::client_options client;
  client.confirm_publish = true;
  client.read_timeout = warren::seconds_f(30);  // bounds every wait for the broker
  warren::connection conn(options, client);
  conn.connect();
  warren::channel& ch = conn.channel();
  warren::queue_declare_options declare{.auto_delete = false};
  // Gone a minute after its last use, should this program die before it deletes the queue.
  declare.arguments.set("x-expires", warren::codec::field_value::i32(60000));
  ch.queue_declare(queue, declare);
  ch.basic_publish(warren::message(body1, {.content_type = content_type, .message_id = "one"}), "",
                   queue, {.confirm_timeout = warren::seconds_f(30)});
  std::printf("published 1 (blocking API, confirmed)\n");

  // The async face: its consumer's handler runs on a TBB worker thread.
  bool ok = true;
  {
    warren::async::engine engine({.io_threads = 1, .workers = 2});
    std::shared_ptr<warren::async::connection> aconn = engine.connect(options);
    std::shared_ptr<warren::async::channel> ach = aconn->open_channel();
    std::promise<received> first;
    std::future<received> first_done = first.get_future();
    std::string tag = ach->basic_consume(queue, [&first](warren::async::delivery& d) {
      received r{std::string(d.body()), std::string(d.properties().content_type),
                 std::string(d.properties().message_id)};
      d.ack();
      first.set_value(std::move(r));
    });
    if (first_done.wait_for(wait_limit) != std::future_status::ready) {
      std::fprintf(stderr, "async consumer: no delivery within 30 s\n");
      return 1;
    }
    ok = same("message 1", first_done.get(), body1, content_type, "one") && ok;
    std::printf("consumed 1 (async engine)\n");
    ach->basic_cancel(tag);

    ach->confirm_select();
    warren::codec::basic_properties props;
    props.flags = warren::codec::basic_properties::content_type_flag |
                  warren::codec::basic_properties::message_id_flag;
    props.content_type = content_type;
    props.message_id = "two";
    std::future<warren::async::confirm_result> confirmed =
        ach->publish_confirmed("", queue, props, body2);
    if (confirmed.wait_for(wait_limit) != std::future_status::ready) {
      std::fprintf(stderr, "async publish: no confirm within 30 s\n");
      return 1;
    }
    if (confirmed.get().what != warren::async::confirm_result::outcome::ack) {
      std::fprintf(stderr, "async publish: not acked by the broker\n");
      return 1;
    }
    std::printf("published 2 (async engine, confirmed)\n");
    aconn->close();
  }

  // A confirmed message is in the queue: basic.get finds it.
  std::optional<warren::message> msg = ch.basic_get(queue, /*no_ack=*/true);
  if (!msg) {
    std::fprintf(stderr, "basic_get: the queue is empty, message 2 is lost\n");
    return 1;
  }
  ok = same("message 2",
            received{std::string(msg->body()), msg->props().content_type.value_or(""),
                     msg->props().message_id.value_or("")},
            body2, content_type, "two") &&
       ok;
  std::printf("got 2 (blocking API)\n");
  ch.queue_delete(queue);
  conn.close();
  if (ok) std::printf("both messages came back intact\n");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string uri = argc > 1 ? argv[1] : "amqp://guest:guest@127.0.0.1:5672";
  try {
    return run(uri);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
