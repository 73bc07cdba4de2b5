// The physical ceiling of publishing on this machine: a writer with no client logic at all.
// It connects (PLAIN, channel 1), encodes one basic.publish + header + body with warren's codec,
// copies it into a large chunk, and then only writes that chunk again and again with blocking
// send() calls. No per-message work remains but the kernel's. The time ends with a
// channel.close round trip, so that it covers the peer having read every message.
//
//   preencoded_writer [--uri amqp://guest:guest@127.0.0.1:5672/ | HOST:PORT] [--size 16]
//                     [--seconds 5 | --count N] [--exchange ""] [--routing-key ""]
//                     [--chunk-octets 1048576]
//
// Against RabbitMQ, or the null broker's sink (tools/null_broker). Prints one JSON line:
// {"client": "preencoded", "mode": "publish", "msgs": .., "seconds": .., "msg_per_s": ..,
//  "cpu_us_per_msg": ..}; CPU is getrusage of the process, user + sys, over the timed part.
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

#include "bench/driver.h"
#include "codec/frame.h"
#include "codec/methods.h"
#include "codec/publish.h"
#include "engine/uri.h"

namespace {

namespace codec = warren::codec;
namespace wb = warren::bench;

constexpr std::uint16_t channel = 1;
constexpr std::uint32_t frame_max = 131072;

struct args {
  std::string uri = "amqp://guest:guest@127.0.0.1:5672/";
  std::size_t size = 16;
  double seconds = 5;
  long count = 0;  // when set, overrides seconds
  std::string exchange;
  std::string routing_key;
  std::size_t chunk_octets = 1 << 20;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "preencoded_writer: %s\nusage: preencoded_writer [--uri URI] [--size 16] "
               "[--seconds 5 | --count N] [--exchange E] [--routing-key K] "
               "[--chunk-octets 1048576]\n",
               why);
  std::exit(2);
}

template <class T>
T number(const char* s) {
  T v{};
  const std::string_view in(s);
  const auto [end, ec] = std::from_chars(in.data(), in.data() + in.size(), v);
  if (ec != std::errc() || end != in.data() + in.size()) usage("bad number");
  return v;
}

args parse(int argc, char** argv) {
  args a;
  for (int i = 1; i < argc; i += 2) {
    const std::string_view f = argv[i];
    if (i + 1 >= argc) usage("an option without its value");
    const char* v = argv[i + 1];
    if (f == "--uri") {
      a.uri = v;
    } else if (f == "--size") {
      a.size = number<std::size_t>(v);
    } else if (f == "--seconds") {
      a.seconds = std::strtod(v, nullptr);
    } else if (f == "--count") {
      a.count = number<long>(v);
    } else if (f == "--exchange") {
      a.exchange = v;
    } else if (f == "--routing-key") {
      a.routing_key = v;
    } else if (f == "--chunk-octets") {
      a.chunk_octets = number<std::size_t>(v);
    } else {
      usage("unknown option");
    }
  }
  if (a.count <= 0 && a.seconds <= 0) usage("--seconds or --count must be positive");
  return a;
}

// A blocking connection that reads and writes whole frames; enough for the handshake.
class wire {
 public:
  explicit wire(const warren::connection_uri& u) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const std::string port = std::to_string(u.port);
    if (::getaddrinfo(u.host.c_str(), port.c_str(), &hints, &res) != 0) {
      throw std::runtime_error("cannot resolve " + u.host);
    }
    for (addrinfo* r = res; r != nullptr && fd_ < 0; r = r->ai_next) {
      fd_ = ::socket(r->ai_family, r->ai_socktype | SOCK_CLOEXEC, r->ai_protocol);
      if (fd_ >= 0 && ::connect(fd_, r->ai_addr, r->ai_addrlen) != 0) {
        ::close(fd_);
        fd_ = -1;
      }
    }
    ::freeaddrinfo(res);
    if (fd_ < 0) throw std::runtime_error("cannot connect to " + u.host + ":" + port);
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~wire() { ::close(fd_); }

  void write(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw std::runtime_error(std::string("send: ") + std::strerror(errno));
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
  }

  template <class Method>
  void send(std::uint16_t ch, const Method& m) {
    std::string out;
    codec::writer w(out);
    if (codec::encode_method_frame(ch, m, w) != codec::errc::ok) {
      throw std::runtime_error("cannot encode " + std::string(Method::name));
    }
    w.finish();
    write(out);
  }

