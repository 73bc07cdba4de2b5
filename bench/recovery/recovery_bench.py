#!/usr/bin/python3
"""bench/recovery: what clients do when the broker goes away, measured side by side.

Usage (from anywhere; paths are taken from the repository this script is in):
  bash bench/recovery/run.sh [--clients java,node,warren] [--scenarios kill,leader,close,restart]
                     [--runs 3] [--duration 20] [--fault-at 6] [--recovery-interval 1]
                     [--standalone-queue classic|quorum] [--warren-args ARGS] [--no-build]
                     [--raw FILE] [--keep-traces]

Scenarios (bench/recovery/README.md says more):
  kill     3-node cluster on loopback, durable quorum queue declared by the client (so its node
           leads it), kill -9 of the node the client is connected to at --fault-at s of a
           --duration s run; the node is restarted after the run.
  leader   the same cluster, the queue declared beforehand through node L (which leads it); the
           client is given the other two nodes only; kill -9 of L (the client's node stays up).
  restart  one standalone node, durable classic queue (--standalone-queue), kill -9 at --fault-at
           then restart at once; the time is counted from the moment the node accepts AMQP again.
  close    the same standalone node, `rabbitmqctl close_connection` on the client's connection;
           the time is counted from the moment the client saw the close.
Clients:
  java     bench/peers/java/RecoveryDriver.java on Debian's librabbitmq-client-java (compiled with
           javac into a temporary directory), automatic recovery, --recovery-interval
  node     bench/peers/node/recovery_driver.js (amqplib + amqp-connection-manager, `npm ci` there
           when node_modules is missing or stale), reconnectTimeInSeconds --recovery-interval
  warren   bench/recovery/warren_driver.cc over the async engine (built with
           `bazel build -c opt //bench/recovery:warren_driver` unless --no-build), with
           --warren-args added to its command line (e.g. "--recovery on --republish" once the
           engine has recovery)

Every workload: persistent 100 B messages, publisher confirms with a window of 500, one channel,
bodies carrying a sequence number (octets 12-19, big-endian). After each run the queue is
consumed whole and every sequence number the client saw confirmed is looked for. Nodes are the
harness's own (tools/rabbit_node.sh, owner: this process) and are removed however it ends; the
shared broker on 5672 is never touched. Raw results: one JSON line per run in --raw (default
/tmp/bench_recovery.jsonl).
"""

import argparse
import datetime
import hashlib
import json
import os
import shlex
import shutil
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import amqp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RABBIT_NODE = os.path.join(ROOT, "tools", "rabbit_node.sh")
JAVA_SRC = os.path.join(ROOT, "bench", "peers", "java", "RecoveryDriver.java")
JAVA_JARS = ["/usr/share/java/amqp-client.jar", "/usr/share/java/slf4j-api.jar",
             "/usr/share/java/slf4j-nop.jar"]
NODE_DIR = os.path.join(ROOT, "bench", "peers", "node")
NODE_DRIVER = os.path.join(NODE_DIR, "recovery_driver.js")
ALL_CLIENTS = ["java", "node", "warren"]
ALL_SCENARIOS = ["kill", "leader", "close", "restart"]
WINDOW = 500
SIZE = 100
# Trace outcome names (README, "Trace file") -> the table's columns: ack, nack, fail (the client
# said the publish failed), doubt (the client completed it without a verdict: sent, may or may
# not be on the broker), none (never reported).
CATEGORY = {"in_doubt": "doubt", "connection_lost": "doubt", "channel_closed": "doubt",
            "timeout": "doubt"}
SEQ_AT = 12  # the sequence number's octets in a body: [12, 20), big-endian

OWNER = os.getpid()


def now_ms():
    return time.time() * 1000.0


def log(msg):
    print(f"recovery: {msg}", file=sys.stderr, flush=True)


class HarnessError(RuntimeError):
    pass


# --- nodes, through tools/rabbit_node.sh only --------------------------------------------------

