#include "tools/cli/cli.h"

#include <algorithm>
#include <fstream>
#include <iostream>
#include <memory>

#include "engine/uri.h"
#include "tools/cli/args.h"
#include "tools/cli/message_json.h"

namespace warren::cli {
namespace {

constexpr double default_connect_timeout_s = 10;

// What a command works with; the connection is made on first use, so --help and usage errors
// never touch the network.
class context {
 public:
  context(const parsed_args& args, std::istream& in, std::ostream& out, std::ostream& err)
      : args(args), in(in), out(out), err(err) {}

  warren::channel& channel() {
    if (!conn_) {
      conn_ = std::make_unique<warren::connection>(
          options_from_uri(args.get("uri").value_or(std::string(default_uri))));
      conn_->connect();
      channel_ = &conn_->channel();
    }
    return *channel_;
  }
  warren::connection& connection() { return channel().connection(); }
  // A clean close, so the broker logs no "client unexpectedly closed TCP connection".
  void close() {
    if (conn_) conn_->close();
  }

  const parsed_args& args;
  std::istream& in;
  std::ostream& out;
  std::ostream& err;

 private:
  std::unique_ptr<warren::connection> conn_;
  warren::channel* channel_ = nullptr;
};

using command_fn = int (*)(context&);

struct command {
  const char* name;
  const char* summary;
  std::vector<option_spec> options;
  command_fn run;
};

codec::field_table arguments_from(const parsed_args& a) {
  std::optional<std::string> text = a.get("arguments");
  if (!text) return {};
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded()) throw usage_error("--arguments is not valid JSON");
  try {
    return table_from_json(j, "--arguments", true);
  } catch (const json_error& e) {
    throw usage_error(std::string("--arguments: ") + e.what());
  }
}

bind_options bind_options_from(const parsed_args& a) {
  bind_options o;
  o.arguments = arguments_from(a);
  return o;
}

std::string in_quotes(std::string_view s) {
  return "'" + std::string(s) + "'";
}

// ---- human-readable message form ----

void print_human(std::ostream& out, const message& m, bool with_delivery) {
  if (with_delivery) {
    const delivery_info& d = m.delivery_info();
    out << "--- delivery tag " << d.delivery_tag << ", exchange " << in_quotes(d.exchange)
        << ", routing key " << in_quotes(d.routing_key);
    if (!d.consumer_tag.empty()) out << ", consumer " << in_quotes(d.consumer_tag);
    if (d.redelivered) out << ", redelivered";
    if (d.message_count) out << ", " << *d.message_count << " more in the queue";
    out << "\n";
  }
  // Named, not a temporary in the range: items() refers to the object it iterates.
  const json props = properties_to_json(m.props());
  for (const auto& [name, value] : props.items()) {
    out << name << ": " << (value.is_string() ? value.get<std::string>() : value.dump()) << "\n";
  }
  if (m.props().headers) {
    const json headers = table_to_json(*m.props().headers);
    for (const auto& [name, value] : headers.items()) {
      out << "header " << name << ": " << value.dump() << "\n";
    }
  }
  if (is_valid_utf8(m.body())) {
    out << "body (" << m.body_size() << " bytes): " << m.body() << "\n";
  } else {
    out << "body (" << m.body_size() << " bytes, base64): " << base64_encode(m.body()) << "\n";
  }
}

// Prints, then acknowledges (unless the message was taken without acknowledgement), so a
// message is only removed once it has been written out.
void print_message(context& c, const message& m, bool ack) {
  if (c.args.has("json")) {
    c.out << message_to_json(m).dump() << "\n";
  } else {
    print_human(c.out, m, true);
  }
  c.out.flush();
  if (!c.out) throw std::runtime_error("cannot write to standard output");
  if (ack) m.ack();
}

// ---- commands ----

message message_from_args(const parsed_args& a) {
  properties props;
  try {
    for (const std::string& p : a.all("property")) property_from_text(p, props);
    for (const std::string& h : a.all("header")) {
      const std::size_t eq = h.find('=');
      if (eq == std::string::npos) throw usage_error("--header needs NAME=TYPE:VALUE, not " + h);
      if (!props.headers) props.headers.emplace();
      props.headers->set(h.substr(0, eq), value_from_text(h.substr(0, eq), h.substr(eq + 1)));
    }
  } catch (const json_error& e) {
    throw usage_error(e.what());
  }
  return message(a.required("body"), std::move(props));
}

// One message per non-blank line. JSON errors name the line; they are data errors (status 1).
template <class F>
void for_each_json_message(std::istream& in, F&& publish_one) {
  std::string line;
  for (std::size_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    message m;
    try {
      m = message_from_json(json::parse(line));
    } catch (const std::exception& e) {
      throw std::runtime_error("message line " + std::to_string(n) + ": " + e.what());
    }
    publish_one(m);
  }
  if (in.bad()) throw std::runtime_error("error reading the message input");
}

int cmd_publish(context& c) {
  const parsed_args& a = c.args;
  const bool from_json = a.has("message-json");
  if (from_json == a.has("body")) throw usage_error("give either --message-json or --body");
  if (from_json && (a.has("property") || a.has("header"))) {
    throw usage_error("--property and --header go with --body (put them in the JSON instead)");
  }
  std::optional<message> quick;
  if (!from_json) quick = message_from_args(a);
  const std::string exchange = a.get("exchange").value_or("");
  const std::string routing_key = a.get("routing-key").value_or("");
  const double confirm_timeout = a.get_number("confirm-timeout", 0).value_or(30);
  const bool mandatory = a.has("mandatory");
  std::ifstream file;
  std::istream* in = &c.in;
  if (from_json && *a.get("message-json") != "-") {
    file.open(*a.get("message-json"), std::ios::binary);
    if (!file) throw std::runtime_error("cannot open " + *a.get("message-json"));
    in = &file;
  }

  warren::channel& ch = c.channel();
  std::size_t returned = 0;
  std::string first_return;
  ch.events().basic_return.push_back(
      [&](const amqp_error& reason, std::string_view ex, std::string_view rk, message&) {
        if (returned++ == 0) {
          first_return = std::to_string(reason.reply_code()) + " " + reason.reply_text() +
                         " - message returned by the broker (exchange " + in_quotes(ex) +
                         ", routing key " + in_quotes(rk) + ")";
        }
      });
  // A mandatory publish is only known to have been routed once its confirm arrives (the
  // broker sends basic.return before the ack), so --mandatory waits for confirms too.
  const bool confirm = a.has("confirm") || mandatory;
  if (confirm) ch.confirm_select();
  std::size_t published = 0;
  const auto publish_one = [&](const message& m) {
    ch.basic_publish(m, exchange, routing_key, {.mandatory = mandatory});
    ++published;
  };
  if (from_json) {
    for_each_json_message(*in, publish_one);
  } else {
    publish_one(*quick);
  }
  if (confirm) ch.wait_for_confirms(seconds_f(confirm_timeout));
  if (returned > 0) {
    throw std::runtime_error(first_return + (returned > 1
                                                 ? " and " + std::to_string(returned - 1) +
                                                       " more of " + std::to_string(published)
                                                 : ""));
  }
  c.close();
  return 0;
}

int cmd_consume(context& c) {
  const parsed_args& a = c.args;
  const std::string& queue = a.required("queue");
  const std::optional<double> count = a.get_number("count", 1);
  const std::optional<double> timeout = a.get_number("timeout", 0);
  const bool no_ack = a.has("no-ack");
  warren::channel& ch = c.channel();
  // Bounded prefetch: after the last wanted message the rest stay queued (those already sent
  // are requeued when the channel closes) instead of being taken and dropped.
  ch.basic_qos(0, static_cast<std::uint16_t>(std::min(count.value_or(100), 100.0)), false);
  double received = 0;
  std::exception_ptr failure;
  const auto on_message = [&](message& m) {
    if ((count && received >= *count) || failure) return;  // beyond --count: left unacked
    ++received;
    try {
      // --no-ack is at-most-once, as a no-ack consumer is: acknowledged on arrival, before it
      // is printed. It is not a broker-side no-ack consumer, which would lose every message the
      // broker pushed past --count.
      if (no_ack) m.ack();
      print_message(c, m, !no_ack);
    } catch (...) {
      failure = std::current_exception();
    }
  };
  consume_options co;
  if (const auto offset = a.get("stream-offset")) {
    try {
      co.stream_start = stream_offset::parse(*offset);
    } catch (const std::invalid_argument& e) {
      throw usage_error(std::string("--stream-offset: ") + e.what());
    }
  }
  const std::string tag = ch.basic_consume(queue, on_message, co);
  while (!failure && (!count || received < *count)) {
    try {
      c.connection().drain_events(timeout ? std::optional<seconds_f>(*timeout) : std::nullopt);
    } catch (const amqp_timeout&) {
      break;  // --timeout seconds without a message
    }
  }
  if (failure) std::rethrow_exception(failure);
  ch.basic_cancel(tag);
  c.close();
  return 0;
}

int cmd_get(context& c) {
  const std::string& queue = c.args.required("queue");
  const bool no_ack = c.args.has("no-ack");
  std::optional<message> m = c.channel().basic_get(queue, no_ack);
  if (!m) {
    c.err << "warren: queue " << in_quotes(queue) << " is empty\n";
  } else {
    print_message(c, *m, !no_ack);
  }
  c.close();
  return 0;
}

int cmd_declare_exchange(context& c) {
  const parsed_args& a = c.args;
  exchange_declare_options o;
  o.passive = a.has("passive");
  o.durable = a.has("durable");
  o.auto_delete = a.has("auto-delete");
  o.internal = a.has("internal");
  o.arguments = arguments_from(a);
  c.channel().exchange_declare(a.required("exchange"), a.get("type").value_or("direct"), o);
  c.close();
  return 0;
}

int cmd_declare_queue(context& c) {
  const parsed_args& a = c.args;
  queue_declare_options o;
  const std::string type = a.get("type").value_or("classic");
  if (type == "quorum" || type == "stream") {
    // Durable, neither exclusive nor auto-delete: the broker refuses the others (406).
    if (a.has("exclusive") || a.has("auto-delete")) {
      throw usage_error("--type " + type + " queues cannot be --exclusive or --auto-delete");
    }
    o = type == "quorum" ? quorum_queue({.arguments = arguments_from(a)})
                         : stream_queue({.arguments = arguments_from(a)});
  } else if (type == "classic") {
    o.durable = a.has("durable");
    o.exclusive = a.has("exclusive");
    o.auto_delete = a.has("auto-delete");
    o.arguments = arguments_from(a);
  } else {
    throw usage_error("--type expects classic, quorum or stream, got '" + type + "'");
  }
  o.passive = a.has("passive");
  const queue_declare_ok ok = c.channel().queue_declare(a.get("queue").value_or(""), o);
  if (a.has("json")) {
    json j = json::object();
    j["queue"] = ok.queue;
    j["message_count"] = ok.message_count;
    j["consumer_count"] = ok.consumer_count;
    c.out << j.dump() << "\n";
  } else {
    c.out << ok.queue << " " << ok.message_count << " messages " << ok.consumer_count
          << " consumers\n";
  }
  c.close();
  return 0;
}

// bind and unbind: to a queue, or (exchange-to-exchange) to another exchange.
int bind_or_unbind(context& c, bool bind) {
  const parsed_args& a = c.args;
  if (a.has("queue") == a.has("to-exchange")) {
    throw usage_error("give either --queue or --to-exchange as the destination");
  }
  const std::string& source = a.required("exchange");
  const std::string key = a.get("routing-key").value_or("");
  const bind_options o = bind_options_from(a);
  warren::channel& ch = c.channel();
  if (a.has("queue")) {
    bind ? ch.queue_bind(*a.get("queue"), source, key, o)
         : ch.queue_unbind(*a.get("queue"), source, key, o);
  } else {
    bind ? ch.exchange_bind(*a.get("to-exchange"), source, key, o)
         : ch.exchange_unbind(*a.get("to-exchange"), source, key, o);
  }
  c.close();
  return 0;
}
int cmd_bind(context& c) {
  return bind_or_unbind(c, true);
}
int cmd_unbind(context& c) {
  return bind_or_unbind(c, false);
}

int cmd_delete_queue(context& c) {
  const parsed_args& a = c.args;
  queue_delete_options o;
  o.if_unused = a.has("if-unused");
  o.if_empty = a.has("if-empty");
  const std::uint32_t n = c.channel().queue_delete(a.required("queue"), o);
  c.out << "deleted queue " << in_quotes(*a.get("queue")) << " with " << n << " messages\n";
  c.close();
  return 0;
}

int cmd_delete_exchange(context& c) {
  c.channel().exchange_delete(c.args.required("exchange"), c.args.has("if-unused"));
  c.close();
  return 0;
}

int cmd_purge(context& c) {
  const std::uint32_t n = c.channel().queue_purge(c.args.required("queue"));
  c.out << "purged " << n << " messages from " << in_quotes(*c.args.get("queue")) << "\n";
  c.close();
  return 0;
}

option_spec flag(std::string name, std::string help) {
  return {std::move(name), false, false, std::move(help)};
}
option_spec value(std::string name, std::string help) {
  return {std::move(name), true, false, std::move(help)};
}
option_spec repeated(std::string name, std::string help) {
  return {std::move(name), true, true, std::move(help)};
}

const std::vector<command>& commands() {
  static const std::vector<command> all = {
      {"publish",
       "publish messages from JSON lines (--message-json FILE|-) or one from --body",
       {value("exchange", "exchange to publish to (default: the default exchange '')"),
        value("routing-key", "routing key (default '')"),
        flag("mandatory", "an unroutable message is an error (312 NO_ROUTE)"),
        flag("confirm", "wait for publisher confirms; a nack is an error"),
        value("confirm-timeout", "seconds to wait for confirms (default 30)"),
        value("message-json", "file of JSON messages, one per line; - for standard input"),
        value("body", "the body of a single message (UTF-8 text)"),
        repeated("property", "NAME=VALUE, a basic property (py-amqp names) of --body"),
        repeated("header", "NAME=TYPE:VALUE, a typed header of --body, e.g. n=I:42")},
       cmd_publish},
      {"consume",
       "print messages from a queue as they arrive, acknowledging each once printed",
       {value("queue", "queue to consume from (required)"),
        value("count", "stop after this many messages"),
        value("timeout", "stop when no message arrives for this many seconds"),
        flag("no-ack", "at-most-once: acknowledge each message on arrival, before printing"),
        value("stream-offset",
              "consume a stream from first, last, next, an offset, an interval (1h, 30m, 7D) "
              "or an ISO 8601 date-time with its zone (2022-06-03T07:45:54Z)"),
        flag("json", "print one JSON object per line (input for publish --message-json)")},
       cmd_consume},
      {"get",
       "print one message from a queue (basic.get); nothing when it is empty",
       {value("queue", "queue to take from (required)"),
        flag("no-ack", "take the message without acknowledgement"),
        flag("json", "print the message as one JSON object")},
       cmd_get},
      {"declare-exchange",
       "declare an exchange",
       {value("exchange", "name (required)"),
        value("type", "direct, fanout, topic, headers, ... (default direct)"),
        flag("durable", "survive a broker restart"),
        flag("auto-delete", "delete when its last binding goes"),
        flag("internal", "publishers may not publish to it directly"),
        flag("passive", "only check that it exists"),
        value("arguments", "JSON object of typed values (or plain JSON scalars)")},
       cmd_declare_exchange},
      {"declare-queue",
       "declare a queue; prints its name, message count and consumer count",
       {value("queue", "name (default: a server-named queue)"),
        value("type",
              "classic (default), quorum or stream (x-queue-type; quorum and stream queues are "
              "durable)"),
        flag("durable", "survive a broker restart"), flag("exclusive", "this connection only"),
        flag("auto-delete", "delete when its last consumer goes"),
        flag("passive", "only check that it exists"),
        value("arguments", "JSON object, e.g. '{\"x-max-length\": 10}' or typed values"),
        flag("json", "print {\"queue\", \"message_count\", \"consumer_count\"}")},
       cmd_declare_queue},
      {"bind",
       "bind a queue (--queue) or an exchange (--to-exchange) to a source exchange",
       {value("exchange", "source exchange (required)"), value("queue", "destination queue"),
        value("to-exchange", "destination exchange"), value("routing-key", "binding key"),
        value("arguments", "JSON object of binding arguments")},
       cmd_bind},
      {"unbind",
       "remove a binding made by bind",
       {value("exchange", "source exchange (required)"), value("queue", "destination queue"),
        value("to-exchange", "destination exchange"), value("routing-key", "binding key"),
        value("arguments", "JSON object of binding arguments")},
       cmd_unbind},
      {"delete-queue",
       "delete a queue; prints how many messages it held",
       {value("queue", "name (required)"), flag("if-unused", "only when it has no consumers"),
        flag("if-empty", "only when it holds no messages")},
       cmd_delete_queue},
      {"delete-exchange",
       "delete an exchange",
       {value("exchange", "name (required)"), flag("if-unused", "only when it has no bindings")},
       cmd_delete_exchange},
      {"purge",
       "remove every ready message from a queue; prints how many",
       {value("queue", "name (required)")},
       cmd_purge},
  };
  return all;
}

const std::vector<option_spec>& common_options() {
  static const std::vector<option_spec> all = {
      value("uri", "broker URI (default " + std::string(default_uri) + ")"),
      flag("help", "show this help"),
  };
  return all;
}

std::string general_help() {
  std::string s = "usage: warren [--uri URI] COMMAND [options]   (warren COMMAND --help)\n\n";
  for (const command& c : commands()) {
    s += "  " + std::string(c.name) + std::string(18 - std::string_view(c.name).size(), ' ') +
         c.summary + "\n";
  }
  return s + "\ncommon options:\n" + options_help(common_options());
}

std::string command_help(const command& c) {
  std::vector<option_spec> specs = c.options;
  specs.insert(specs.end(), common_options().begin(), common_options().end());
  return "usage: warren " + std::string(c.name) + " [options]\n" + c.summary + "\n\n" +
         options_help(specs);
}

// The error line: one line, and without the password even if some layer quoted it.
std::string one_line(std::string s, const std::string& password) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  // Short passwords (below 4 characters) would match ordinary words and reply codes; they are
  // left alone, since no layer writes the password anyway.
  if (password.size() >= 4) {
    for (std::size_t at; (at = s.find(password)) != std::string::npos;)
      s.replace(at, password.size(), "***");
  }
  return s;
}

}  // namespace

