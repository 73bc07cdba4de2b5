#include "tests/support/fault_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <list>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <vector>

namespace warren::test {
namespace {

std::system_error sys_error(const char* what) {
  return std::system_error(errno, std::generic_category(), what);
}

sockaddr_in resolve(const std::string& host, std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  const std::string h = host == "localhost" ? "127.0.0.1" : host;
  if (::inet_pton(AF_INET, h.c_str(), &a.sin_addr) != 1) {
    throw std::invalid_argument("fault_proxy: target '" + host +
                                "' is not an IPv4 address or localhost");
  }
  return a;
}

// Closes `fd` so that the peer gets a RST rather than a FIN.
void close_with_reset(int fd) {
  if (fd < 0) return;
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd);
}

// Bytes read from one side and not yet written to the other.
struct pipe_buffer {
  std::vector<char> data;
  std::size_t begin = 0, end = 0;
  bool src_eof = false;   // the source sent FIN
  bool dst_shut = false;  // the FIN was passed on
  // Bytes still allowed through before the drop rule cuts the connection; none: no limit.
  std::optional<std::uint64_t> allowance;

  std::size_t pending() const { return end - begin; }
  std::size_t room() const { return data.size() - end + begin; }
  bool finished() const { return src_eof && pending() == 0; }
};

}  // namespace

struct fault_proxy::state {
  struct conn {
    int client = -1;
    int target = -1;
    bool connecting = true;  // the connect to the target is in progress
    bool silenced = false;   // cut by the drop rule in `silence` mode
    pipe_buffer dir[2];      // [flow::to_target], [flow::to_client]
  };

  sockaddr_in target{};
  bool frozen = false;
  bool refusing = false;
  bool stop = false;
  struct rule {
    flow direction;
    std::uint64_t bytes;
    cut_mode mode;
  };
  std::optional<rule> drop;
  std::list<conn> conns;
  std::chrono::steady_clock::time_point accept_pause_until{};
};

namespace {
constexpr int up = static_cast<int>(flow::to_target);
constexpr int down = static_cast<int>(flow::to_client);
}  // namespace

fault_proxy::fault_proxy(const std::string& target_host, std::uint16_t target_port,
                         const fault_proxy_options& options)
    : options_(options), state_(std::make_unique<state>()) {
  state_->target = resolve(target_host, target_port);
  if (options_.buffer_bytes == 0) options_.buffer_bytes = 1;
  try {
    // The port is picked by the kernel, then bound again explicitly: a socket bound to an
    // explicit port keeps it while it does not listen (refuse_new), one bound to port 0 does not.
    const int probe = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) throw sys_error("fault_proxy: socket");
    const int one = 1;
    ::setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(probe, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(probe, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      const auto e = sys_error("fault_proxy: bind 127.0.0.1:0");
      ::close(probe);
      throw e;
    }
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0) {
      ::close(probe);
      throw sys_error("fault_proxy: socket");
    }
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    const int bound = ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::close(probe);
    if (bound != 0 || ::listen(listen_fd_, 128) != 0) throw sys_error("fault_proxy: listen");
    port_ = ntohs(a.sin_port);
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) throw sys_error("fault_proxy: eventfd");
    thread_ = std::thread([this] { run(); });
  } catch (...) {
    if (listen_fd_ >= 0) ::close(listen_fd_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
    throw;
  }
}

fault_proxy::~fault_proxy() {
  apply([](state& s) { s.stop = true; });
  thread_.join();
  for (auto& c : state_->conns) {
    ::close(c.client);
    if (c.target >= 0) ::close(c.target);
  }
  ::close(listen_fd_);
  ::close(wake_fd_);
}

std::string fault_proxy::address() const {
  return "127.0.0.1:" + std::to_string(port_);
}

void fault_proxy::apply(std::function<void(state&)> change) {
  std::unique_lock<std::mutex> lock(mu_);
  changes_.push_back(std::move(change));
  const std::uint64_t mine = ++submitted_;
  const std::uint64_t one = 1;
  // An eventfd write fails only when the counter would overflow: the thread is awake then.
  [[maybe_unused]] const ssize_t n = ::write(wake_fd_, &one, sizeof one);
  applied_cv_.wait(lock, [&] { return applied_ >= mine; });
}

void fault_proxy::freeze() {
  apply([](state& s) { s.frozen = true; });
}

void fault_proxy::thaw() {
  apply([](state& s) { s.frozen = false; });
}

void fault_proxy::reset_connections() {
  apply([this](state& s) {
    for (auto& c : s.conns) {
      close_with_reset(c.client);
      close_with_reset(c.target);
    }
    open_ -= s.conns.size();
    s.conns.clear();
  });
}

