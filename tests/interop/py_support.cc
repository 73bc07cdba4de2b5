#include "tests/interop/py_support.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

extern char** environ;

namespace warren::test {
namespace {

class json_parser {
 public:
  explicit json_parser(std::string_view s) : s_(s) {}

  json document() {
    json v = value();
    skip_space();
    if (pos_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void fail(const char* what) const {
    throw std::runtime_error(std::string("JSON: ") + what + " at offset " + std::to_string(pos_));
  }
  void skip_space() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t')) {
      ++pos_;
    }
  }
  char peek() {
    skip_space();
    if (pos_ >= s_.size()) fail("unexpected end");
    return s_[pos_];
  }
  void expect(char c) {
    if (peek() != c) fail("unexpected character");
    ++pos_;
  }
  bool literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  json value() {
    json v;
    const char c = peek();
    if (c == '{') {
      v.type = json::kind::object;
      ++pos_;
      if (peek() == '}') {
        ++pos_;
        return v;
      }
      do {
        std::string key = string();
        expect(':');
        v.members.emplace_back(std::move(key), value());
      } while (comma());
      expect('}');
    } else if (c == '[') {
      v.type = json::kind::array;
      ++pos_;
      if (peek() == ']') {
        ++pos_;
        return v;
      }
      do v.items.push_back(value());
      while (comma());
      expect(']');
    } else if (c == '"') {
      v.type = json::kind::string;
      v.text = string();
    } else if (literal("true") || literal("false")) {
      v.type = json::kind::boolean;
      v.boolean = c == 't';
    } else if (literal("null")) {
      v.type = json::kind::null;
    } else {
      v.type = json::kind::number;
      const std::size_t start = pos_;
      while (pos_ < s_.size() && std::strchr("+-0123456789.eE", s_[pos_]) != nullptr) ++pos_;
      if (pos_ == start) fail("unexpected character");
      v.text = std::string(s_.substr(start, pos_ - start));
    }
    return v;
  }
  bool comma() {
    if (peek() != ',') return false;
    ++pos_;
    return true;
  }
  unsigned hex4() {
    if (s_.size() - pos_ < 4) fail("short \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = s_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9') {
        v |= static_cast<unsigned>(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        v |= static_cast<unsigned>(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        v |= static_cast<unsigned>(h - 'A' + 10);
      } else {
        fail("bad \\u escape");
      }
    }
    return v;
  }
  static void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  std::string string() {
    expect('"');
    std::string out;
    for (;;) {
      if (pos_ >= s_.size()) fail("unterminated string");
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated escape");
      switch (const char e = s_[pos_++]) {
        case '"':
        case '\\':
        case '/':
          out += e;
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          unsigned cp = hex4();
          // Python's json writes characters outside the BMP as a surrogate pair.
          if (cp >= 0xD800 && cp < 0xDC00 && literal("\\u")) {
            const unsigned low = hex4();
            if (low < 0xDC00 || low > 0xDFFF) fail("bad surrogate pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          fail("bad escape");
      }
    }
  }

  std::string_view s_;
  std::size_t pos_ = 0;
};

int base64_digit(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace

const json* json::find(std::string_view key) const noexcept {
  for (const auto& [name, v] : members) {
    if (name == key) return &v;
  }
  return nullptr;
}

const json& json::at(std::string_view key) const {
  const json* v = find(key);
  if (v == nullptr)
    throw std::out_of_range("JSON object has no member \"" + std::string(key) + '"');
  return *v;
}

json parse_json(std::string_view text) {
  return json_parser(text).document();
}

std::string base64_decode(std::string_view in) {
  std::string out;
  unsigned acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    const int d = base64_digit(c);
    if (d < 0) throw std::runtime_error("base64: bad character");
    acc = (acc << 6) | static_cast<unsigned>(d);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return out;
}

std::string runfile(std::string_view workspace_path) {
  // Bazel runs a test inside its runfiles tree for this workspace, so a relative path works;
  // TEST_SRCDIR makes it independent of the working directory when set.
  const char* srcdir = std::getenv("TEST_SRCDIR");
  if (srcdir == nullptr) return std::string(workspace_path);
  return std::string(srcdir) + "/warren/" + std::string(workspace_path);
}

peer_process start_peer(const std::vector<std::string>& args) {
  const std::string python = "/usr/bin/python3";
  const std::string script = runfile("tests/interop/py_amqp_peer.py");
  std::vector<std::string> argv_storage{python, script};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // dup2 clears close-on-exec on the new descriptor 1; the pipe's own ends close on exec.
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  peer_process p;
  const int rc = ::posix_spawn(&p.pid, python.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    throw std::runtime_error("posix_spawn " + python + ": " + std::strerror(rc));
  }
  p.stdout_fd = fds[0];
  return p;
}

peer_result finish(peer_process& p, std::chrono::milliseconds timeout) {
  peer_result r;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool killed = false;
  char buf[65536];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd pfd{p.stdout_fd, POLLIN, 0};
    const int n = left.count() > 0 ? ::poll(&pfd, 1, static_cast<int>(left.count())) : 0;
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::kill(p.pid, SIGKILL);
      killed = true;
      break;
    }
    const ssize_t got = ::read(p.stdout_fd, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    r.out.append(buf, static_cast<std::size_t>(got));
  }
  ::close(p.stdout_fd);
  p.stdout_fd = -1;
  int status = 0;
  while (::waitpid(p.pid, &status, 0) < 0 && errno == EINTR) {
  }
  p.pid = -1;
  r.exit_status = !killed && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

peer_result run_peer(const std::vector<std::string>& args) {
  peer_process p = start_peer(args);
  return finish(p);
}

std::string unique_queue(std::string_view what) {
  static std::atomic<unsigned> counter{0};
  return "warren-interop-" + std::string(what) + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(counter++);
}

}  // namespace warren::test
