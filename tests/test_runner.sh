#!/usr/bin/env bash
# Every test runs under this wrapper (.bazelrc: --run_under=//tests:test_runner), for two reasons:
#  - tests/tsan.supp is in its runfiles, where --config=tsan's TSAN_OPTIONS looks for it;
#  - an intermittent hang must leave evidence. If the test is still running WATCHDOG_MARGIN
#    seconds (default: a quarter of TEST_TIMEOUT, at most 60) before Bazel's TEST_TIMEOUT, every
#    thread of the test and of each process it started is printed with gdb (to stderr, so into
#    test.log), then the test is killed with SIGABRT: it fails as a hang with its stacks, rather
#    than as an anonymous TIMEOUT.
set -u

"$@" &
test_pid=$!

descendants() {
  local p c
  for p in "$@"; do
    echo "$p"
    for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do descendants "$c"; done
  done
}

dump_and_kill() {
  local limit=$1 p
  echo "test_runner: test still running after ${limit} s (TEST_TIMEOUT ${TEST_TIMEOUT}); stacks follow" >&2
  # Children first: the hang is usually where the innermost process waits.
  for p in $(descendants "$test_pid" | tac); do
    [[ -d /proc/$p ]] || continue
    echo "===== pid $p: $(tr '\0' ' ' </proc/"$p"/cmdline 2>/dev/null | cut -c1-300)" >&2
    if command -v gdb >/dev/null; then
      timeout 60 gdb -q -batch -nx -p "$p" -ex 'info threads' -ex 'thread apply all bt 40' \
        </dev/null >&2 2>&1
    else
      echo "test_runner: gdb is not installed (tools/setup.sh installs it); no stacks" >&2
    fi
  done
  for p in $(descendants "$test_pid"); do kill -ABRT "$p" 2>/dev/null; done
}

if [[ -n ${TEST_TIMEOUT:-} ]]; then
  margin=${WATCHDOG_MARGIN:-$((TEST_TIMEOUT / 4 < 60 ? TEST_TIMEOUT / 4 : 60))}
  limit=$((TEST_TIMEOUT - margin))
  ((limit < 5)) && limit=5
  (
    for ((i = 0; i < limit; i++)); do
      kill -0 "$test_pid" 2>/dev/null || exit 0
      sleep 1
    done
    kill -0 "$test_pid" 2>/dev/null && dump_and_kill "$limit"
  ) &
  watcher=$!
fi

wait "$test_pid"
rc=$?
[[ -n ${watcher:-} ]] && kill "$watcher" 2>/dev/null
exit "$rc"
