// The exception a connection's or channel's end stands for, for both faces: what a call waiting
// on it throws (the blocking API) or rethrows from its future (the async engine).
#pragma once

#include <exception>

#include "engine/errors.h"
#include "engine/protocol/connection_machine.h"

namespace warren {

// The class error_for_code gives the reply code (404: not_found, 320: connection_forced, ...),
// with the reply text and the failing method's ids and name. Reply code 0 (no AMQP close: the
// transport ended) is recoverable_connection_error with the reason's text, or "connection lost"
// when it has none.
std::exception_ptr error_from(const protocol::close_reason& why);

}  // namespace warren
