#!/usr/bin/env bash
# The install test (a phase of tools/test.sh): bash tests/install/run.sh [WORKDIR]
#
# Installs warren into WORKDIR/prefix with tools/install.sh, then, outside the Bazel workspace,
# with nothing but the installed files and Debian's packages, checks three cases:
#   headers    every installed header compiles on its own with `pkg-config --cflags warren`
#              (-Wall -Wextra -Werror), so no header needs anything that is not installed;
#   cmake_app  tests/install/cmake_app (find_package(warren CONFIG)) builds tests/install/app.cc
#              against warren::warren and warren::warren_static, and both programs publish with
#              confirms to the broker of tools/setup.sh and get their messages back intact;
#   make_app   tests/install/make_app (a plain makefile using `pkg-config --cflags --libs
#              warren`) builds the same app.cc, which does the same.
# Prints one PASS/FAIL line per case, writes "<passed> <failed>" to WORKDIR/count (tools/test.sh
# adds it to its totals) and exits non-zero when a case failed. A failed install fails every
# case. WORKDIR defaults to a temporary directory, removed at the end.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
ROOT=$PWD
if [[ $# -ge 1 ]]; then
  W=$1
  mkdir -p "$W"
  W=$(cd "$W" && pwd)
else
  W=$(mktemp -d /tmp/warren-install-test.XXXXXX)
  trap 'rm -rf "$W"' EXIT
fi
case "$W/" in
  "$ROOT"/*)
    echo "install test: WORKDIR must be outside the workspace ($ROOT)" >&2
    exit 2
    ;;
esac
PREFIX=$W/prefix
RUN_LIMIT=120 # seconds per program run: the app bounds its own waits by 30 s deadlines
CASES=(headers cmake_app make_app)
passed=0
failed=0

result() { # case status detail
  if [[ $2 == 0 ]]; then
    passed=$((passed + 1))
    echo "install test: PASS $1${3:+ ($3)}"
  else
    failed=$((failed + 1))
    echo "install test: FAIL $1${3:+ ($3)}"
  fi
}

finish() {
  echo "$passed $failed" >"$W/count"
  echo "install test: $passed passed, $failed failed"
  ((failed == 0))
  exit $?
}

# Shows the tail of a log under a failed step.
show() { sed 's/^/    /' "$1" | tail -n 40; }

rm -rf "$PREFIX"
if ! bash tools/install.sh "$PREFIX" >"$W/install.log" 2>&1; then
  echo "install test: tools/install.sh $PREFIX failed:"
  show "$W/install.log"
  for c in "${CASES[@]}"; do result "$c" 1 "not installed"; done
  finish
fi
grep '^install:' "$W/install.log"

# Only the installed tree: neither the workspace nor the caller's environment may help.
export PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig
unset CMAKE_PREFIX_PATH CPATH CPLUS_INCLUDE_PATH LIBRARY_PATH LD_LIBRARY_PATH PKG_CONFIG_LIBDIR

# headers
status=0
: >"$W/headers.log"
cflags=$(pkg-config --cflags warren 2>>"$W/headers.log") || status=1
n=0
while read -r h; do
  n=$((n + 1))
  # shellcheck disable=SC2086  # cflags is a list of flags
  if ! g++ -std=c++20 -fsyntax-only -Wall -Wextra -Werror $cflags -x c++ - \
    <<<"#include \"$h\"" >>"$W/headers.log" 2>&1; then
    echo "$h does not compile on its own" >>"$W/headers.log"
    status=1
  fi
done < <(cd "$PREFIX/include/warren" && find . -name '*.h' -printf '%P\n' | sort)
((n > 0)) || { echo "no header installed" >>"$W/headers.log"; status=1; }
result headers "$status" "$n headers, each compiled alone with: $cflags"
((status == 0)) || show "$W/headers.log"

# A project directory outside the workspace: the project's own files and app.cc.
copy_project() { # name
  rm -rf "${W:?}/$1"
  cp -r "$ROOT/tests/install/$1" "$W/$1" && cp "$ROOT/tests/install/app.cc" "$W/$1/app.cc"
}

run_app() { # binary log
  timeout "$RUN_LIMIT" "$1" >>"$2" 2>&1
  local rc=$?
  ((rc == 124)) && echo "$1: still running after ${RUN_LIMIT}s, stopped" >>"$2"
  return "$rc"
}

# cmake_app
status=0
log=$W/cmake_app.log
: >"$log"
if copy_project cmake_app &&
  cmake -S "$W/cmake_app" -B "$W/cmake_app/build" -DCMAKE_PREFIX_PATH="$PREFIX" \
    -DCMAKE_BUILD_TYPE=Release >>"$log" 2>&1 &&
  cmake --build "$W/cmake_app/build" -j 2 >>"$log" 2>&1; then
  for app in app_shared app_static; do
    echo "== $app" >>"$log"
    run_app "$W/cmake_app/build/$app" "$log" || status=1
  done
else
  status=1
fi
result cmake_app "$status" "find_package(warren CONFIG): warren::warren and warren::warren_static, built and run"
((status == 0)) || show "$log"

# make_app
status=0
log=$W/make_app.log
: >"$log"
if copy_project make_app && make -C "$W/make_app" >>"$log" 2>&1; then
  run_app "$W/make_app/app" "$log" || status=1
else
  status=1
fi
result make_app "$status" "make with pkg-config --cflags --libs warren, built and run"
((status == 0)) || show "$log"

finish
