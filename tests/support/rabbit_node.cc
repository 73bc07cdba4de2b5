#include "tests/support/rabbit_node.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string_view>
#include <thread>

extern char** environ;

namespace warren::test {
namespace {

bool is_file(const std::string& path) {
  return !path.empty() && ::access(path.c_str(), R_OK) == 0;
}

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// The script in this binary's runfiles (a test: TEST_SRCDIR; `bazel run`: RUNFILES_DIR or
// <binary>.runfiles), or $WARREN_RABBIT_NODE.
std::string script_path() {
  static const std::string path = [] {
    const std::string rel = "/warren/tools/rabbit_node.sh";
    std::vector<std::string> candidates = {env_or_empty("WARREN_RABBIT_NODE")};
    if (const std::string d = env_or_empty("TEST_SRCDIR"); !d.empty())
      candidates.push_back(d + rel);
    if (const std::string d = env_or_empty("RUNFILES_DIR"); !d.empty())
      candidates.push_back(d + rel);
    char exe[4096];
    const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) candidates.push_back(std::string(exe, std::size_t(n)) + ".runfiles" + rel);
    for (const auto& c : candidates) {
      if (is_file(c)) return c;
    }
    return std::string();
  }();
  if (path.empty()) {
    throw rabbit_node_error(
        "tools/rabbit_node.sh not found: depend on //tests/support:rabbit_node (it brings the "
        "script as runfiles) or set WARREN_RABBIT_NODE");
  }
  return path;
}

std::string joined(const std::vector<std::string>& args) {
  std::string s;
  for (const auto& a : args) s += " " + a;
  return s;
}

std::map<std::string, std::string> parse_info(const std::string& out) {
  std::map<std::string, std::string> kv;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq != std::string::npos && eq > 0 && line.find(' ') > eq) {
      kv[line.substr(0, eq)] = line.substr(eq + 1);
    }
  }
  return kv;
}

bool digits(std::string_view s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
}

// A line "warren-<pid>-<n>@<host>" (std::regex would do, but GCC 12 warns inside it under ASan).
bool is_node_name(std::string_view line) {
  const auto at = line.find('@');
  if (line.rfind("warren-", 0) != 0 || at == std::string_view::npos) return false;
  const std::string_view numbers = line.substr(7, at - 7);  // "<pid>-<n>"
  const auto dash = numbers.find('-');
  const std::string_view host = line.substr(at + 1);
  return dash != std::string_view::npos && digits(numbers.substr(0, dash)) &&
         digits(numbers.substr(dash + 1)) && !host.empty() &&
         std::all_of(host.begin(), host.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-';
         });
}

// Node names the script printed, in order.
std::vector<std::string> node_names(const std::string& out) {
  std::vector<std::string> names;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (is_node_name(line)) names.push_back(line);
  }
  return names;
}

std::vector<std::string> start_args(const rabbit_node_options& o) {
  std::vector<std::string> a = {"--owner",   std::to_string(::getpid()),
                                "--nofile",  std::to_string(o.nofile),
                                "--timeout", std::to_string(o.boot_timeout.count())};
  if (!o.cookie.empty()) {
    a.push_back("--cookie");
    a.push_back(o.cookie);
  }
  if (o.net_ticktime > 0) {
    a.push_back("--net-ticktime");
    a.push_back(std::to_string(o.net_ticktime));
  }
  for (const auto& line : o.config) {
    a.push_back("--config");
    a.push_back(line);
  }
  if (o.netns) a.push_back("--netns");
  return a;
}