def rn(*args, timeout=300, check=True):
    """Runs tools/rabbit_node.sh ARGS; returns its standard output."""
    # From /tmp: an Erlang CLI that crashes (e.g. its node removed under it when the harness is
    # interrupted) leaves erl_crash.dump in its working directory.
    p = subprocess.run(["bash", RABBIT_NODE, *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=timeout,
                       cwd=tempfile.gettempdir())
    if check and p.returncode != 0:
        raise HarnessError(f"rabbit_node.sh {' '.join(args)} failed ({p.returncode}): "
                           f"{p.stderr.strip()[-2000:]}")
    return p.stdout


def node_info(name):
    return dict(line.split("=", 1) for line in rn("info", name).splitlines() if "=" in line)


def node_port(name):
    return int(rn("port", name).strip())


def uri_of(port):
    return f"amqp://guest:guest@127.0.0.1:{port}"


def beam_dead(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return True
    return s[s.rindex(")") + 2] in "ZX"


def canary(port):
    """A connection of the harness's own to the node, opened just before a kill: the node has
    sent connection.start on it (so its VM holds the socket), and the kill resets it exactly as it
    resets the client's connection. RabbitMQ closes a connection that stays in the handshake for
    10 s (handshake_timeout), far longer than a kill takes."""
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall(b"AMQP\x00\x00\x09\x01")
    if not c.recv(4096):
        raise HarnessError(f"the node on port {port} closed the canary connection at once")
    c.setblocking(False)
    return c


def kill_node(name):
    """kill -9 through rabbit_node.sh; returns (the instant the kill became visible to clients,
    command start, command end), and records the VM's zombie instant in KILL_DETAIL. The kernel
    closes a killed process's sockets (resetting its connections) only once its last thread has
    exited: on this busy machine that came 20-250 ms after /proc first showed the VM's main thread
    as a zombie, time no client can see. So the instant of the kill is the reset of a canary
    connection (above), watched every 0.5 ms."""
    info = node_info(name)
    pid = info.get("pid")
    port = int(info.get("amqp_port") or node_port(name))
    if not pid:
        raise HarnessError(f"{name} is not running, cannot kill it")
    c = canary(port)
    try:
        t_cmd = now_ms()
        p = subprocess.Popen(["bash", RABBIT_NODE, "kill", name], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, cwd=tempfile.gettempdir())
        t_zombie = t_reset = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and t_reset is None:
            readable, _, _ = select.select([c], [], [], 0.0005)
            if readable:
                try:
                    if not c.recv(4096):
                        t_reset = now_ms()
                except (ConnectionResetError, BrokenPipeError):
                    t_reset = now_ms()
                except BlockingIOError:
                    pass
            if t_zombie is None and beam_dead(pid):
                t_zombie = now_ms()
        err = p.communicate(timeout=60)[1]
        t_end = now_ms()
    finally:
        c.close()
    if p.returncode != 0 or t_reset is None:
        raise HarnessError(f"rabbit_node.sh kill {name} failed: {err.strip()}")
    KILL_DETAIL.update(zombie_t=t_zombie, reset_t=t_reset)
    return t_reset, t_cmd, t_end


KILL_DETAIL = {}


def amqp_answers(port):
    """True if the port answers an AMQP protocol header with a method frame (connection.start)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.settimeout(2)
            s.sendall(b"AMQP\x00\x00\x09\x01")
            return s.recv(1) == b"\x01"
    except OSError:
        return False


def restart_and_time(name, port, timeout_s=180):
    """Restarts a killed node and returns the instant it first answered AMQP (polled every 10 ms;
    rabbit_node.sh's own wait polls every 250 ms, too coarse to time a client against)."""
    rn("restart", name, "--no-wait")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if amqp_answers(port):
            t = now_ms()
            rn("wait", name, "--timeout", str(timeout_s))
            return t
        time.sleep(0.01)
    raise HarnessError(f"{name} did not answer AMQP within {timeout_s} s of its restart")


def ctl(name, *args, timeout=120):
    return rn("ctl", name, *args, timeout=timeout)


def parallel(fn, items):
    """fn(item) for every item at once (rabbitmqctl calls take seconds each on a busy machine)."""
    errors = []

    def one(x):
        try:
            fn(x)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(x,)) for x in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def queue_leader(node, queue):
    out = ctl(node, "list_queues", "--quiet", "--no-table-headers", "name", "leader")
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == queue:
            return parts[1]
    return None


# --- queues, through python3-amqp ------------------------------------------------------------

def connect(port):
    c = amqp.Connection(host=f"127.0.0.1:{port}", userid="guest", password="guest",
                        connect_timeout=10)
    c.connect()
    return c


def declare(port, queue, queue_type):
    args = {"x-queue-type": "quorum"} if queue_type == "quorum" else {}
    with connect(port) as c:
        ch = c.channel()
        ch.queue_declare(queue, durable=True, auto_delete=False, arguments=args)


def drain_queue(port, queue, idle_s=2.0, timeout_s=180):
    """Consumes the queue whole; returns every sequence number found, in order. Done when the
    queue reports 0 messages and nothing arrived for idle_s (a quorum queue whose member has just
    restarted can report 0 for a few seconds, so an early 0 with deliveries still coming is not
    the end)."""
    seqs = []
    deadline = time.monotonic() + timeout_s
    with connect(port) as c:
        ch = c.channel()
        ch.basic_qos(0, 2000, False)
        last = {"tag": None}

        def on_message(m):
            b = m.body
            if isinstance(b, str):
                b = b.encode("latin-1")
            seqs.append(int.from_bytes(b[SEQ_AT:SEQ_AT + 8], "big") if len(b) >= SEQ_AT + 8
                        else -1)
            last["tag"] = m.delivery_tag
            if len(seqs) % 1000 == 0:
                ch.basic_ack(m.delivery_tag, multiple=True)
                # Acked: acking it again when the queue runs dry would be an unknown tag (406;
                # it happened whenever a queue held a multiple of 1000 messages).
                last["tag"] = None

        ctag = ch.basic_consume(queue, callback=on_message)
        idle_since = time.monotonic()
        while time.monotonic() < deadline:
            n = len(seqs)
            try:
                c.drain_events(timeout=0.25)
            except socket.timeout:
                pass
            if len(seqs) != n:
                idle_since = time.monotonic()
                continue
            if time.monotonic() - idle_since >= idle_s:
                if last["tag"] is not None:
                    ch.basic_ack(last["tag"], multiple=True)
                    last["tag"] = None
                _, count, _ = ch.queue_declare(queue, passive=True)
                if count == 0:
                    break
                idle_since = time.monotonic()
        else:
            raise HarnessError(f"queue {queue} not drained within {timeout_s} s")
        if last["tag"] is not None:
            ch.basic_ack(last["tag"], multiple=True)
        ch.basic_cancel(ctag)
        ch.queue_delete(queue)
    return seqs


# --- drivers -----------------------------------------------------------------------------------

class Driver:
    """A peer driver process: JSON lines on stdout, commands on stdin (README: Driver contract)."""

    def __init__(self, argv, log_path):
        self.log_path = log_path
        self.err = open(log_path, "w")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, text=True, bufsize=1)
        self.events = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.p.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                ev = {"event": "unparsed", "line": line}
            ev.setdefault("seen", now_ms())
            with self.cond:
                self.events.append(ev)
                self.cond.notify_all()
        with self.cond:
            self.events.append({"event": "eof", "seen": now_ms()})
            self.cond.notify_all()

    def wait_for(self, kind, timeout_s, after=0):
        """The first event of this kind at index >= after; raises on timeout or exit."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                for ev in self.events[after:]:
                    if ev["event"] == kind:
                        return ev
                    if ev["event"] in ("eof", "error") and kind != ev["event"]:
                        raise HarnessError(f"driver ended before '{kind}': {ev} "
                                           f"(stderr: {self.stderr_tail()})")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HarnessError(f"no '{kind}' from the driver within {timeout_s} s "
                                       f"(stderr: {self.stderr_tail()})")
                self.cond.wait(min(left, 0.5))

    def first(self, kind, after_t=None):
        """The first event of this kind at or after after_t; a `lost` the application caused
        (its own close at the end of the run) does not count."""
        with self.cond:
            for ev in self.events:
                if ev.get("initiated_by_application") is True:
                    continue
                if ev["event"] == kind and (after_t is None or (ev.get("t") or 0) >= after_t):
                    return ev
        return None

    def send(self, line):
        try:
            self.p.stdin.write(line + "\n")
            self.p.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    def finish(self, timeout_s):
        self.send("stop")
        try:
            self.p.stdin.close()  # end of input is "stop" too
        except (BrokenPipeError, OSError):
            pass
        try:
            self.p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.reader.join(timeout=5)
        self.err.close()
        return self.p.returncode

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()

    def stderr_tail(self):
        try:
            self.err.flush()
            with open(self.log_path) as f:
                return f.read()[-1500:].strip()
        except OSError:
            return ""


def read_trace(path):
    """{seq: (publish_ms, outcome, outcome_ms)} from a driver's trace (README: Trace file)."""
    out = {}
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                seq, pub, outcome, t = json.loads(line)
                out[seq] = (pub, outcome, t)
    return out


def analyse(trace, stored, fault_t, ref_t):
    """The table's numbers for one run. fault_t: the instant of the fault (what 'unconfirmed at
    the fault' and 'published after the fault' are measured against); ref_t: the instant the
    time to the first confirm is counted from (the kill; for restart, the node answering again;
    for close, the client seeing the close)."""
    counts = {}
    for seq in stored:
        counts[seq] = counts.get(seq, 0) + 1
    r = {"published": len(trace), "stored_messages": len(stored),
         "stored_distinct": len(counts),
         "duplicates": sum(n - 1 for n in counts.values() if n > 1),
         "unknown_stored": sum(1 for s in counts if s not in trace)}
    by_outcome = {}
    for seq, (pub, outcome, t) in trace.items():
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
    r["outcomes"] = by_outcome
    # The table's columns (CATEGORY).
    trace = {s: (p, CATEGORY.get(o, o), t) for s, (p, o, t) in trace.items()}
    r["confirmed_lost"] = sum(1 for s, (p, o, t) in trace.items() if o == "ack" and s not in counts)
    r["not_acked_but_stored"] = {}
    for s, (p, o, t) in trace.items():
        if o != "ack" and s in counts:
            r["not_acked_but_stored"][o] = r["not_acked_but_stored"].get(o, 0) + 1
    at_fault = {"total": 0}
    stored_at_fault = 0
    first_confirm = None
    first_publish = None
    for s, (p, o, t) in trace.items():
        if p <= fault_t and (o == "none" or t is None or t >= fault_t):
            at_fault["total"] += 1
            at_fault[o] = at_fault.get(o, 0) + 1
            if s in counts:
                stored_at_fault += 1
        if p > fault_t and o != "fail":
            if first_publish is None or p < first_publish:
                first_publish = p
            if o == "ack" and (first_confirm is None or t < first_confirm):
                first_confirm = t
    r["unconfirmed_at_fault"] = at_fault
    r["unconfirmed_at_fault_stored"] = stored_at_fault
    r["first_confirm_after_fault_t"] = first_confirm
    r["first_publish_after_fault_t"] = first_publish
    r["time_to_first_confirm_s"] = (first_confirm - ref_t) / 1000 if first_confirm else None
    return r


def client_seen_instant(trace, cmd_start_t, fault_t, lost_t=None):
    """The instant of the fault for sorting publishes into before and after it: the harness's
    own instant (a kill's canary reset, polled every 0.5 ms by a process on a busy machine, so a
    few ms late at times; a forced close's `lost` event), or the first sign of it the client gave
    after the command began (its `lost` event, or a publish settled otherwise than with an ack),
    whichever came first. warren completes outstanding publishes before it calls on_closed, so
    with a later instant they would not count as unconfirmed at the fault. The time to the first
    confirm is still counted from the harness's instant."""
    firsts = [t for (_, o, t) in trace.values()
              if o != "ack" and t is not None and t >= cmd_start_t]
    if lost_t is not None and lost_t >= cmd_start_t:
        firsts.append(lost_t)
    return min([fault_t] + firsts)


# --- the harness -------------------------------------------------------------------------------

class Harness:
    def __init__(self, args, workdir):
        self.a = args
        self.work = workdir
        self.cluster = None
        self.standalone = None
        self.java_classes = None
        self.warren_driver = None
        self.results = []

    # --- builds ---
    def build(self, clients):
        if "java" in clients:
            out = os.path.join(self.work, "java")
            os.makedirs(out, exist_ok=True)
            for jar in JAVA_JARS:
                if not os.path.exists(jar):
                    raise HarnessError(f"{jar} is missing: apt-get install librabbitmq-client-java "
                                       "libslf4j-java default-jre-headless (tools/setup.sh does)")
            subprocess.run(["javac", "-cp", JAVA_JARS[0], "-d", out, JAVA_SRC], check=True)
            self.java_classes = out
        if "node" in clients:
            self.npm_ci()
        if "warren" in clients:
            if not self.a.no_build:
                p = subprocess.run(["bazel", "build", "-c", "opt",
                                    "//bench/recovery:warren_driver"], cwd=ROOT)
                if p.returncode != 0:
                    raise HarnessError("bazel build -c opt //bench/recovery:warren_driver failed")
            bin_dir = subprocess.run(["bazel", "info", "-c", "opt", "bazel-bin"], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, check=True).stdout.strip()
            self.warren_driver = os.path.join(bin_dir, "bench", "recovery", "warren_driver")
            if not os.path.exists(self.warren_driver):
                raise HarnessError(f"{self.warren_driver} is missing (drop --no-build)")

    def npm_ci(self):
        lock = os.path.join(NODE_DIR, "package-lock.json")
        stamp = os.path.join(NODE_DIR, "node_modules", ".warren-lock-sha256")
        with open(lock, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        try:
            with open(stamp) as f:
                if f.read().strip() == digest:
                    return
        except OSError:
            pass
        log("npm ci in bench/peers/node")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True)
        with open(stamp, "w") as f:
            f.write(digest)

    # --- nodes ---
    def ensure_cluster(self):
        if self.cluster is None:
            log("starting a 3-node cluster (about 30 s)")
            self.cluster = rn("cluster", "3", "--owner", str(OWNER), timeout=600).split()
            self.ports = {n: node_port(n) for n in self.cluster}
            log(f"cluster: {', '.join(f'{n} :{p}' for n, p in self.ports.items())}")
        return self.cluster

    def ensure_standalone(self):
        if self.standalone is None:
            log("starting a standalone node")
            self.standalone = rn("start", "--owner", str(OWNER), timeout=300).strip()
            self.standalone_port = node_port(self.standalone)
        return self.standalone

    def ensure_cluster_up(self):
        """After a run that failed half-way: every node of the cluster running again."""
        for n in self.cluster:
            if node_info(n).get("running") != "1":
                log(f"restarting {n}, left down by an earlier run")
                rn("restart", n, "--timeout", "180", timeout=300)

    def cleanup(self):
        try:
            rn("cleanup", "--owner", str(OWNER), timeout=120, check=False)
        except Exception as e:  # noqa: BLE001 - best effort at exit
            log(f"cleanup: {e}")

    # --- one run ---
    def driver_argv(self, client, uris, queue, queue_type, duration, trace):
        ri = self.a.recovery_interval
        if client == "java":
            cp = ":".join([self.java_classes] + JAVA_JARS)
            return ["java", "-cp", cp, "RecoveryDriver", "--uris", ",".join(uris), "--queue",
                    queue, "--queue-type", queue_type, "--duration", str(duration), "--window",
                    str(WINDOW), "--size", str(SIZE), "--recovery-interval-ms",
                    str(int(ri * 1000)), "--trace", trace]
        if client == "node":
            return ["node", NODE_DRIVER, "--uris", ",".join(uris), "--queue", queue,
                    "--queue-type", queue_type, "--duration", str(duration), "--window",
                    str(WINDOW), "--size", str(SIZE), "--reconnect-s", str(ri), "--trace", trace]
        if client == "warren":
            return [self.warren_driver, "--uris", ",".join(uris), "--queue", queue,
                    "--queue-type", queue_type, "--duration", str(duration), "--window",
                    str(WINDOW), "--size", str(SIZE), "--trace", trace,
                    *shlex.split(self.a.warren_args)]
        raise HarnessError(f"no driver for {client}")

    def run_one(self, client, scenario, idx):
        a = self.a
        tag = f"{client}-{scenario}-{idx}"
        queue = f"recovery-{scenario}-{client}-{idx}-{OWNER}"
        trace = os.path.join(self.work, f"{tag}.trace")
        res = {"client": client, "scenario": scenario, "run": idx, "queue": queue,
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "load_before": os.getloadavg()}
        if scenario in ("kill", "leader"):
            nodes = self.ensure_cluster()
            self.ensure_cluster_up()
            queue_type = "quorum"
            # Rotate the address order run by run (Node tries them in order; Java shuffles).
            order = nodes[idx % 3:] + nodes[:idx % 3]
            if scenario == "leader":
                leader = order[0]
                # Declared through the leader-to-be (client-local placement), and checked: the
                # scenario is void if another node leads it. No `sync` on the cluster: the
                # metadata lives on all three nodes and only one is killed.
                declare(self.ports[leader], queue, queue_type)
                actual = queue_leader(leader, queue)
                if actual != leader:
                    raise HarnessError(f"{queue}, declared through {leader}, is led by {actual}")
                client_nodes = order[1:]
                res["leader"] = leader
            else:
                client_nodes = order
            uris = [uri_of(self.ports[n]) for n in client_nodes]
        else:
            node = self.ensure_standalone()
            if node_info(node).get("running") != "1":
                log(f"restarting {node}, left down by an earlier run")
                rn("restart", node, "--timeout", "180", timeout=300)
            queue_type = a.standalone_queue
            client_nodes = [node]
            uris = [uri_of(self.standalone_port)]
            self.ports = getattr(self, "ports", {})
            self.ports[node] = self.standalone_port
        res["queue_type"] = queue_type
        port_to_node = {self.ports[n]: n for n in client_nodes}

        # The restart scenario may need longer than --duration: the node's boot takes ~7-15 s.
        duration = a.duration + (120 if scenario == "restart" else 0)
        d = Driver(self.driver_argv(client, uris, queue, queue_type, duration, trace),
                   os.path.join(self.work, f"{tag}.stderr"))
        try:
            connected = d.wait_for("connected", 120)
            ready = d.wait_for("ready", 120)
            t0 = ready["t"]
            client_node = port_to_node.get(connected["port"])
            res["client_node"] = client_node
            leader_check = None
            if scenario == "kill":
                # Which node leads the queue the client declared (its own, with client-local
                # placement), asked while the run goes on: rabbitmqctl takes seconds here.
                leader_check = threading.Thread(
                    target=lambda: res.update(leader=queue_leader(client_node, queue)),
                    daemon=True)
                leader_check.start()
            elif scenario == "restart":
                # The declaration must reach the disk before a kill (tools/rabbit_node.sh sync).
                rn("sync", client_node)
            conn_pid = None
            if scenario == "close":
                out = ctl(client_node, "list_connections", "--quiet", "--no-table-headers", "pid")
                pids = [x.strip() for x in out.splitlines() if x.strip().startswith("<")]
                if len(pids) != 1:
                    raise HarnessError(f"expected the driver's one connection on {client_node}, "
                                       f"found {pids}")
                conn_pid = pids[0]
            fault_at = t0 + a.fault_at * 1000
            late = now_ms() - fault_at
            if late > 0:
                log(f"note: the setup took {late / 1000:.2f} s beyond --fault-at; faulting now")
                res["fault_late_s"] = late / 1000
            else:
                time.sleep(-late / 1000)
            end_t = t0 + a.duration * 1000
            if leader_check is not None:
                leader_check.join(timeout=max(0.0, (fault_at - now_ms()) / 1000))
                res["leader_known_before_fault"] = not leader_check.is_alive()
            if scenario in ("kill", "leader"):
                victim = client_node if scenario == "kill" else res["leader"]
                fault_t, t_cmd, t_end = kill_node(victim)
                res.update(victim=victim, fault_t=fault_t, kill_cmd_s=(t_end - t_cmd) / 1000,
                           fault_cmd_start_t=t_cmd,
                           kill_detail={k: (v - fault_t if k.endswith("_t") and v else v)
                                        for k, v in KILL_DETAIL.items()})
                ref_t = fault_t
                d.send(f"fault {fault_t:.3f}")
            elif scenario == "restart":
                port = self.standalone_port
                fault_t, t_cmd, t_end = kill_node(client_node)
                d.send(f"fault {fault_t:.3f}")
                ready_t = restart_and_time(client_node, port)
                res.update(victim=client_node, fault_t=fault_t, node_ready_t=ready_t,
                           fault_cmd_start_t=t_cmd,
                           node_down_s=(ready_t - fault_t) / 1000)
                ref_t = ready_t
                end_t = max(end_t, ready_t + (a.duration - a.fault_at) * 1000)
            else:
                n_events = len(d.events)
                t_cmd = now_ms()
                ctl(client_node, "close_connection", conn_pid, "bench/recovery: forced close")
                t_end = now_ms()
                lost = d.wait_for("lost", 30, after=n_events)
                fault_t = lost["t"]
                d.send(f"fault {fault_t:.3f}")
                res.update(fault_t=fault_t, fault_cmd_start_t=t_cmd, close_cmd_end_t=t_end)
                ref_t = fault_t
            # Until the end of the run, or sooner when the driver has ended (no recovery).
            while now_ms() < end_t and d.p.poll() is None:
                time.sleep(min(0.1, max(0.0, (end_t - now_ms()) / 1000)))
            rc = d.finish(timeout_s=60)
        finally:
            d.kill()
        res["exit"] = rc
        summary = d.first("summary")
        res["driver_summary"] = summary
        res["events"] = [e for e in d.events if e["event"] in
                         ("connected", "lost", "recovered", "fault", "channel_error", "error")]
        lost = d.first("lost", after_t=res["fault_t"] - 1000)
        res["detected_s"] = (lost["t"] - res["fault_t"]) / 1000 if lost else None
        res["lost_t"] = lost["t"] if lost else None
        rec = d.first("recovered", after_t=res["fault_t"] - 1000)
        res["recovered_port_node"] = port_to_node.get(rec["port"]) if rec else None
        self.after_run(res, scenario, client_nodes, queue, trace, ref_t)
        return res

    def after_run(self, res, scenario, client_nodes, queue, trace, ref_t):
        # Bring the cluster back whole before counting and before the next run.
        if scenario in ("kill", "leader"):
            rn("restart", res["victim"], "--timeout", "180", timeout=300)
            drain_node = next(n for n in self.cluster if n != res["victim"])
            port = self.ports[drain_node]
        else:
            port = self.standalone_port
        stored = drain_queue(port, queue)
        t = read_trace(trace)
        if t is None:
            res["analysis"] = None
            res["stored_messages"] = len(stored)
            return
        lost = res.get("lost_t")
        fault_t = client_seen_instant(t, res["fault_cmd_start_t"], res["fault_t"], lost)
        res["fault_t_harness"], res["fault_t"] = res["fault_t"], fault_t
        res["analysis"] = analyse(t, stored, fault_t, ref_t)
        if not self.a.keep_traces:
            os.remove(trace)


# --- report --------------------------------------------------------------------------------------

def med(values):
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def fmt_range(values, unit="", digits=2):
    v = sorted(x for x in values if x is not None)
    if not v:
        return "never"
    m = statistics.median(v)
    s = f"{m:.{digits}f}{unit}"
    if len(v) > 1:
        s += f" ({v[0]:.{digits}f}–{v[-1]:.{digits}f})"
    if len(v) < len(values):
        s += f", never in {len(values) - len(v)} of {len(values)}"
    return s


def fmt_count(values):
    v = [x for x in values if x is not None]
    if not v:
        return "–"
    m = statistics.median(v)
    s = f"{m:g}"
    if min(v) != max(v):
        s += f" ({min(v):g}–{max(v):g})"
    return s


SCENARIO_TEXT = {
    "kill": "A: kill -9 of the client's node (3 nodes, quorum)",
    "leader": "B: kill -9 of the queue's leader only (3 nodes, quorum)",
    "close": "C: rabbitmqctl close_connection (standalone)",
    "restart": "D: kill -9 + restart of a standalone node (time from the node accepting again)",
}


def table(results):
    rows = ["| client | scenario | time to first confirm after the fault, s: median (min–max) "
            "| detected after, s | confirmed lost | unconfirmed at the fault: acked / nacked / "
            "failed / no verdict (in doubt) / never reported | of those, stored | reported failed or nacked "
            "but stored | duplicates | runs |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    groups = {}
    for r in results:
        groups.setdefault((r["client"], r["scenario"]), []).append(r)
    for (client, scenario), rs in groups.items():
        ok = [r for r in rs if r.get("analysis")]
        an = [r["analysis"] for r in ok]
        t = [x["time_to_first_confirm_s"] for x in an]
        det = [r.get("detected_s") for r in ok]
        uf = [x["unconfirmed_at_fault"] for x in an]
        parts = " / ".join(fmt_count([u.get(k, 0) for u in uf])
                           for k in ("ack", "nack", "fail", "doubt", "none"))
        total = fmt_count([u["total"] for u in uf])
        wrong = [sum(v for k, v in x["not_acked_but_stored"].items() if k in ("fail", "nack"))
                 for x in an]
        rows.append(
            f"| {client} | {SCENARIO_TEXT[scenario]} | {fmt_range(t)} | {fmt_range(det, digits=3)}"
            f" | {fmt_count([x['confirmed_lost'] for x in an])} | {total}: {parts} | "
            f"{fmt_count([x['unconfirmed_at_fault_stored'] for x in an])} | {fmt_count(wrong)} | "
            f"{fmt_count([x['duplicates'] for x in an])} | {len(ok)} of {len(rs)}, exit "
            f"{','.join(str(e) for e in sorted({r.get('exit') for r in ok}, key=str))} |")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", default="java,node,warren")
    ap.add_argument("--scenarios", default=",".join(ALL_SCENARIOS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--fault-at", type=float, default=6)
    ap.add_argument("--recovery-interval", type=float, default=1.0,
                    help="Java's network recovery interval / Node's reconnect time, seconds")
    ap.add_argument("--standalone-queue", choices=["classic", "quorum"], default="classic")
    ap.add_argument("--warren-args", default="",
                    help="added to warren_driver's command line, e.g. '--recovery on --republish'")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--raw", default="/tmp/bench_recovery.jsonl")
    ap.add_argument("--keep-traces", action="store_true",
                    help="keep the work directory (traces, driver logs) and print its path")
    ap.add_argument("--table-from", nargs="+", metavar="RAW",
                    help="print the table of the runs recorded in these --raw files, run nothing")
    a = ap.parse_args()
    if a.table_from:
        results = []
        for path in a.table_from:
            with open(path) as f:
                results += [json.loads(line) for line in f if line.strip()]
        order = {c: i for i, c in enumerate(ALL_CLIENTS)}
        results.sort(key=lambda r: (ALL_SCENARIOS.index(r["scenario"]),
                                    order.get(r["client"], 99)))
        print(table([r for r in results if "error" not in r]))
        for r in results:
            if "error" in r:
                print(f"- not counted: {r['client']} {r['scenario']} run {r['run'] + 1}: "
                      f"{r['error']}")
        return 0
    clients = [c for c in a.clients.split(",") if c]
    scenarios = [s for s in a.scenarios.split(",") if s]
    for c in clients:
        if c not in ALL_CLIENTS:
            sys.exit(f"unknown client {c} (one of {', '.join(ALL_CLIENTS)})")
    for s in scenarios:
        if s not in ALL_SCENARIOS:
            sys.exit(f"unknown scenario {s} (one of {', '.join(ALL_SCENARIOS)})")
    if not 0 < a.fault_at < a.duration:
        sys.exit("--fault-at must be inside the run")

    # A signal ends the run through the finally below (nodes removed, drivers killed).
    def on_signal(sig, _frame):
        raise SystemExit(128 + sig)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    work = tempfile.mkdtemp(prefix="bench-recovery-")
    h = Harness(a, work)
    started = datetime.datetime.now(datetime.timezone.utc)
    loads = [os.getloadavg()]
    try:
        h.build(clients)
        with open(a.raw, "a") as raw:
            for scenario in scenarios:
                for idx in range(a.runs):
                    # Rotate the client order each repetition, so drift spreads over all.
                    order = clients[idx % len(clients):] + clients[:idx % len(clients)]
                    for client in order:
                        log(f"{scenario} run {idx + 1}/{a.runs}: {client}")
                        try:
                            r = h.run_one(client, scenario, idx)
                        except (HarnessError, amqp.exceptions.AMQPError, OSError,
                                subprocess.SubprocessError) as e:
                            log(f"run failed: {e!r}")
                            r = {"client": client, "scenario": scenario, "run": idx,
                                 "error": repr(e)}
                        r["load_after"] = os.getloadavg()
                        loads.append(r["load_after"])
                        h.results.append(r)
                        raw.write(json.dumps(r) + "\n")
                        raw.flush()
                        brief = r.get("analysis") or {}
                        log(f"  -> exit {r.get('exit')}, first confirm after "
                            f"{brief.get('time_to_first_confirm_s')} s, at fault "
                            f"{brief.get('unconfirmed_at_fault')}, lost "
                            f"{brief.get('confirmed_lost')}, dups {brief.get('duplicates')}"
                            + (f", error {r['error']}" if "error" in r else ""))
    finally:
        h.cleanup()
        if a.keep_traces:
            log(f"traces and driver logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    ended = datetime.datetime.now(datetime.timezone.utc)
    print(f"bench/recovery, {started:%d %b %Y %H:%M}–{ended:%H:%M} UTC, {os.cpu_count()} cores, "
          f"load average (1 min) during the runs: {min(l[0] for l in loads):.1f}–"
          f"{max(l[0] for l in loads):.1f}; {a.runs} runs each, medians")
    print()
    print(table([r for r in h.results if "error" not in r]))
    failed = [r for r in h.results if "error" in r]
    if failed:
        print()
        for r in failed:
            print(f"- {r['client']} {r['scenario']} run {r['run'] + 1}: {r['error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
