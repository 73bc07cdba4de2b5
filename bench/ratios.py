#!/usr/bin/python3
"""Runs //bench:codec_bench and prints warren vs rabbitmq-c per row: median ns and the ratio.

Usage: bench/ratios.py [path/to/codec_bench] [extra benchmark flags...]
Default binary: bazel-out/k8-opt/bin/bench/codec_bench (build it with
`bazel build -c opt //bench:codec_bench`). Rows are paired by name: warren_<row>[/arg] with
rabbitmq_c_<row>[/arg], or with the rabbitmq-c row PARTNERS names; rows without a partner are
printed without a ratio. The ratio is rabbitmq-c's median / warren's: above 1 means warren is
faster.
"""
import json
import os
import subprocess
import sys

DEFAULT_BINARY = "bazel-out/k8-opt/bin/bench/codec_bench"
REPETITIONS = 5
# warren rows whose rabbitmq-c counterpart has another name: the template publish does the job
# of encode_publish (the same octets for a repeated message); rabbitmq-c's API has no cache,
# so its cost for that job is its full encode; decoded_table (views, recycled storage) does the
# job of amqp_decode_table into a recycled pool (bench/RESULTS.md says what each row does).
PARTNERS = {"publish_template": "encode_publish", "decoded_table": "decode_table"}


def run(binary, extra):
    cmd = [
        binary,
        "--benchmark_format=json",
        f"--benchmark_repetitions={REPETITIONS}",
        "--benchmark_report_aggregates_only=true",
    ] + extra
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout
    return json.loads(out)


def medians(report):
    """{run_name: median cpu time in ns} from the aggregate rows."""
    result = {}
    for b in report["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        if b.get("error_occurred"):
            raise SystemExit(f"{b['run_name']}: {b.get('error_message')}")
        scale = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}[b["time_unit"]]
        result[b["run_name"]] = b["cpu_time"] * scale
    return result


def main():
    args = sys.argv[1:]
    binary = DEFAULT_BINARY
    if args and not args[0].startswith("-"):
        binary = args.pop(0)
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"{binary} not found: bazel build -c opt //bench:codec_bench")
    report = run(binary, args)
    m = medians(report)

    rows = []
    paired = set()
    for name, ns in m.items():
        if not name.startswith("warren_"):
            continue
        row = name[len("warren_"):]
        base, _, arg = row.partition("/")
        partner = "rabbitmq_c_" + PARTNERS.get(base, base) + ("/" + arg if arg else "")
        other = m.get(partner)
        if other is not None:
            paired.add(partner)
        rows.append((row, ns, other))
    extra = [(n[len("rabbitmq_c_"):], v) for n, v in m.items()
             if n.startswith("rabbitmq_c_") and n not in paired]

    ctx = report["context"]
    print(f"# {ctx.get('date', '')}  {ctx.get('num_cpus', '?')} CPUs @ {ctx.get('mhz_per_cpu', '?')} MHz"
          f"  load {ctx.get('load_avg', '?')}  build {ctx.get('library_build_type', '?')}")
    print(f"# median CPU time of {REPETITIONS} repetitions; ratio = rabbitmq-c / warren")
    print(f"| {'row':40} | {'warren ns':>10} | {'rabbitmq-c ns':>13} | {'ratio':>6} |")
    print(f"|{'-' * 42}|{'-' * 11}:|{'-' * 14}:|{'-' * 7}:|")
    for row, ns, other in rows:
        o = f"{other:13.1f}" if other is not None else f"{'-':>13}"
        r = f"{other / ns:6.2f}" if other is not None else f"{'-':>6}"
        print(f"| {row:40} | {ns:10.1f} | {o} | {r} |")
    for row, other in extra:
        print(f"| {row:40} | {'-':>10} | {other:13.1f} | {'-':>6} |")


if __name__ == "__main__":
    main()
