#include "engine/close_error.h"

#include <string>

#include "codec/methods.h"

namespace warren {

std::exception_ptr error_from(const protocol::close_reason& why) {
  if (why.reply_code == 0) {
    return std::make_exception_ptr(recoverable_connection_error(
        why.reply_text.empty() ? std::string("connection lost") : why.reply_text));
  }
  return make_error(why.reply_code, why.reply_text, why.class_id, why.method_id,
                    std::string(codec::method_name(why.class_id, why.method_id)));
}

}  // namespace warren