  // Reads frames until a method of type Method arrives (heartbeats and others are skipped);
  // throws on connection.close or a closed socket.
  template <class Method>
  Method expect() {
    for (;;) {
      codec::frame_view f;
      std::size_t used = 0;
      const codec::errc e = codec::decode_frame(std::string_view(in_).substr(at_), 0, f, used);
      if (e == codec::errc::need_more) {
        fill();
        continue;
      }
      if (e != codec::errc::ok) throw std::runtime_error("bad frame from the peer");
      at_ += used;
      if (f.type != codec::frame_method || f.payload.size() < 4) continue;
      const std::uint32_t id = codec::reader::load_u32(f.payload.data());
      if (id == codec::connection_close::id) throw std::runtime_error("connection closed by peer");
      if (id != Method::id) continue;
      Method m;
      if (codec::decode(f.payload.substr(4), m) != codec::errc::ok) {
        throw std::runtime_error("cannot decode " + std::string(Method::name));
      }
      return m;  // views into in_ stay valid until the next expect()
    }
  }

 private:
  void fill() {
    in_.erase(0, at_);
    at_ = 0;
    char buf[65536];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) throw std::runtime_error("connection lost during the handshake");
    in_.append(buf, static_cast<std::size_t>(n));
  }

  int fd_ = -1;
  std::string in_;
  std::size_t at_ = 0;
};

void handshake(wire& w, const warren::connection_uri& u) {
  w.write(std::string_view("AMQP\x00\x00\x09\x01", 8));
  w.expect<codec::connection_start>();
  const std::string response = std::string(1, '\0') + u.user + '\0' + u.password;
  w.send(0, codec::connection_start_ok{.mechanism = "PLAIN", .response = response});
  const auto tune = w.expect<codec::connection_tune>();
  w.send(0, codec::connection_tune_ok{
                .channel_max = tune.channel_max,
                .frame_max = tune.frame_max != 0 ? std::min(tune.frame_max, frame_max) : frame_max,
                .heartbeat = 0});
  w.send(0, codec::connection_open{.virtual_host = u.vhost});
  w.expect<codec::connection_open_ok>();
  w.send(channel, codec::channel_open{});
  w.expect<codec::channel_open_ok>();
}

int run(const args& a) {
  // A bare host:port means guest/guest on vhost "/".
  const warren::connection_uri u = warren::parse_uri(
      a.uri.find("://") == std::string::npos ? "amqp://guest:guest@" + a.uri : a.uri);
  wire w(u);
  handshake(w, u);

  const std::string body(a.size, 'x');
  const codec::basic_publish publish{.exchange = a.exchange, .routing_key = a.routing_key};
  const codec::basic_properties props;
  std::string one(codec::publish_size(publish, props, body.size(), frame_max), '\0');
  std::size_t written = 0;
  if (codec::encode_publish(one.data(), one.size(), written, channel, publish, props, body,
                            frame_max) != codec::errc::ok) {
    throw std::runtime_error("cannot encode the publish");
  }
  const std::size_t per_chunk = std::max<std::size_t>(1, a.chunk_octets / one.size());
  std::string chunk;
  chunk.reserve(per_chunk * one.size());
  for (std::size_t i = 0; i < per_chunk; ++i) chunk.append(one);

  long msgs = 0;
  const wb::stopwatch timer;
  if (a.count > 0) {
    while (msgs < a.count) {
      const long n = std::min<long>(static_cast<long>(per_chunk), a.count - msgs);
      w.write(std::string_view(chunk).substr(0, static_cast<std::size_t>(n) * one.size()));
      msgs += n;
    }
  } else {
    while (timer.wall() < a.seconds) {
      w.write(chunk);
      msgs += static_cast<long>(per_chunk);
    }
  }
  // The peer has read everything once it answers this.
  w.send(channel, codec::channel_close{.reply_code = 200, .reply_text = "done"});
  w.expect<codec::channel_close_ok>();
  const double wall = timer.wall();
  const double cpu = timer.cpu();
  w.send(0, codec::connection_close{.reply_code = 200, .reply_text = "done"});
  w.expect<codec::connection_close_ok>();

  std::printf(
      "{\"client\": \"preencoded\", \"mode\": \"publish\", \"size\": %zu, \"msgs\": %ld, "
      "\"seconds\": %.6f, \"msg_per_s\": %.1f, \"cpu_us_per_msg\": %.5f}\n",
      a.size, msgs, wall, static_cast<double>(msgs) / wall, cpu * 1e6 / static_cast<double>(msgs));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "preencoded_writer: %s\n", e.what());
    return 1;
  }
}