// One attempt: "" on success, else what went wrong.
std::string amqp_probe(const std::string& address, std::uint16_t port, int timeout_ms) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::string("socket: ") + std::strerror(errno);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, address.c_str(), &addr.sin_addr) != 1) {
    ::close(fd);
    return "not an IPv4 address: " + address;
  }
  std::string problem;
  pollfd p{fd, POLLOUT, 0};
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 &&
      errno != EINPROGRESS) {
    problem = std::string("connect: ") + std::strerror(errno);
  } else if (::poll(&p, 1, timeout_ms) != 1) {
    problem = "connect: no answer";
  } else {
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    static constexpr char header[] = {'A', 'M', 'Q', 'P', 0, 0, 9, 1};
    unsigned char first = 0;
    if (err != 0) {
      problem = std::string("connect: ") + std::strerror(err);
    } else if (::send(fd, header, sizeof header, MSG_NOSIGNAL) != sizeof header) {
      problem = std::string("send: ") + std::strerror(errno);
    } else if (p = {fd, POLLIN, 0}; ::poll(&p, 1, timeout_ms) != 1) {
      problem = "no reply to the protocol header";
    } else if (::recv(fd, &first, 1, 0) != 1) {
      problem = "connection closed without a reply to the protocol header";
    } else if (first != 1) {
      problem = "the reply to the protocol header is not a method frame";
    }
  }
  ::close(fd);
  return problem;
}

}  // namespace

