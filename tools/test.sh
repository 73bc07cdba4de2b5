#!/usr/bin/env bash
# shellcheck disable=SC2317  # phase functions are called through run_phase
# THE test command (README and .ci/run), as root: bash tools/test.sh [--quick]
#
# Phases: setup (packages + broker), bazel build //..., bazel test //..., install (tests/install/
# run.sh: tools/install.sh into a temp prefix, then CMake and makefile consumers outside the
# workspace), fuzz build (clang 14 + libFuzzer, own output base), fuzz run (each fuzzer 20 s from
# a temp copy of its seed corpus),
# then the sanitizers: bazel test --config=asan //..., --config=ubsan //..., and --config=tsan on
# every test tagged "threaded". --quick skips the sanitizer phases (for local iteration only).
# Counts every gtest case from the test.xml files (Bazel writes one for non-gtest tests too), every
# target that failed to build as one failed case, every fuzzer run as one case, and each install
# check (headers, CMake consumer, makefile consumer) as one case. The LAST line
# is "N passed, M failed"; the exit status is non-zero on any failure or if nothing ran.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD

SANITIZERS=1
FUZZ_SECONDS=${WARREN_FUZZ_SECONDS:-20}
for arg in "$@"; do
  case "$arg" in
    --sanitizers) SANITIZERS=1 ;;  # the default; kept so older invocations still work
    --quick) SANITIZERS=0 ;;
    -h | --help)
      sed -n '3,14p' "$0"
      exit 0
      ;;
    *)
      echo "test.sh: unknown option $arg (--quick, --sanitizers)" >&2
      exit 2
      ;;
  esac
done

