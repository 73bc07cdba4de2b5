// Turns rabbitmq-c's two error channels (RPC replies and status codes) into exceptions for the
// bench drivers, which report them on one line and exit non-zero.
#pragma once

#include <amqp.h>

#include <stdexcept>
#include <string>

namespace warren::bench {

inline void check_rpc(amqp_connection_state_t conn, const char* what) {
  const amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    throw std::runtime_error(std::string(what) + " failed (reply type " +
                             std::to_string(r.reply_type) + ")");
  }
}

inline void check_status(int status, const char* what) {
  if (status != AMQP_STATUS_OK) {
    throw std::runtime_error(std::string(what) + ": " + amqp_error_string2(status));
  }
}

}  // namespace warren::bench