std::string run_rabbit_node_script(const std::vector<std::string>& args) {
  const std::string script = script_path();
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    throw rabbit_node_error(std::string("pipe: ") + std::strerror(errno));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
  std::vector<std::string> argv_s = {"/bin/bash", script};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, "/bin/bash", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (rc != 0) {
    ::close(pipe_fds[0]);
    throw rabbit_node_error("cannot run " + script + ": " + std::strerror(rc));
  }
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(pipe_fds[0], buf, sizeof buf);
    if (n > 0) {
      out.append(buf, std::size_t(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(pipe_fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const std::string how = WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                              : "signal " + std::to_string(WTERMSIG(status));
    throw rabbit_node_error("tools/rabbit_node.sh" + joined(args) + " failed (" + how + "):\n" +
                            out);
  }
  return out;
}

rabbit_node::rabbit_node(const rabbit_node_options& options) : options_(options) {
  std::vector<std::string> args = {"start"};
  for (auto& a : start_args(options_)) args.push_back(std::move(a));
  const std::string out = run_rabbit_node_script(args);
  const auto names = node_names(out);
  if (names.size() != 1) {
    throw rabbit_node_error("tools/rabbit_node.sh start printed no node name:\n" + out);
  }
  name_ = names[0];
  try {
    load_info();
  } catch (...) {
    try {
      run_rabbit_node_script({"cleanup", name_});
    } catch (const rabbit_node_error&) {
    }
    throw;
  }
}

rabbit_node::rabbit_node(adopt_tag, std::string name, const rabbit_node_options& options)
    : options_(options), name_(std::move(name)) {}

rabbit_node::~rabbit_node() {
  try {
    run_rabbit_node_script({"cleanup", name_});
  } catch (const rabbit_node_error& e) {
    // A destructor must not throw; the sweeper removes what is left.
    ADD_FAILURE() << "cleanup of " << name_ << " failed: " << e.what();
  }
}

void rabbit_node::load_info() {
  const auto kv = parse_info(run_rabbit_node_script({"info", name_}));
  const auto port = kv.find("amqp_port");
  const auto log = kv.find("log");
  const auto address = kv.find("address");
  if (port == kv.end() || log == kv.end() || address == kv.end()) {
    throw rabbit_node_error("tools/rabbit_node.sh info " + name_ +
                            ": no amqp_port, address or log");
  }
  amqp_port_ = static_cast<std::uint16_t>(std::stoul(port->second));
  address_ = address->second;
  log_ = log->second;
}

std::string rabbit_node::host() const {
  return address_ + ":" + std::to_string(amqp_port_);
}

int rabbit_node::pid() const {
  const auto kv = parse_info(run_rabbit_node_script({"info", name_}));
  const auto it = kv.find("pid");
  return it == kv.end() || it->second.empty() ? 0 : std::stoi(it->second);
}

std::uint64_t rabbit_node::open_files_limit() const {
  const auto kv = parse_info(run_rabbit_node_script({"info", name_}));
  if (kv.count("pid") == 0 || kv.at("pid").empty()) {
    throw rabbit_node_error(name_ + " does not run: no open-files limit to read");
  }
  return std::stoull(kv.at("nofile"));
}

void rabbit_node::stop() {
  run_rabbit_node_script({"stop", name_});
}

void rabbit_node::kill() {
  run_rabbit_node_script({"kill", name_});
}

void rabbit_node::restart(bool wait) {
  std::vector<std::string> args = {"restart", name_, "--timeout",
                                   std::to_string(options_.boot_timeout.count())};
  if (!wait) args.push_back("--no-wait");
  run_rabbit_node_script(args);
}

void rabbit_node::wait_until_serving() {
  run_rabbit_node_script(
      {"wait", name_, "--timeout", std::to_string(options_.boot_timeout.count())});
}

void rabbit_node::raise_memory_alarm() {
  run_rabbit_node_script({"alarm", name_, "on"});
}

void rabbit_node::clear_memory_alarm() {
  run_rabbit_node_script({"alarm", name_, "off"});
}

void rabbit_node::sync_metadata() {
  run_rabbit_node_script({"sync", name_});
}

void rabbit_node::partition() {
  run_rabbit_node_script({"partition", name_});
}

void rabbit_node::heal() {
  run_rabbit_node_script({"heal", name_});
}

std::string rabbit_node::rabbitmqctl(const std::vector<std::string>& args) {
  std::vector<std::string> a = {"ctl", name_};
  a.insert(a.end(), args.begin(), args.end());
  return run_rabbit_node_script(a);
}

std::string rabbit_node::tool(const std::string& program, const std::vector<std::string>& args) {
  std::vector<std::string> a = {"tool", name_, program};
  a.insert(a.end(), args.begin(), args.end());
  return run_rabbit_node_script(a);
}

rabbit_cluster::rabbit_cluster(int nodes, const rabbit_node_options& options) {
  if (nodes < 1) throw rabbit_node_error("a cluster needs at least one node");
  std::vector<std::string> args = {"cluster", std::to_string(nodes)};
  for (auto& a : start_args(options)) args.push_back(std::move(a));
  // On failure the script removes the nodes it started.
  const std::string out = run_rabbit_node_script(args);
  const auto names = node_names(out);
  if (names.size() != std::size_t(nodes)) {
    for (const auto& n : names) {
      try {
        run_rabbit_node_script({"cleanup", n});
      } catch (const rabbit_node_error&) {
      }
    }
    throw rabbit_node_error("tools/rabbit_node.sh cluster printed " + std::to_string(names.size()) +
                            " node names, not " + std::to_string(nodes) + ":\n" + out);
  }
  // Owned (and so cleaned up, by the members' destructors) before anything else can throw.
  for (const auto& n : names) {
    nodes_.push_back(
        std::unique_ptr<rabbit_node>(new rabbit_node(rabbit_node::adopt_tag{}, n, options)));
  }
  for (auto& node : nodes_) node->load_info();
}

std::vector<std::string> rabbit_cluster::hosts() const {
  std::vector<std::string> h;
  for (const auto& n : nodes_) h.push_back(n->host());
  return h;
}

::testing::AssertionResult wait_for_amqp(std::uint16_t port, std::chrono::milliseconds timeout) {
  return wait_for_amqp("127.0.0.1", port, timeout);
}

::testing::AssertionResult wait_for_amqp(const std::string& address, std::uint16_t port,
                                         std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string problem;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    problem = amqp_probe(
        address, port, int(std::max<std::int64_t>(1, std::min<std::int64_t>(left.count(), 2000))));
    if (problem.empty()) return ::testing::AssertionSuccess();
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return ::testing::AssertionFailure()
         << "no AMQP broker on " << address << ":" << port << " within " << timeout.count()
         << " ms (" << problem << ")";
}

}  // namespace warren::test
