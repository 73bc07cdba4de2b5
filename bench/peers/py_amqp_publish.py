#!/usr/bin/python3
"""End-to-end publish driver for py-amqp (Debian's python3-amqp 5.1), the same workload as
warren's bench/blocking_publish.cc; bench/driver.h describes it and the JSON report.

Usage: py_amqp_publish.py publish|confirm N QUEUE
"""
import json
import math
import resource
import sys
import time

import amqp

MESSAGE_SIZE = 16
QUEUE_EXPIRES_MS = 300000  # see bench/driver.h


def cpu_seconds():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def warmup_count(mode, n):
    return max(1000, n // 10) if mode == "publish" else max(100, n // 10)


def percentile(samples, p):
    """Nearest rank, as bench/driver.h computes it."""
    s = sorted(samples)
    rank = min(max(math.ceil(p * len(s)), 1), len(s))
    return s[rank - 1]


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("publish", "confirm") or int(sys.argv[2]) <= 0:
        sys.exit(f"usage: {sys.argv[0]} publish|confirm N QUEUE")
    mode, n, queue = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    conn = amqp.Connection(host="127.0.0.1:5672", userid="guest", password="guest",
                           confirm_publish=(mode == "confirm"))
    conn.connect()
    ch = conn.channel()
    ch.queue_declare(queue, auto_delete=True, arguments={"x-expires": QUEUE_EXPIRES_MS})
    ch.queue_purge(queue)
    msg = amqp.Message(b"x" * MESSAGE_SIZE)
    warmup = warmup_count(mode, n)
    status = 0

    for _ in range(warmup):
        ch.basic_publish(msg, exchange="", routing_key=queue)
    if mode == "publish":
        wall0, cpu0 = time.monotonic(), cpu_seconds()
        for _ in range(n):
            ch.basic_publish(msg, exchange="", routing_key=queue)
        ch.queue_declare(queue, passive=True)
        wall, cpu = time.monotonic() - wall0, cpu_seconds() - cpu0
        print(json.dumps({"client": "py-amqp", "mode": "publish", "n": n,
                          "seconds": round(wall, 6), "msg_per_s": round(n / wall, 1),
                          "cpu_us_per_msg": round(cpu * 1e6 / n, 4)}), flush=True)
        want, seen = warmup + n, 0
        for _ in range(200):
            seen = ch.queue_declare(queue, passive=True).message_count
            if seen == want:
                break
            time.sleep(0.05)
        if seen != want:
            print(f"py-amqp: queue holds {seen} messages, expected {want}", file=sys.stderr)
            status = 1
    else:
        rtt = []
        cpu0 = cpu_seconds()
        for _ in range(n):
            t0 = time.perf_counter()
            ch.basic_publish(msg, exchange="", routing_key=queue)  # waits for the ack
            rtt.append((time.perf_counter() - t0) * 1e6)
        cpu = cpu_seconds() - cpu0
        print(json.dumps({"client": "py-amqp", "mode": "confirm", "n": n,
                          "median_us": round(percentile(rtt, 0.5), 2),
                          "p99_us": round(percentile(rtt, 0.99), 2),
                          "cpu_us_per_msg": round(cpu * 1e6 / n, 4)}), flush=True)
    ch.queue_delete(queue)
    conn.close()
    sys.exit(status)


if __name__ == "__main__":
    main()
