// Recovery benchmark driver for the RabbitMQ Java client (Debian's librabbitmq-client-java 5.0.0),
// run by bench/recovery. It publishes persistent messages with confirms to one durable queue while
// the harness kills, restarts or closes nodes, and records what the client reported for every
// publish. Workload, output lines and trace format: bench/recovery/README.md ("Driver contract").
//
// Build and run (bench/recovery does both, into a temporary directory; no Maven, no network):
//   javac -cp /usr/share/java/amqp-client.jar -d OUT bench/peers/java/RecoveryDriver.java
//   java -cp OUT:/usr/share/java/amqp-client.jar:/usr/share/java/slf4j-api.jar \
//        RecoveryDriver --uris URI[,URI...] --queue NAME [options]
//
// The bookkeeping is the one the client's documentation and most tutorials show: an outstanding
// map from delivery tag to message, a window of 500, acks and nacks through a ConfirmListener
// (multiple=true covers every tag up to it). What a careful application adds, and this driver
// does, is a RecoveryListener on the channel: after a recovery the client restarts delivery tags
// at 1 and never reports the publishes that were outstanding, so their entries are moved out of
// the window (recorded as never reported) before anything is published on the new channel.
// Without that the dead entries fill the window and publishing never resumes.
import com.rabbitmq.client.Address;
import com.rabbitmq.client.AlreadyClosedException;
import com.rabbitmq.client.Channel;
import com.rabbitmq.client.ConfirmListener;
import com.rabbitmq.client.Connection;
import com.rabbitmq.client.ConnectionFactory;
import com.rabbitmq.client.MessageProperties;
import com.rabbitmq.client.Recoverable;
import com.rabbitmq.client.RecoveryListener;
import com.rabbitmq.client.ShutdownSignalException;
import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.FileWriter;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.URI;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.NavigableMap;
import java.util.TreeMap;

public final class RecoveryDriver {
  // Outcome of one publish, as the client reported it.
  static final byte NONE = 0;  // nothing reported (yet): no ack, no nack, no exception
  static final byte ACK = 1;
  static final byte NACK = 2;
  static final byte FAIL = 3;  // the publish call threw: the client said it was not sent
  static final String[] OUTCOME_NAMES = {"none", "ack", "nack", "fail"};

  // --- options ---
  List<String> uris = new ArrayList<>();
  String queue;
  String queueType = "quorum";
  double durationS = 20;
  int window = 500;
  int size = 100;
  long recoveryIntervalMs = 1000;
  double drainS = 5;
  String tracePath;

  // --- clock: wall-clock epoch milliseconds with sub-millisecond resolution ---
  final double baseWallMs = System.currentTimeMillis();
  final long baseNano = System.nanoTime();

  double nowMs() {
    return baseWallMs + (System.nanoTime() - baseNano) / 1e6;
  }

  // --- state, guarded by lock ---
  final Object lock = new Object();
  // Per sequence number (index seq, from 1): publish time, outcome and the time it was reported.
  double[] pubT = new double[1 << 16];
  double[] outT = new double[1 << 16];
  byte[] outcome = new byte[1 << 16];
  long published = 0;  // highest sequence number used
  // Delivery tag of the current channel -> sequence number: the confirm window.
  final NavigableMap<Long, Long> outstanding = new TreeMap<>();
  boolean up = false;  // the channel can take publishes
  long generation = 0;  // bumped by every recovery
  long orphaned = 0;  // outstanding at a recovery, dropped from the window, never reported
  int recoveries = 0;
  boolean stop = false;
  double faultT = Double.NaN;

  static void emit(String json) {
    synchronized (System.out) {
      System.out.println(json);
      System.out.flush();
    }
  }

