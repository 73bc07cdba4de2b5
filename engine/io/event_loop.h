// One thread's readiness loop: epoll over the sockets it owns, and an eventfd other threads
// write to wake it.
//
// The async engine's I/O threads each run one: they register their connections' sockets with a
// tag (the connection), wait until a socket is ready, a wake-up comes or a deadline passes, and
// act on the events. Deadlines are steady-clock time points with sub-millisecond precision
// (epoll_pwait2; kernels before 5.11 lack it and get milliseconds, rounded up).
//
// Thread rules: everything on the loop's own thread, except wake(), which any thread may call.
// Errors: the constructor throws std::system_error when epoll or the eventfd cannot be made;
// add/modify return the errno of epoll_ctl; wait returns a negative value only for an error
// other than EINTR (an interrupted wait returns 0 events).
#pragma once

#include <chrono>
#include <cstdint>

#include "engine/io/error.h"
#include "engine/io/socket.h"

namespace warren::io {

class event_loop {
 public:
  // What a socket is watched for.
  enum interest : std::uint32_t {
    none = 0,
    readable = 1,
    writable = 2,
  };
  struct event {
    void* tag = nullptr;    // as given to add()/modify()
    bool readable = false;  // data, EOF or an error waits: a read will say which
    bool writable = false;
  };

  event_loop();
  ~event_loop();
  event_loop(const event_loop&) = delete;
  event_loop& operator=(const event_loop&) = delete;

  io_error add(int fd, std::uint32_t interests, void* tag);
  io_error modify(int fd, std::uint32_t interests, void* tag);
  // Stops watching `fd` (before it is closed).
  void remove(int fd) noexcept;

  // Waits until a watched socket is ready, wake() is called, or `deadline` passes
  // (time_point::max(): no deadline; at or before now: only looks). Fills `out` with up to `max`
  // socket events and returns their number; wake-ups are consumed here and not returned.
  int wait(event* out, int max, time_point deadline);

  // Makes the current or next wait() return (any thread). Several wake() calls before the wait
  // returns cost one wake-up; callers that can tell the loop is busy skip the call (see the async
  // engine's io_thread).
  void wake() noexcept;

 private:
  int epoll_fd_ = -1;
  int event_fd_ = -1;
  bool no_pwait2_ = false;  // the kernel said ENOSYS
};

}  // namespace warren::io
