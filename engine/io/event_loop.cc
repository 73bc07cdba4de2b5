#include "engine/io/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace warren::io {
namespace {

std::uint32_t epoll_bits(std::uint32_t interests) noexcept {
  std::uint32_t e = 0;
  if (interests & event_loop::readable) e |= EPOLLIN;
  if (interests & event_loop::writable) e |= EPOLLOUT;
  return e;
}

io_error ctl_error(const char* what) {
  io_error err;
  err.code = std::error_code(errno, std::system_category());
  err.message = std::string("epoll_ctl ") + what + ": " + err.code.message();
  return err;
}

}  // namespace

event_loop::event_loop() {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_fd_ < 0 || event_fd_ < 0) {
    const int e = errno;
    if (epoll_fd_ >= 0) ::close(epoll_fd_);
    if (event_fd_ >= 0) ::close(event_fd_);
    throw std::system_error(e, std::system_category(), "epoll/eventfd");
  }
  epoll_event e{};
  e.events = EPOLLIN;
  e.data.ptr = nullptr;  // the wake-up
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, event_fd_, &e) < 0) {
    const int err = errno;
    ::close(epoll_fd_);
    ::close(event_fd_);
    throw std::system_error(err, std::system_category(), "epoll_ctl eventfd");
  }
}

event_loop::~event_loop() {
  ::close(event_fd_);
  ::close(epoll_fd_);
}

io_error event_loop::add(int fd, std::uint32_t interests, void* tag) {
  epoll_event e{};
  e.events = epoll_bits(interests);
  e.data.ptr = tag;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &e) < 0) return ctl_error("add");
  return {};
}

io_error event_loop::modify(int fd, std::uint32_t interests, void* tag) {
  epoll_event e{};
  e.events = epoll_bits(interests);
  e.data.ptr = tag;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &e) < 0) return ctl_error("modify");
  return {};
}

void event_loop::remove(int fd) noexcept {
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
}

void event_loop::wake() noexcept {
  const std::uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(event_fd_, &one, sizeof one);
}

int event_loop::wait(event* out, int max, time_point deadline) {
  epoll_event evs[64];
  const int want = std::clamp(max, 1, 64);
  int n = 0;
  if (deadline == time_point::max()) {
    n = ::epoll_wait(epoll_fd_, evs, want, -1);
  } else {
    const time_point now = std::chrono::steady_clock::now();
    const auto left =
        deadline <= now ? std::chrono::steady_clock::duration::zero() : deadline - now;
    n = -1;
    if (!no_pwait2_) {
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
      const timespec ts{static_cast<time_t>(ns / 1'000'000'000),
                        static_cast<long>(ns % 1'000'000'000)};
      n = ::epoll_pwait2(epoll_fd_, evs, want, &ts, nullptr);
      if (n < 0 && errno == ENOSYS) no_pwait2_ = true;
    }
    if (no_pwait2_) {
      n = ::epoll_wait(
          epoll_fd_, evs, want,
          static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count()));
    }
  }
  if (n < 0) return errno == EINTR ? 0 : -1;
  int got = 0;
  for (int i = 0; i < n; ++i) {
    if (evs[i].data.ptr == nullptr) {
      std::uint64_t v;
      [[maybe_unused]] ssize_t r = ::read(event_fd_, &v, sizeof v);
      continue;
    }
    event& e = out[got++];
    e.tag = evs[i].data.ptr;
    e.readable = (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0;
    e.writable = (evs[i].events & EPOLLOUT) != 0;
  }
  return got;
}

}  // namespace warren::io