void fault_proxy::drop_after(flow direction, std::uint64_t bytes, cut_mode mode) {
  apply([this, direction, bytes, mode](state& s) {
    s.drop = state::rule{direction, bytes, mode};
    for (auto it = s.conns.begin(); it != s.conns.end();) {
      it->dir[static_cast<int>(direction)].allowance = bytes;
      if (bytes > 0 || it->silenced) {
        ++it;
        continue;
      }
      // Nothing more may pass: cut now rather than at the connection's next event.
      ++cut_;
      if (mode == cut_mode::silence) {
        it->silenced = true;
        ++it;
      } else {
        close_with_reset(it->client);
        close_with_reset(it->target);
        --open_;
        it = s.conns.erase(it);
      }
    }
  });
}

void fault_proxy::clear_drop() {
  apply([](state& s) {
    s.drop.reset();
    for (auto& c : s.conns) c.dir[up].allowance.reset(), c.dir[down].allowance.reset();
  });
}

void fault_proxy::refuse_new(bool refuse) {
  apply([this, refuse](state& s) {
    if (refuse == s.refusing) return;
    s.refusing = refuse;
    // A listening socket that is shut down refuses connections but keeps its explicitly bound
    // port; listen() makes it accept again.
    if (refuse) {
      ::shutdown(listen_fd_, SHUT_RD);
    } else {
      ::listen(listen_fd_, 128);
    }
  });
}

void fault_proxy::set_target(const std::string& host, std::uint16_t port) {
  const sockaddr_in a = resolve(host, port);
  apply([a](state& s) { s.target = a; });
}

fault_proxy_stats fault_proxy::stats() {
  fault_proxy_stats out;
  apply([&](state&) {
    out = {accepted_.load(), open_.load(), cut_.load(), forwarded_[up].load(),
           forwarded_[down].load()};
  });
  return out;
}

std::uint64_t fault_proxy::bytes_forwarded(flow direction) const {
  return forwarded_[static_cast<int>(direction)].load();
}