connection_options options_from_uri(std::string_view uri_text) {
  connection_options o = connection_options::from_uri(uri_text);
  // The URI spec reads `amqp://host/` as vhost "", which RabbitMQ never has; like pika, take it
  // as "/", so the documented default URI (with its trailing slash) works.
  if (o.virtual_host.empty()) o.virtual_host = "/";
  // A one-shot tool must not hang on an unreachable broker.
  if (!o.connect_timeout) o.connect_timeout = seconds_f(default_connect_timeout_s);
  return o;
}

int run(std::span<const std::string> args, std::istream& in, std::ostream& out, std::ostream& err) {
  // Global options may come before the command; they are handed on to it.
  std::vector<std::string> rest;
  std::size_t i = 0;
  for (; i < args.size() && args[i].starts_with("--"); ++i) {
    if (args[i] == "--help") {
      out << general_help();
      return 0;
    }
    rest.push_back(args[i]);
    if (args[i] == "--uri" && i + 1 < args.size()) rest.push_back(args[++i]);
  }
  std::string password;
  try {
    if (i == args.size()) throw usage_error("no command (warren --help lists them)");
    const auto& all = commands();
    const auto cmd =
        std::find_if(all.begin(), all.end(), [&](const command& c) { return args[i] == c.name; });
    if (cmd == all.end()) {
      throw usage_error("unknown command '" + args[i] + "' (warren --help lists them)");
    }
    rest.insert(rest.end(), args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
    if (std::find(rest.begin(), rest.end(), "--help") != rest.end()) {
      out << command_help(*cmd);
      return 0;
    }
    std::vector<option_spec> specs = cmd->options;
    specs.insert(specs.end(), common_options().begin(), common_options().end());
    const parsed_args parsed = parse_args(rest, specs);
    try {
      password = options_from_uri(parsed.get("uri").value_or(std::string(default_uri))).password;
    } catch (const uri_error& e) {
      throw usage_error(e.what());
    }
    context c(parsed, in, out, err);
    return cmd->run(c);
  } catch (const usage_error& e) {
    err << "warren: " << one_line(e.what(), password) << "\n";
    return 2;
  } catch (const std::exception& e) {
    err << "warren: " << one_line(e.what(), password) << "\n";
    return 1;
  }
}

}  // namespace warren::cli