  static String q(String s) {
    StringBuilder b = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      if (c == '"' || c == '\\') {
        b.append('\\').append(c);
      } else if (c < 0x20) {
        b.append(String.format(Locale.ROOT, "\\u%04x", (int) c));
      } else {
        b.append(c);
      }
    }
    return b.append('"').toString();
  }

  static String ms(double t) {
    return Double.isNaN(t) ? "null" : String.format(Locale.ROOT, "%.3f", t);
  }

  void grow(long seq) {
    if (seq < pubT.length) return;
    int n = pubT.length;
    while (n <= seq) n *= 2;
    pubT = Arrays.copyOf(pubT, n);
    outT = Arrays.copyOf(outT, n);
    outcome = Arrays.copyOf(outcome, n);
  }

  void settle(long seq, byte what, double t) {
    if (outcome[(int) seq] != NONE) return;
    outcome[(int) seq] = what;
    outT[(int) seq] = t;
  }

  void parseArgs(String[] args) {
    for (int i = 0; i < args.length; ++i) {
      String a = args[i];
      String v = i + 1 < args.length ? args[i + 1] : null;
      if (v == null) usage("missing value of " + a);
      switch (a) {
        case "--uris":
          uris.addAll(Arrays.asList(v.split(",")));
          break;
        case "--queue":
          queue = v;
          break;
        case "--queue-type":
          if (!v.equals("quorum") && !v.equals("classic")) usage("--queue-type quorum|classic");
          queueType = v;
          break;
        case "--duration":
          durationS = Double.parseDouble(v);
          break;
        case "--window":
          window = Integer.parseInt(v);
          break;
        case "--size":
          size = Integer.parseInt(v);
          break;
        case "--recovery-interval-ms":
          recoveryIntervalMs = Long.parseLong(v);
          break;
        case "--drain":
          drainS = Double.parseDouble(v);
          break;
        case "--trace":
          tracePath = v;
          break;
        default:
          usage("unknown option " + a);
      }
      ++i;
    }
    if (uris.isEmpty() || queue == null) usage("--uris and --queue are required");
    if (size < 20) usage("--size must be at least 20 (the sequence number is at octets 12-19)");
    if (window < 1) usage("--window must be at least 1");
  }

  static void usage(String why) {
    System.err.println("RecoveryDriver: " + why);
    System.err.println(
        "usage: RecoveryDriver --uris URI[,URI...] --queue NAME [--queue-type quorum|classic]"
            + " [--duration S] [--window N] [--size B] [--recovery-interval-ms MS] [--drain S]"
            + " [--trace FILE]");
    System.exit(2);
  }

  // Commands from the harness on standard input: "fault EPOCH_MS", "stop".
  void readCommands() {
    Thread t =
        new Thread(
            () -> {
              try (BufferedReader in = new BufferedReader(new InputStreamReader(System.in))) {
                for (String line; (line = in.readLine()) != null; ) {
                  String[] w = line.trim().split("\\s+");
                  if (w.length == 2 && w[0].equals("fault")) {
                    synchronized (lock) {
                      faultT = Double.parseDouble(w[1]);
                    }
                    emit("{\"event\":\"fault\",\"t\":" + w[1] + "}");
                  } else if (w.length == 1 && w[0].equals("stop")) {
                    break;
                  } else if (!line.isBlank()) {
                    System.err.println("RecoveryDriver: unknown command: " + line);
                  }
                }
              } catch (IOException | NumberFormatException e) {
                System.err.println("RecoveryDriver: reading commands: " + e);
              }
              // End of input means stop as well: the harness has gone.
              synchronized (lock) {
                stop = true;
                lock.notifyAll();
              }
            },
            "commands");
    t.setDaemon(true);
    t.start();
  }

  List<Address> addresses() {
    List<Address> list = new ArrayList<>();
    for (String u : uris) {
      URI parsed = URI.create(u);
      list.add(new Address(parsed.getHost(), parsed.getPort() > 0 ? parsed.getPort() : 5672));
    }
    return list;
  }

  void run() throws Exception {
    ConnectionFactory f = new ConnectionFactory();
    URI first = URI.create(uris.get(0));
    if (first.getUserInfo() != null) {
      String[] ui = first.getUserInfo().split(":", 2);
      f.setUsername(ui[0]);
      if (ui.length > 1) f.setPassword(ui[1]);
    }
    f.setAutomaticRecoveryEnabled(true);
    f.setTopologyRecoveryEnabled(true);
    f.setNetworkRecoveryInterval(recoveryIntervalMs);

    Connection conn = f.newConnection(addresses(), "warren-recovery-bench-java");
    emit(
        "{\"event\":\"connected\",\"t\":"
            + ms(nowMs())
            + ",\"port\":"
            + conn.getPort()
            + ",\"client\":\"java\",\"version\":"
            + q(String.valueOf(conn.getClientProperties().get("version")))
            + "}");
    conn.addShutdownListener(
        (ShutdownSignalException cause) -> {
          double t = nowMs();
          synchronized (lock) {
            up = false;
          }
          String reason = cause.getReason() != null ? cause.getReason().protocolMethodName() : "";
          emit(
              "{\"event\":\"lost\",\"t\":"
                  + ms(t)
                  + ",\"initiated_by_application\":"
                  + cause.isInitiatedByApplication()
                  + ",\"reason\":"
                  + q(reason + " " + String.valueOf(cause.getMessage()))
                  + "}");
        });

    Channel ch = conn.createChannel();
    ch.confirmSelect();
    Map<String, Object> qargs = new HashMap<>();
    if (queueType.equals("quorum")) qargs.put("x-queue-type", "quorum");
    ch.queueDeclare(queue, true, false, false, qargs);

    ch.addConfirmListener(
        new ConfirmListener() {
          @Override
          public void handleAck(long tag, boolean multiple) {
            confirm(tag, multiple, ACK);
          }

          @Override
          public void handleNack(long tag, boolean multiple) {
            confirm(tag, multiple, NACK);
          }
        });
    ((Recoverable) ch)
        .addRecoveryListener(
            new RecoveryListener() {
              @Override
              public void handleRecoveryStarted(Recoverable r) {}

              @Override
              public void handleRecovery(Recoverable r) {
                double t = nowMs();
                long dropped;
                synchronized (lock) {
                  // Tags restart on the new channel: the old entries can never be confirmed and
                  // would be confused with the new tags. The client reports nothing about them.
                  dropped = outstanding.size();
                  orphaned += dropped;
                  outstanding.clear();
                  ++recoveries;
                  ++generation;
                  up = true;
                  lock.notifyAll();
                }
                emit(
                    "{\"event\":\"recovered\",\"t\":"
                        + ms(t)
                        + ",\"port\":"
                        + conn.getPort()
                        + ",\"dropped_unreported\":"
                        + dropped
                        + "}");
              }
            });

    synchronized (lock) {
      up = true;
    }
    readCommands();
    double start = nowMs();
    double end = start + durationS * 1000;
    emit("{\"event\":\"ready\",\"t\":" + ms(start) + "}");

    ByteBuffer body = ByteBuffer.allocate(size);
    while (true) {
      long seq;
      long tag;
      long gen;
      synchronized (lock) {
        while (!stop && (!up || outstanding.size() >= window)) {
          double left = end - nowMs();
          if (left <= 0) break;
          lock.wait(Math.max(1, Math.min(100, (long) left)));
        }
        if (stop || nowMs() >= end) break;
        seq = ++published;
        grow(seq);
        gen = generation;
        tag = ch.getNextPublishSeqNo();
        outstanding.put(tag, seq);
        pubT[(int) seq] = nowMs();
      }
      // Octets 0-7 publish time (epoch microseconds), 8-11 producer number 0, 12-19 the sequence
      // number, all big-endian; the rest zeros.
      body.clear();
      body.putLong((long) (pubT[(int) seq] * 1000)).putInt(0).putLong(seq);
      try {
        ch.basicPublish("", queue, MessageProperties.PERSISTENT_BASIC, body.array());
      } catch (IOException | AlreadyClosedException e) {
        double t = nowMs();
        synchronized (lock) {
          if (outstanding.get(tag) != null && outstanding.get(tag) == seq) outstanding.remove(tag);
          settle(seq, FAIL, t);
          // Wait for the recovery unless one already happened since this publish began.
          if (generation == gen) up = false;
        }
      }
    }

    // Drain: no new publishes; wait (bounded) for the window to empty.
    double drainEnd = nowMs() + drainS * 1000;
    synchronized (lock) {
      while (!outstanding.isEmpty() && nowMs() < drainEnd) lock.wait(50);
    }
    double stopT = nowMs();
    try {
      conn.abort(2000);
    } catch (Exception e) {
      // Closing is best effort: the summary below is what matters.
    }
    report(stopT);
  }

  void confirm(long tag, boolean multiple, byte what) {
    double t = nowMs();
    synchronized (lock) {
      if (multiple) {
        NavigableMap<Long, Long> done = outstanding.headMap(tag, true);
        for (long seq : done.values()) settle(seq, what, t);
        done.clear();
      } else {
        Long seq = outstanding.remove(tag);
        if (seq != null) settle(seq, what, t);
      }
      lock.notifyAll();
    }
  }

  void report(double stopT) throws IOException {
    synchronized (lock) {
      long[] count = new long[4];
      long[] atFault = new long[4];
      double firstConfirmAfter = Double.NaN;
      double firstPublishAfter = Double.NaN;
      boolean haveFault = !Double.isNaN(faultT);
      for (long s = 1; s <= published; ++s) {
        int i = (int) s;
        count[outcome[i]]++;
        if (!haveFault) continue;
        if (pubT[i] <= faultT && (outcome[i] == NONE || outT[i] > faultT)) atFault[outcome[i]]++;
        if (pubT[i] > faultT && outcome[i] != FAIL) {
          if (Double.isNaN(firstPublishAfter)) firstPublishAfter = pubT[i];
          if (outcome[i] == ACK && (Double.isNaN(firstConfirmAfter) || outT[i] < firstConfirmAfter))
            firstConfirmAfter = outT[i];
        }
      }
      emit(
          "{\"event\":\"summary\",\"client\":\"java\",\"published\":"
              + published
              + ",\"acked\":"
              + count[ACK]
              + ",\"nacked\":"
              + count[NACK]
              + ",\"failed\":"
              + count[FAIL]
              + ",\"unreported\":"
              + count[NONE]
              + ",\"orphaned_at_recovery\":"
              + orphaned
              + ",\"recoveries\":"
              + recoveries
              + ",\"fault_t\":"
              + ms(faultT)
              + ",\"first_publish_after_fault_t\":"
              + ms(firstPublishAfter)
              + ",\"first_confirm_after_fault_t\":"
              + ms(firstConfirmAfter)
              + ",\"unconfirmed_at_fault\":{\"total\":"
              + (atFault[0] + atFault[1] + atFault[2] + atFault[3])
              + ",\"acked\":"
              + atFault[ACK]
              + ",\"nacked\":"
              + atFault[NACK]
              + ",\"failed\":"
              + atFault[FAIL]
              + ",\"never\":"
              + atFault[NONE]
              + "},\"stop_t\":"
              + ms(stopT)
              + "}");
      if (tracePath == null) return;
      try (BufferedWriter w = new BufferedWriter(new FileWriter(tracePath), 1 << 16)) {
        for (long s = 1; s <= published; ++s) {
          int i = (int) s;
          w.write(
              "["
                  + s
                  + ","
                  + ms(pubT[i])
                  + ",\""
                  + OUTCOME_NAMES[outcome[i]]
                  + "\","
                  + (outcome[i] == NONE ? "null" : ms(outT[i]))
                  + "]\n");
        }
      }
    }
  }

  public static void main(String[] args) {
    RecoveryDriver d = new RecoveryDriver();
    d.parseArgs(args);
    try {
      d.run();
    } catch (Exception e) {
      emit("{\"event\":\"error\",\"t\":" + ms(d.nowMs()) + ",\"what\":" + q(e.toString()) + "}");
      System.exit(1);
    }
    System.exit(0);
  }
}
