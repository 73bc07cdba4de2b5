#!/usr/bin/env bash
# End-to-end comparison of warren's blocking API with rabbitmq-c and py-amqp against the local
# broker (tools/setup.sh): publish rate and client CPU per message, and the publisher-confirm
# round trip. Each round runs every client once per mode, in a rotated order, so that drift on
# this shared machine spreads over all three; the table shows medians over the rounds.
#
# Usage: bench/compare_blocking.sh [ROUNDS] [PUBLISH_N] [CONFIRM_N]   (defaults 3 100000 5000)
# Needs: bazel build -c opt //bench:blocking_publish //bench:rabbitmq_c_publish
# Raw results (one JSON line per run) are kept in $OUT (default /tmp/compare_blocking.jsonl).
set -euo pipefail

cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
PUBLISH_N=${2:-100000}
CONFIRM_N=${3:-5000}
OUT=${OUT:-/tmp/compare_blocking.jsonl}
BIN=bazel-out/k8-opt/bin/bench
PY=/usr/bin/python3

for b in "$BIN/blocking_publish" "$BIN/rabbitmq_c_publish"; do
  [[ -x $b ]] || { echo "missing $b: bazel build -c opt //bench:blocking_publish //bench:rabbitmq_c_publish" >&2; exit 1; }
done

declare -A CMD=(
  [warren]="$BIN/blocking_publish"
  [rabbitmq-c]="$BIN/rabbitmq_c_publish"
  [py-amqp]="$PY bench/peers/py_amqp_publish.py"
)
ORDER=(warren rabbitmq-c py-amqp)

: >"$OUT"
for ((round = 0; round < ROUNDS; round++)); do
  for ((i = 0; i < 3; i++)); do
    client=${ORDER[(i + round) % 3]}
    queue="warren-bench-$client-$$"
    echo "round $((round + 1))/$ROUNDS: $client" >&2
    # A failed run (e.g. while another test holds a broker alarm) is reported and left out.
    ${CMD[$client]} publish "$PUBLISH_N" "$queue" >>"$OUT" || echo "  $client publish FAILED" >&2
    ${CMD[$client]} confirm "$CONFIRM_N" "$queue" >>"$OUT" || echo "  $client confirm FAILED" >&2
  done
done

"$PY" - "$OUT" <<'PYEOF'
import json, statistics, sys

runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
clients = ["warren", "rabbitmq-c", "py-amqp"]

def med(client, mode, key):
    vals = [r[key] for r in runs if r["client"] == client and r["mode"] == mode]
    return statistics.median(vals) if vals else float("nan")

counts = {c: sum(r["client"] == c for r in runs) for c in clients}
print("medians over the successful runs (publish + confirm per client): " +
      ", ".join(f"{c} {n}" for c, n in counts.items()))
print()
print("| client     | publish msg/s | CPU us/msg (publish) | confirm median us | confirm p99 us | CPU us/msg (confirm) |")
print("|------------|--------------:|---------------------:|------------------:|---------------:|---------------------:|")
for c in clients:
    print(f"| {c:10} | {med(c, 'publish', 'msg_per_s'):13.0f} | {med(c, 'publish', 'cpu_us_per_msg'):20.3f} "
          f"| {med(c, 'confirm', 'median_us'):17.1f} | {med(c, 'confirm', 'p99_us'):14.1f} "
          f"| {med(c, 'confirm', 'cpu_us_per_msg'):20.2f} |")
print()
print("| ratio (warren vs peer)               | rabbitmq-c | py-amqp |")
print("|--------------------------------------|-----------:|--------:|")
def row(label, mode, key, higher_is_better):
    cells = []
    for peer in ("rabbitmq-c", "py-amqp"):
        a, b = med("warren", mode, key), med(peer, mode, key)
        cells.append(a / b if higher_is_better else b / a)
    print(f"| {label:36} | {cells[0]:10.2f} | {cells[1]:7.2f} |")
row("publish rate (warren / peer)", "publish", "msg_per_s", True)
row("publish CPU per msg (peer / warren)", "publish", "cpu_us_per_msg", False)
row("confirm median RTT (peer / warren)", "confirm", "median_us", False)
row("confirm p99 RTT (peer / warren)", "confirm", "p99_us", False)
row("confirm CPU per msg (peer / warren)", "confirm", "cpu_us_per_msg", False)
print()
print("ratios above 1 favour warren")
PYEOF
