#!/usr/bin/env bash
# THE main-job command (README): bash tools/main.sh [PERF OPTION]...
# Prepares the machine and the broker (tools/setup.sh), builds the perf tool optimised, and runs
# a short default scenario against the local broker: 1 producer, 1 consumer, 10 s, publisher
# confirms with a window of 1000, its JSON, CSV and SVG plot written to $WARREN_PERF_OUT
# (default /tmp/warren-perf/). Arguments replace that scenario, outputs included (see
# `bazel run //tools:perf -- --help`).
#
# The codec micro-benchmark is no longer run here: the main job is the end-to-end number a
# user of the client sees; `bazel run -c opt //bench:codec_bench` remains one command away.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash tools/setup.sh

bazel build -c opt //tools:perf
if [ "$#" -gt 0 ]; then
  exec bazel run -c opt //tools:perf -- "$@"
fi
out=${WARREN_PERF_OUT:-/tmp/warren-perf}
mkdir -p "$out"
echo "main: perf -x 1 -y 1 -z 10 -c 1000 (JSON, CSV and SVG plot in $out/)" >&2
exec bazel run -c opt //tools:perf -- -x 1 -y 1 -z 10 -c 1000 \
  --json "$out/perf.json" --csv "$out/perf.csv" --plot "$out/perf.svg"