FUZZ_BASE=${WARREN_FUZZ_OUTPUT_BASE:-$HOME/.cache/warren-fuzz-base}
WORK=$(mktemp -d /tmp/warren-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
PY=/usr/bin/python3
KEEP=/tmp/warren-fuzz-artifacts

passed=0
failed=0
failed_phases=()
phase_times=()

banner() { printf '\n==== %s ====\n' "$*"; }

# run_phase NAME COMMAND...: runs and times one phase; returns its status.
run_phase() {
  local name=$1 start=$SECONDS rc
  shift
  banner "phase $name"
  "$@"
  rc=$?
  phase_times+=("$(printf '%-14s %4ds  %s' "$name" $((SECONDS - start)) "$([[ $rc == 0 ]] && echo ok || echo "FAILED (exit $rc)")")")
  if ((rc != 0)); then
    failed_phases+=("$name")
    echo "test.sh: phase '$name' FAILED (exit $rc)" >&2
  fi
  return "$rc"
}

add_counts() {  # "P F" from count_xml, plus a label
  local p f
  read -r p f <<<"$1"
  passed=$((passed + p))
  failed=$((failed + f))
  echo "$2: $p passed, $f failed"
}

# bazel test with the XML copied out at once (a later bazel command re-points bazel-testlogs).
# Writes "<passed> <failed>" to $WORK/<label>.count.
bazel_test_counted() {
  local label=$1 rc
  shift
  local log=$WORK/$label.log xml=$WORK/$label.xml
  rm -rf "$xml" && mkdir -p "$xml"
  # short summary: one line per test target, which is the list of targets this run counts.
  bazel test --keep_going --test_summary=short "$@" //... 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  local logs
  logs=$(readlink -f bazel-testlogs)
  if [[ -d $logs ]]; then
    (cd "$logs" && find . -name test.xml -print0 | xargs -0 -r cp --parents -t "$xml")
  fi
  "$PY" - "$xml" "$log" "$rc" >"$WORK/$label.count" <<'PYEOF'
import os, re, sys, xml.etree.ElementTree as ET
xml_dir, log_file, rc = sys.argv[1], sys.argv[2], int(sys.argv[3])
log = open(log_file, errors="replace").read()
statuses = ("PASSED", "FLAKY", "FAILED TO BUILD", "FAILED", "TIMEOUT", "NO STATUS", "INCOMPLETE",
            "REMOTE FAILURE", "SKIPPED")
summary = re.findall(r"^(//\S+)\s+(?:\(cached\) )?(" + "|".join(statuses) + r")\b", log, re.M)
targets = list(dict.fromkeys(t for t, _ in summary))
# Targets with no result this run: their test.xml (if any) is stale.
unbuilt = {t for t, status in summary if status in ("FAILED TO BUILD", "NO STATUS")}
passed = failed = uncounted = 0
for t in targets:
    if t in unbuilt:
        failed += 1
        print(f"  {t}: no result (failed to build or not run), counted as 1 failed", file=sys.stderr)
        continue
    pkg, name = t[2:].split(":")
    base = os.path.join(xml_dir, pkg, name)
    files = [os.path.join(d, f) for d, _, fs in os.walk(base) for f in fs if f == "test.xml"]
    # Only this target's own directory and its shard_/run_ subdirectories.
    files = [f for f in files if os.path.dirname(f) == base or
             re.fullmatch(r"(shard|run)_\d+_of_\d+", os.path.basename(os.path.dirname(f)))]
    if not files:
        failed += 1
        print(f"  {t}: no test.xml, counted as 1 failed", file=sys.stderr)
        continue
    for f in files:
        try:
            root = ET.parse(f).getroot()
        except ET.ParseError as e:
            failed += 1
            print(f"  {t}: unreadable {f}: {e}, counted as 1 failed", file=sys.stderr)
            continue
        cases = list(root.iter("testcase"))
        if not cases:
            failed += 1
            print(f"  {t}: test.xml lists no test case, counted as 1 failed", file=sys.stderr)
        for c in cases:
            if c.find("failure") is not None or c.find("error") is not None:
                failed += 1
                print(f"  FAILED {t} {c.get('classname', '')}.{c.get('name')}", file=sys.stderr)
            elif (c.get("status") == "notrun" or c.get("result") in ("skipped", "suppressed")
                  or c.find("skipped") is not None):
                uncounted += 1
                print(f"  not run (skipped/disabled, not counted): {t} {c.get('name')}",
                      file=sys.stderr)
            else:
                passed += 1
# A non-test target that did not build fails no test case; count it once.
if "Build did NOT complete successfully" in log and not unbuilt:
    failed += 1
    print("  a non-test target failed to build, counted as 1 failed", file=sys.stderr)
# bazel failed but no case did: still a failure.
if rc != 0 and failed == 0:
    failed = 1
    print(f"  bazel test exited {rc} with no failed case: counted as 1 failed", file=sys.stderr)
print(passed, failed)
PYEOF
  return "$rc"
}

# The second server exits on its own once idle, rather than holding memory between runs.
fuzz_bazel() { bazel --output_base="$FUZZ_BASE" --max_idle_secs=600 "$@"; }

fuzz_build() {
  # Not //...: in this output base the workspace's bazel-* symlinks (made by the main output base)
  # are ordinary directories, and //... would descend into them.
  local dirs=() d
  for d in */; do
    [[ $d != bazel-* && -n $(find "$d" -name BUILD -print -quit) ]] && dirs+=("//${d%/}/...")
  done
  local universe
  universe=$(printf ' + %s' "${dirs[@]}")
  fuzz_bazel query "kind(cc_binary, attr(generator_function, warren_fuzz_target, ${universe# + }))" \
    2>/dev/null >"$WORK/fuzzers"
  if [[ ! -s $WORK/fuzzers ]]; then
    echo "no fuzz targets found" >&2
    return 1
  fi
  echo "fuzzers: $(tr '\n' ' ' <"$WORK/fuzzers")"
  # shellcheck disable=SC2046
  fuzz_bazel build --config=fuzz --keep_going $(cat "$WORK/fuzzers")
}

fuzz_run_one() {  # label
  local label=$1 bin dir name log
  name=${label##*:}
  bin=$FUZZ_BIN/${label#//}
  bin=${bin/://}
  dir=$WORK/fuzz/$name
  mkdir -p "$dir/corpus" "$dir/artifacts"
  local i=0 f
  while read -r f; do
    f=${f#//}
    f=${f/://}
    cp "$ROOT/$f" "$dir/corpus/$((i++))_$(basename "$f")"
  done < <(fuzz_bazel query "labels(srcs, ${label}_corpus)" 2>/dev/null)
  log=$dir/fuzz.log
  if [[ ! -x $bin ]]; then
    echo "  $name: FAILED (not built)"
    return 1
  fi
  # Run inside the temp dir: libFuzzer writes new inputs and crash files only there.
  (cd "$dir" && "$bin" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$dir/artifacts/" -print_final_stats=1 corpus) >"$log" 2>&1
  local rc=$?
  local start_cov end_cov runs
  start_cov=$(grep -m1 -o 'INITED cov: [0-9]*' "$log" | grep -o '[0-9]*$')
  end_cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$')
  if ((rc == 0)); then
    echo "  $name: passed (seeds $i, coverage ${start_cov:-?} -> ${end_cov:-?}, ${runs:-?} runs)"
  else
    echo "  $name: FAILED (exit $rc); last lines of its log:"
    tail -n 40 "$log" | sed 's/^/    /'
    # Outside the repo and the temp dir, so the reproducer survives this script.
    mkdir -p "$KEEP/$name" && cp -r "$dir/artifacts/." "$KEEP/$name/" &&
      echo "    reproducer(s) kept in $KEEP/$name/"
  fi
  return "$rc"
}

fuzz_run() {
  local label ok=0 bad=0
  FUZZ_BIN=$(fuzz_bazel info --config=fuzz bazel-bin 2>/dev/null)
  while read -r label; do
    if fuzz_run_one "$label"; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
  done <"$WORK/fuzzers"
  echo "$ok $bad" >"$WORK/fuzz.count"
  ((bad == 0))
}

total_start=$SECONDS

run_phase setup bash tools/setup.sh || {
  echo "test.sh: setup failed; nothing else can run" >&2
  echo "0 passed, 1 failed"
  exit 1
}

# RabbitMQ nodes that fault tests of earlier runs started and could not clean up (their process
# died): tools/rabbit_node.sh kills and deletes those whose owner process has exited.
bash tools/rabbit_node.sh sweep

if ! run_phase build bazel build --keep_going //...; then
  failed=$((failed + 1))
  echo "build: bazel build //... failed, counted as 1 failed"
fi

run_phase test bazel_test_counted gcc
add_counts "$(cat "$WORK/gcc.count" 2>/dev/null || echo "0 1")" "bazel test //... (gcc)"

# Installed as a user installs it, and used from a CMake and a makefile project outside the
# workspace against the broker (tests/install/run.sh): one case per check.
run_phase install bash tests/install/run.sh "$WORK/install"
add_counts "$(cat "$WORK/install/count" 2>/dev/null || echo "0 1")" \
  "install (tools/install.sh; headers, CMake and pkg-config consumers)"

if run_phase fuzz-build fuzz_build; then
  run_phase fuzz-run fuzz_run
  add_counts "$(cat "$WORK/fuzz.count")" "fuzzers (${FUZZ_SECONDS}s each, libFuzzer)"
else
  n=$(grep -c . "$WORK/fuzzers" 2>/dev/null)
  n=${n:-0}
  ((n > 0)) || n=1
  add_counts "0 $n" "fuzzers (not built)"
fi

if ((SANITIZERS)); then
  for cfg in asan ubsan; do
    run_phase "$cfg" bazel_test_counted "$cfg" --config="$cfg"
    add_counts "$(cat "$WORK/$cfg.count" 2>/dev/null || echo "0 1")" "bazel test --config=$cfg //..."
  done
  # TSan only where threads meet: the tests tagged "threaded" (engine, dispatcher, stress).
  run_phase tsan bazel_test_counted tsan --config=tsan --test_tag_filters=threaded --build_tests_only
  add_counts "$(cat "$WORK/tsan.count" 2>/dev/null || echo "0 1")" \
    "bazel test --config=tsan (tests tagged threaded)"
fi

banner "summary"
printf '%s\n' "${phase_times[@]}"
printf '%-14s %4ds\n' total $((SECONDS - total_start))
if ((${#failed_phases[@]})); then echo "failed phases: ${failed_phases[*]}"; fi
rc=0
((failed == 0 && passed > 0)) || rc=1
((passed + failed > 0)) || echo "no test ran"
echo "$passed passed, $failed failed"
exit $rc
