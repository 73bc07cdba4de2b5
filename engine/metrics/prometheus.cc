#include "engine/metrics/prometheus.h"

#include <array>
#include <stdexcept>

namespace warren::metrics {
namespace {

constexpr unsigned first_bound_octave = 10;  // 2^10 ns = 1.024 us
constexpr unsigned last_bound_octave = 35;   // 2^35 ns = 34.4 s; 2^36 is above max_value_ns

constexpr auto make_bounds() {
  std::array<std::uint64_t, last_bound_octave - first_bound_octave + 1> b{};
  for (unsigned i = 0; i < b.size(); ++i) b[i] = std::uint64_t{1} << (first_bound_octave + i);
  return b;
}
constexpr auto bounds = make_bounds();
static_assert(bounds.back() <= max_value_ns);

using label = std::pair<std::string_view, std::string>;
using label_list = std::vector<label>;

// Length of the valid UTF-8 sequence at the start of `s`, or 0 when it is not one.
std::size_t utf8_sequence(std::string_view s) noexcept {
  const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  std::size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // bounds of the second octet
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;  // overlong
    if (c == 0xED) hi = 0x9F;  // surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;  // overlong
    if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return 0;
  }
  if (s.size() < n || b(1) < lo || b(1) > hi) return 0;
  for (std::size_t i = 2; i < n; ++i)
    if (b(i) < 0x80 || b(i) > 0xBF) return 0;
  return n;
}

bool valid_label_name(std::string_view n) noexcept {
  if (n.empty() || n.starts_with("__")) return false;
  for (std::size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

class writer {
 public:
  explicit writer(std::string& out) : out_(out) {}

  // HELP and TYPE lines, written before the family's first sample (so empty families vanish).
  void family(std::string_view name, std::string_view type, std::string_view help) {
    name_ = name;
    type_ = type;
    help_ = help;
    started_ = false;
  }

  void sample(std::string_view suffix, const label_list& labels, std::string_view value,
              const label* extra = nullptr) {
    if (!started_) {
      out_ += "# HELP ";
      out_ += name_;
      out_ += ' ';
      out_ += help_;  // our own text: no backslash or newline to escape
      out_ += "\n# TYPE ";
      out_ += name_;
      out_ += ' ';
      out_ += type_;
      out_ += '\n';
      started_ = true;
    }
    out_ += name_;
    out_ += suffix;
    if (!labels.empty() || extra) {
      char sep = '{';
      auto put = [&](const label& l) {
        out_ += sep;
        out_ += l.first;
        out_ += "=\"";
        out_ += l.second;  // escaped when the list was built
        out_ += '"';
        sep = ',';
      };
      for (const label& l : labels) put(l);
      if (extra) put(*extra);
      out_ += '}';
    }
    out_ += ' ';
    out_ += value;
    out_ += '\n';
  }
  void sample(const label_list& labels, std::uint64_t v) { sample("", labels, std::to_string(v)); }
  void sample_signed(const label_list& labels, std::int64_t v) {
    sample("", labels, std::to_string(v));
  }

  void histogram(const label_list& labels, const latency_histogram& h) {
    std::uint64_t cumulative = 0;
    std::size_t i = 0;
    for (const std::uint64_t bound : bounds) {
      for (const std::size_t end = latency_histogram::layout::index_of(bound); i < end; ++i)
        cumulative += h.bucket(i);
      const label le{"le", seconds_text(bound)};
      sample("_bucket", labels, std::to_string(cumulative), &le);
    }
    const label inf{"le", "+Inf"};
    sample("_bucket", labels, std::to_string(h.count()), &inf);
    sample("_sum", labels, seconds_text(h.sum_ns()));
    sample("_count", labels, std::to_string(h.count()));
  }

 private:
  std::string& out_;
  std::string_view name_, type_, help_;
  bool started_ = false;
};

struct publish_family {
  std::string_view suffix;  // after warren_ or warren_channel_
  std::string_view help;
  std::uint64_t publish_counts::*field;
};
constexpr publish_family publish_families[] = {
    {"publishes_total", "Messages accepted for publishing (try_publish or publish returned ok).",
     &publish_counts::published},
    {"publishes_confirmed_total", "Publishes the broker confirmed (basic.ack).",
     &publish_counts::confirmed},
    {"publishes_nacked_total", "Publishes the broker refused (basic.nack).",
     &publish_counts::nacked},
    {"publishes_in_doubt_total",
     "Publishes completed without the broker's ack or nack (confirm timeout, channel closed, "
     "connection lost): they may or may not be on the broker.",
     &publish_counts::in_doubt},
    {"publishes_returned_total", "Publishes the broker returned as unroutable (basic.return).",
     &publish_counts::returned},
    {"publishes_republished_total", "Unconfirmed publishes sent again on a recovered channel.",
     &publish_counts::republished},
};

struct delivery_family {
  std::string_view suffix;
  std::string_view help;
  std::uint64_t delivery_counts::*field;
};
constexpr delivery_family delivery_families[] = {
    {"deliveries_total", "Messages received (basic.deliver and basic.get-ok).",
     &delivery_counts::delivered},
    {"deliveries_acked_total", "Deliveries the application acknowledged (basic.ack sent).",
     &delivery_counts::acked},
    {"deliveries_nacked_total", "Deliveries the application nacked (basic.nack sent).",
     &delivery_counts::nacked},
    {"deliveries_rejected_total", "Deliveries the application rejected (basic.reject sent).",
     &delivery_counts::rejected},
};

struct transport_family {
  std::string_view name;
  std::string_view help;
  std::uint64_t transport_counts::*field;
};
constexpr transport_family transport_families[] = {
    {"warren_received_bytes_total", "Bytes read from the connection's socket (TLS records whole).",
     &transport_counts::bytes_received},
    {"warren_sent_bytes_total", "Bytes written to the connection's socket (TLS records whole).",
     &transport_counts::bytes_sent},
    {"warren_received_frames_total", "AMQP frames received.", &transport_counts::frames_received},
    {"warren_sent_frames_total", "AMQP frames sent.", &transport_counts::frames_sent},
    {"warren_socket_reads_total", "Read system calls on the connection's socket.",
     &transport_counts::socket_reads},
    {"warren_socket_writes_total", "Write system calls on the connection's socket.",
     &transport_counts::socket_writes},
};

constexpr std::string_view confirm_help =
    "Time from a publish to the broker's ack or nack, in seconds.";
constexpr std::string_view handled_help =
    "Time from a delivery's hand-off to its consumer to its handler's return, in seconds.";

std::string prefixed(std::string_view prefix, std::string_view suffix) {
  std::string s(prefix);
  s += suffix;
  return s;
}

}  // namespace

std::span<const std::uint64_t> latency_bucket_bounds_ns() noexcept {
  return bounds;
}

std::string seconds_text(std::uint64_t ns) {
  std::string s = std::to_string(ns / 1'000'000'000);
  std::uint64_t frac = ns % 1'000'000'000;
  if (frac == 0) return s;
  std::string digits = std::to_string(frac);
  digits.insert(0, 9 - digits.size(), '0');
  while (digits.back() == '0') digits.pop_back();
  s += '.';
  s += digits;
  return s;
}

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  while (!v.empty()) {
    const std::size_t n = utf8_sequence(v);
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD
      v.remove_prefix(1);
      continue;
    }
    if (n == 1) {
      switch (v[0]) {
        case '\\':
          out += "\\\\";
          break;
        case '"':
          out += "\\\"";
          break;
        case '\n':
          out += "\\n";
          break;
        default:
          out += v[0];
      }
    } else {
      out.append(v.data(), n);
    }
    v.remove_prefix(n);
  }
  return out;
}

void render_prometheus(const snapshot& s, const exposition_options& o, std::string& out) {
  for (const auto& [name, value] : o.labels) {
    if (!valid_label_name(name) || name == "connection" || name == "connection_name" ||
        name == "channel" || name == "consumer" || name == "le")
      throw std::invalid_argument("metrics: bad or reserved label name '" + name + "'");
  }
  label_list base;
  for (const auto& [name, value] : o.labels) base.emplace_back(name, escape_label_value(value));

  struct connection_labels {
    const connection_snapshot* c;
    label_list labels;
  };
  std::vector<connection_labels> conns;
  for (const connection_snapshot& c : s.connections) {
    label_list l = base;
    l.emplace_back("connection", std::to_string(c.id));
    if (!c.name.empty()) l.emplace_back("connection_name", escape_label_value(c.name));
    conns.push_back({&c, std::move(l)});
  }
  auto channel_labels = [](const label_list& conn, const channel_snapshot& ch) {
    label_list l = conn;
    l.emplace_back("channel", std::to_string(ch.id));
    return l;
  };

  writer w(out);
  for (const publish_family& f : publish_families) {
    const std::string name = prefixed("warren_", f.suffix);
    w.family(name, "counter", f.help);
    for (const auto& c : conns) w.sample(c.labels, c.c->publishes.*f.field);
  }
  for (const delivery_family& f : delivery_families) {
    const std::string name = prefixed("warren_", f.suffix);
    w.family(name, "counter", f.help);
    for (const auto& c : conns) w.sample(c.labels, c.c->deliveries.*f.field);
  }
  for (const transport_family& f : transport_families) {
    w.family(f.name, "counter", f.help);
    for (const auto& c : conns) w.sample(c.labels, c.c->transport.*f.field);
  }
  w.family("warren_blocked_seconds_total", "counter",
           "Time the broker kept the connection blocked (connection.blocked), in seconds.");
  for (const auto& c : conns)
    w.sample("", c.labels, seconds_text(static_cast<std::uint64_t>(c.c->blocked_time.count())));
  w.family("warren_blocked", "gauge", "1 while the broker keeps the connection blocked.");
  for (const auto& c : conns) w.sample(c.labels, c.c->blocked ? 1 : 0);
  w.family("warren_recoveries_total", "counter",
           "Completed recoveries of the connection (reconnect and replay).");
  for (const auto& c : conns) w.sample(c.labels, c.c->recoveries);
  w.family("warren_missed_heartbeats_total", "counter",
           "Heartbeat intervals that passed with nothing received from the broker.");
  for (const auto& c : conns) w.sample(c.labels, c.c->heartbeats_missed);
  w.family("warren_open_channels", "gauge", "Channels open on the connection.");
  for (const auto& c : conns) w.sample(c.labels, c.c->open_channels);
  const std::string confirm_name = "warren_publish_confirm_seconds";
  w.family(confirm_name, "histogram", confirm_help);
  for (const auto& c : conns) w.histogram(c.labels, c.c->publish_to_confirm);
  w.family("warren_delivery_handled_seconds", "histogram", handled_help);
  for (const auto& c : conns) w.histogram(c.labels, c.c->delivery_to_handled);

  if (o.channels) {
    for (const publish_family& f : publish_families) {
      const std::string name = prefixed("warren_channel_", f.suffix);
      w.family(name, "counter", f.help);
      for (const auto& c : conns)
        for (const channel_snapshot& ch : c.c->channels)
          w.sample(channel_labels(c.labels, ch), ch.publishes.*f.field);
    }
    for (const delivery_family& f : delivery_families) {
      const std::string name = prefixed("warren_channel_", f.suffix);
      w.family(name, "counter", f.help);
      for (const auto& c : conns)
        for (const channel_snapshot& ch : c.c->channels)
          w.sample(channel_labels(c.labels, ch), ch.deliveries.*f.field);
    }
    w.family("warren_channel_publish_confirm_seconds", "histogram", confirm_help);
    for (const auto& c : conns)
      for (const channel_snapshot& ch : c.c->channels)
        w.histogram(channel_labels(c.labels, ch), ch.publish_to_confirm);
    w.family("warren_channel_delivery_handled_seconds", "histogram", handled_help);
    for (const auto& c : conns)
      for (const channel_snapshot& ch : c.c->channels)
        w.histogram(channel_labels(c.labels, ch), ch.delivery_to_handled);
  }

  if (o.consumers) {
    auto consumer_labels = [&](const label_list& conn, const channel_snapshot& ch,
                               const consumer_snapshot& cs) {
      label_list l = channel_labels(conn, ch);
      l.emplace_back("consumer", escape_label_value(cs.tag));
      return l;
    };
    w.family("warren_consumer_deliveries_total", "counter", "Deliveries handed to the consumer.");
    for (const auto& c : conns)
      for (const channel_snapshot& ch : c.c->channels)
        for (const consumer_snapshot& cs : ch.consumers)
          w.sample(consumer_labels(c.labels, ch, cs), cs.delivered);
    w.family("warren_consumer_pending_deliveries", "gauge",
             "Deliveries handed to the consumer whose handler has not returned yet.");
    for (const auto& c : conns)
      for (const channel_snapshot& ch : c.c->channels)
        for (const consumer_snapshot& cs : ch.consumers)
          w.sample_signed(consumer_labels(c.labels, ch, cs), cs.pending);
  }
}

std::string render_prometheus(const snapshot& s, const exposition_options& o) {
  std::string out;
  render_prometheus(s, o, out);
  return out;
}

}  // namespace warren::metrics
