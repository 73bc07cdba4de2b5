#include <iostream>

#include "engine/client/connection.h"
int main() {
  try {
    warren::connection_options o;
    o.host = "127.0.0.1:5672";
    o.heartbeat = 10;
    warren::connection c(o);
    c.connect();
    std::cout << "connected, frame_max=" << c.frame_max() << " hb=" << c.heartbeat() << "\n";
    auto& ch = c.channel();
    auto q = ch.queue_declare("", {.exclusive = true});
    std::cout << "queue " << q.queue << "\n";
    ch.basic_publish(warren::message("hello", {.content_type = "text/plain"}), "", q.queue);
    auto m = ch.basic_get(q.queue, true);
    std::cout << "got " << (m ? m->text() : "nothing") << " ct=" << m->content_type().value_or("-")
              << "\n";
    try {
      ch.queue_declare("nonexistent-q", {.passive = true});
    } catch (const std::exception& e) {
      std::cout << "expected error: " << e.what() << "\n";
    }
    auto q2 = ch.queue_declare("", {.exclusive = true});
    std::cout << "revived, queue " << q2.queue << "\n";
    int n = 0;
    ch.basic_consume(q2.queue, [&](warren::message& msg) {
      ++n;
      msg.ack();
    });
    for (int i = 0; i < 5; ++i)
      ch.basic_publish(warren::message("m" + std::to_string(i)), "", q2.queue);
    while (n < 5) c.drain_events(warren::seconds_f(2));
    std::cout << "consumed " << n << "\n";
    ch.confirm_select();
    ch.basic_publish(warren::message("c"), "", q2.queue);
    ch.wait_for_confirms(warren::seconds_f(5));
    std::cout << "confirmed\n";
    c.close();
    std::cout << "closed\n";
  } catch (const std::exception& e) {
    std::cout << "FAILED: " << e.what() << "\n";
    return 1;
  }
}
