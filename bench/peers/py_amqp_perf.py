#!/usr/bin/python3
"""py-amqp (Debian's python3-amqp) on bench/compare's workloads; run with /usr/bin/python3.

Same options, workloads and JSON line as bench/peers/rabbitmq_c_perf.cc (see its header):

  py_amqp_perf.py --mode publish|consume [--uri amqp://guest:guest@127.0.0.1:5672 | HOST:PORT]
                  [--queue Q] [--size 16] [--confirm W] [--ack | --no-ack]
                  [--prefetch 1000] [--seconds 5 | --count N]

Written the way a py-amqp user would: basic_publish per message; confirms through
confirm_select() and the channel's basic_ack/basic_nack events, draining events whenever W
publishes are unconfirmed (confirm_publish=True would wait for every ack, a window of 1);
basic_consume with a callback and drain_events, one basic_ack per message with --ack.
CPU is os.times() user + sys of the process over the timed part.
"""

import argparse
import json
import os
import socket
import sys
import time
import urllib.parse

import amqp

QUEUE_EXPIRES_MS = 300000  # as bench/driver.h


def cpu_seconds():
    t = os.times()
    return t.user + t.system


def parse_args(argv):
    p = argparse.ArgumentParser(prog="py_amqp_perf.py")
    p.add_argument("--mode", choices=["publish", "consume"], required=True)
    p.add_argument("--uri", default="amqp://guest:guest@127.0.0.1:5672")
    p.add_argument("--queue", default="")
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--confirm", type=int, default=0, metavar="W")
    ack = p.add_mutually_exclusive_group()
    ack.add_argument("--ack", dest="ack", action="store_true")
    ack.add_argument("--no-ack", dest="ack", action="store_false")
    p.add_argument("--prefetch", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--count", type=int, default=0)
    a = p.parse_args(argv)
    if a.mode == "consume" and not a.queue:
        p.error("consume needs --queue")
    if a.count <= 0 and a.seconds <= 0:
        p.error("--seconds or --count must be positive")
    return a


def connect(a):
    # A bare host:port means guest/guest on vhost "/".
    u = urllib.parse.urlsplit(a.uri if "://" in a.uri else "amqp://guest:guest@" + a.uri)
    vhost = urllib.parse.unquote(u.path[1:]) if len(u.path) > 1 else "/"
    conn = amqp.Connection(
        host=f"{u.hostname or '127.0.0.1'}:{u.port or 5672}",
        userid=urllib.parse.unquote(u.username or "guest"),
        password=urllib.parse.unquote(u.password or "guest"),
        virtual_host=vhost,
    )
    conn.connect()
    ch = conn.channel()
    if a.queue:
        ch.queue_declare(a.queue, auto_delete=False,
                         arguments={"x-expires": QUEUE_EXPIRES_MS})
    return conn, ch


def publish(conn, ch, a):
    state = {"confirmed": 0}

    def on_confirm(tag, multiple):
        # A nack settles the message too; the rate counts settled publishes.
        state["confirmed"] = tag if multiple else state["confirmed"] + 1

    if a.confirm > 0:
        ch.confirm_select()
        ch.events["basic_ack"].add(on_confirm)
        ch.events["basic_nack"].add(on_confirm)
    msg = amqp.Message(b"x" * a.size)
    msgs = 0
    start, cpu0 = time.monotonic(), cpu_seconds()
    while True:
        if a.count > 0:
            if msgs >= a.count:
                break
        elif msgs % 256 == 0 and time.monotonic() - start >= a.seconds:
            break
        ch.basic_publish(msg, exchange="", routing_key=a.queue)
        msgs += 1
        while a.confirm > 0 and msgs - state["confirmed"] >= a.confirm:
            conn.drain_events(timeout=10)
    if a.confirm > 0:
        while state["confirmed"] < msgs:
            conn.drain_events(timeout=10)
    elif a.queue:
        ch.queue_declare(a.queue, passive=True)
    else:
        ch.basic_qos(0, 0, False)
    return msgs, state["confirmed"], time.monotonic() - start, cpu_seconds() - cpu0


def consume(conn, ch, a):
    ch.basic_qos(0, a.prefetch, False)
    state = {"msgs": 0, "last": 0.0, "cpu": 0.0}

    def on_message(m):
        if a.ack:
            ch.basic_ack(m.delivery_tag)
        state["msgs"] += 1
        state["last"] = time.monotonic()
        state["cpu"] = cpu_seconds()

    start, cpu0 = time.monotonic(), cpu_seconds()
    state["last"], state["cpu"] = start, cpu0
    ch.basic_consume(a.queue, callback=on_message, no_ack=not a.ack)
    while (state["msgs"] < a.count if a.count > 0
           else time.monotonic() - start < a.seconds):
        try:
            conn.drain_events(timeout=1)
        except socket.timeout:
            break  # the queue ran dry
    return state["msgs"], 0, state["last"] - start, state["cpu"] - cpu0


def main(argv):
    a = parse_args(argv)
    try:
        conn, ch = connect(a)
        msgs, confirmed, seconds, cpu = (publish if a.mode == "publish" else consume)(conn, ch, a)
        try:
            conn.close()
        except Exception:  # a firehose may still be flooding; the numbers are taken
            pass
    except Exception as e:
        print(f"py_amqp_perf: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if msgs == 0 or seconds <= 0:
        print("py_amqp_perf: no messages", file=sys.stderr)
        return 1
    print(json.dumps({
        "client": "py-amqp", "mode": a.mode, "size": a.size, "msgs": msgs,
        "confirmed": confirmed, "seconds": round(seconds, 6),
        "msg_per_s": round(msgs / seconds, 1), "cpu_us_per_msg": round(cpu * 1e6 / msgs, 5),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