void fault_proxy::run() {
  state& s = *state_;
  std::vector<pollfd> fds;
  std::vector<state::conn*> owners;  // owners[i]: the connection of fds[i], or null

  // Closes `c` (a RST to both peers when `reset`), and erases it.
  auto close_conn = [&](std::list<state::conn>::iterator it, bool reset) {
    if (reset) {
      close_with_reset(it->client);
      close_with_reset(it->target);
    } else {
      ::close(it->client);
      if (it->target >= 0) ::close(it->target);
    }
    --open_;
    return s.conns.erase(it);
  };

  // Moves what it can in direction d of `c`. Returns false when the connection failed (the
  // caller resets it).
  auto pump = [&](state::conn& c, int d, bool& progressed) {
    pipe_buffer& b = c.dir[d];
    const int src = d == up ? c.client : c.target;
    const int dst = d == up ? c.target : c.client;
    for (;;) {
      bool moved = false;
      if (b.pending() > 0) {
        std::size_t n = b.pending();
        if (b.allowance) n = std::min<std::uint64_t>(n, *b.allowance);
        if (n > 0) {
          const ssize_t w = ::send(dst, b.data.data() + b.begin, n, MSG_NOSIGNAL);
          if (w < 0 && errno != EAGAIN && errno != EINTR) return false;
          if (w > 0) {
            b.begin += std::size_t(w);
            forwarded_[d] += std::uint64_t(w);
            if (b.allowance) *b.allowance -= std::uint64_t(w);
            moved = progressed = true;
          }
        }
        if (b.begin == b.end) b.begin = b.end = 0;
      }
      if (b.allowance && *b.allowance == 0) return true;  // the caller applies the cut
      if (!b.src_eof && b.room() > 0) {
        if (b.end == b.data.size()) {  // room is at the front: move the pending bytes there
          std::memmove(b.data.data(), b.data.data() + b.begin, b.pending());
          b.end -= b.begin;
          b.begin = 0;
        }
        const ssize_t r = ::recv(src, b.data.data() + b.end, b.data.size() - b.end, 0);
        if (r == 0) {
          b.src_eof = moved = progressed = true;
        } else if (r > 0) {
          b.end += std::size_t(r);
          moved = progressed = true;
        } else if (errno != EAGAIN && errno != EINTR) {
          return false;
        }
      }
      if (b.finished() && !b.dst_shut) {
        ::shutdown(dst, SHUT_WR);
        b.dst_shut = progressed = true;
      }
      if (!moved) return true;
    }
  };

  auto accept_new = [&] {
    for (;;) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // Out of descriptors: try again later instead of spinning on a readable listener.
          s.accept_pause_until = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
        }
        return;
      }
      ++accepted_;
      const int t = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (t < 0) {
        close_with_reset(fd);
        continue;
      }
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ::setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (::connect(t, reinterpret_cast<const sockaddr*>(&s.target), sizeof s.target) != 0 &&
          errno != EINPROGRESS) {
        ::close(t);
        close_with_reset(fd);
        continue;
      }
      state::conn& c = s.conns.emplace_back();
      c.client = fd;
      c.target = t;
      for (auto& b : c.dir) b.data.resize(options_.buffer_bytes);
      if (s.drop) c.dir[static_cast<int>(s.drop->direction)].allowance = s.drop->bytes;
      ++open_;
    }
  };

  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::uint64_t counter;
      [[maybe_unused]] const ssize_t n = ::read(wake_fd_, &counter, sizeof counter);
      while (!changes_.empty()) {
        changes_.front()(s);
        changes_.pop_front();
        ++applied_;
      }
      applied_cv_.notify_all();
      if (s.stop) return;
    }

    fds.clear();
    owners.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    owners.push_back(nullptr);
    const auto now = std::chrono::steady_clock::now();
    const bool accepting = !s.frozen && !s.refusing && now >= s.accept_pause_until;
    // fd -1 is ignored by poll: a listener that does not accept and a frozen or silenced
    // connection are not watched at all (not even for errors or hang-ups), as a dead network.
    fds.push_back({accepting ? listen_fd_ : -1, POLLIN, 0});
    owners.push_back(nullptr);
    for (auto& c : s.conns) {
      const bool idle = s.frozen || c.silenced;
      short ce = 0, te = 0;
      if (c.connecting) {
        te = POLLOUT;
      } else {
        const pipe_buffer& u = c.dir[up];
        const pipe_buffer& d = c.dir[down];
        if (!u.src_eof && u.room() > 0) ce |= POLLIN;
        if (d.pending() > 0) ce |= POLLOUT;
        if (!d.src_eof && d.room() > 0) te |= POLLIN;
        if (u.pending() > 0) te |= POLLOUT;
      }
      // A socket nothing is wanted from is not watched either: poll reports a hang-up whatever
      // the events asked, and one that cannot be acted on yet would be reported again at once.
      fds.push_back({idle || ce == 0 ? -1 : c.client, ce, 0});
      owners.push_back(&c);
      fds.push_back({idle || te == 0 ? -1 : c.target, te, 0});
      owners.push_back(&c);
    }
    int timeout = -1;
    if (!s.frozen && !s.refusing && now < s.accept_pause_until) timeout = 100;
    if (::poll(fds.data(), fds.size(), timeout) < 0 && errno != EINTR) continue;

    if (fds[1].revents & POLLIN) accept_new();

    std::size_t i = 2;
    for (auto it = s.conns.begin(); it != s.conns.end() && i < fds.size();) {
      state::conn& c = *it;
      if (&c != owners[i]) {  // accepted in this round: not polled yet
        ++it;
        continue;
      }
      const short cr = fds[i].revents, tr = fds[i + 1].revents;
      i += 2;
      if ((cr | tr) == 0) {
        ++it;
        continue;
      }
      if (c.connecting) {  // only the target is watched, for the end of the connect
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(c.target, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {  // the target refused: the client gets a RST, as from a refusing broker
          it = close_conn(it, true);
          continue;
        }
        c.connecting = false;
      }
      bool progressed = false;
      bool ok = pump(c, up, progressed) && pump(c, down, progressed);
      bool reset = !ok;
      bool cut_now = false;
      for (int d : {up, down}) {
        if (ok && c.dir[d].allowance && *c.dir[d].allowance == 0) cut_now = true;
      }
      if (cut_now) {
        ++cut_;
        if (s.drop && s.drop->mode == cut_mode::reset) {
          reset = true;
        } else {
          c.silenced = true;
        }
      }
      // A hang-up or error that moved nothing would be reported again at once: give up on it.
      if (!reset && !progressed && !c.silenced && ((cr | tr) & (POLLERR | POLLHUP | POLLNVAL))) {
        reset = true;
      }
      if (reset) {
        it = close_conn(it, true);
      } else if (c.dir[up].finished() && c.dir[down].finished()) {
        it = close_conn(it, false);  // both sides closed and everything was passed on
      } else {
        ++it;
      }
    }
  }
}

}  // namespace warren::test
