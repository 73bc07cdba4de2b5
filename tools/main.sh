#!/usr/bin/env bash
# THE main-job command (README): sudo bash tools/main.sh
# Prepares the machine and the broker (tools/setup.sh), then runs the codec micro-benchmark.
# (To be repointed at the end-to-end perf tool once it exists.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash tools/setup.sh

TARGET=//bench:codec_bench
if bazel query "$TARGET" >/dev/null 2>&1; then
  exec bazel run -c opt "$TARGET" -- "$@"
fi
echo "main: $TARGET does not exist yet; nothing to run after setup." >&2
echo "main: the broker is up (tools/broker.sh status); run the tests with: sudo bash tools/test.sh" >&2
