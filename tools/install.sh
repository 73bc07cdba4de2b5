#!/usr/bin/env bash
# Installs warren for CMake and pkg-config builds: bash tools/install.sh PREFIX
#
# Builds the library optimised (bazel build -c opt //tools/install:dist) and installs
#   PREFIX/include/warren/...            the headers, at their paths in the repository
#                                        (#include "engine/client/connection.h" with
#                                        -I PREFIX/include/warren), generated ones included;
#                                        the directory is replaced, so no stale header survives
#   PREFIX/lib/libwarren.so.VERSION      the whole library, shared (soname libwarren.so.M.m),
#   PREFIX/lib/libwarren.so.M.m, .so     with its symlinks
#   PREFIX/lib/libwarren.a               the same objects, static (position-independent)
#   PREFIX/lib/pkgconfig/warren.pc       pkg-config module "warren"
#   PREFIX/lib/cmake/warren/             find_package(warren CONFIG): warren::warren (shared),
#                                        warren::warren_static
# What is installed is derived from Bazel (tools/install/dist.bzl), never listed here. The
# system libraries named in warren.pc and the CMake package come from the @system targets the
# library depends on, through the table below; a dependency missing from it stops the install.
# Run as any user that can write PREFIX (root for /usr/local, where ldconfig is then run).
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

if [[ $# -ne 1 || $1 == -* ]]; then
  [[ ${1:-} == -h || ${1:-} == --help ]] && { usage; exit 0; }
  echo "usage: bash tools/install.sh PREFIX   (e.g. /usr/local or \$HOME/.local)" >&2
  exit 2
fi
mkdir -p "$1"
PREFIX=$(cd "$1" && pwd)

cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() {
  echo "install: ERROR: $*" >&2
  exit 1
}
log() { echo "install: $*"; }

# Every library target under codec/ and engine/ must be part of //:warren, or its code and
# headers would be missing from the install whenever nothing else depends on it.
LIB_DIRS="//codec/... + //engine/..."
stray=$(bazel query --noshow_progress \
  "kind(cc_library, $LIB_DIRS) except attr(testonly, 1, $LIB_DIRS) except deps(//:warren)" \
  2>/dev/null) || die "bazel query failed (run from a checkout of warren, Bazel installed)"
[[ -z $stray ]] || die "library targets not reachable from //:warren (add them to its deps in BUILD): $stray"

log "building: bazel build -c opt //tools/install:dist"
bazel build -c opt --noshow_progress //tools/install:dist >&2 || die "the build failed"
BIN=$(bazel info -c opt bazel-bin 2>/dev/null)
MANIFEST=$BIN/tools/install/dist/manifest.txt
[[ -s $MANIFEST ]] || die "no manifest at $MANIFEST"

field() { awk -F'\t' -v k="$1" '$1 == k { print $2 }' "$MANIFEST"; }
VERSION=$(field version)
SONAME=$(field soname)
ARCHIVE=$BIN/$(field archive)
SHARED=$BIN/$(field shared)
INCLUDE=$BIN/$(field include)

# How each system dependency is named for users:
#   Bazel target or link flag -> pkg-config module | CMake find_dependency | CMake targets.
# A header-only dependency has no module; the CMake package then checks for its header.
pc_requires=()
pc_libs=()
cmake_deps=()
cmake_links=()
cmake_headers=()
header_notes=()
while IFS=$'\t' read -r kind value; do
  case "$kind:$value" in
    external:@system//:tbb)
      pc_requires+=(tbb)
      cmake_deps+=("find_dependency(TBB)")
      cmake_links+=(TBB::tbb)
      ;;
    external:@system//:openssl)
      pc_requires+=(openssl)
      cmake_deps+=("find_dependency(OpenSSL)")
      cmake_links+=(OpenSSL::SSL OpenSSL::Crypto)
      ;;
    external:@system//:concurrentqueue)
      cmake_headers+=("concurrentqueue/concurrentqueue.h|moodycamel ConcurrentQueue (Debian: libconcurrentqueue-dev)")
      header_notes+=("moodycamel ConcurrentQueue (header-only, <concurrentqueue/concurrentqueue.h> in /usr/include from Debian's libconcurrentqueue-dev) has no pkg-config module.")
      ;;
    flag:-pthread)
      pc_libs+=(-pthread)
      cmake_deps+=("set(THREADS_PREFER_PTHREAD_FLAG ON)" "find_dependency(Threads)")
      cmake_links+=(Threads::Threads)
      ;;
    external:* | flag:*)
      die "tools/install.sh does not know how to name '$value' (from the library's $kind dependencies) in warren.pc and the CMake package: add it to the table in tools/install.sh"
      ;;
  esac
done <"$MANIFEST"
# Each dependency once, in first-seen order.
dedup() { awk '!seen[$0]++'; }
mapfile -t cmake_deps < <(printf '%s\n' "${cmake_deps[@]}" | dedup)
mapfile -t cmake_links < <(printf '%s\n' "${cmake_links[@]}" | dedup)
mapfile -t pc_requires < <(printf '%s\n' "${pc_requires[@]}" | dedup)

# Every header an installed header includes with quotes must be installed too.
missing=$(cd "$INCLUDE" && find . -name '*.h' -printf '%P\n' | while read -r h; do
  sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$h" |
    while read -r inc; do [[ -f $inc ]] || echo "$h includes \"$inc\""; done
done)
[[ -z $missing ]] || die "installed headers include headers that are not installed:
$missing"

LIBDIR=$PREFIX/lib
INCDIR=$PREFIX/include/warren
CMAKEDIR=$LIBDIR/cmake/warren

log "installing warren $VERSION into $PREFIX"
rm -rf "$INCDIR"
mkdir -p "$INCDIR" "$LIBDIR/pkgconfig" "$CMAKEDIR"
(cd "$INCLUDE" && find . -name '*.h' -printf '%P\n') | while read -r h; do
  install -D -m 644 "$INCLUDE/$h" "$INCDIR/$h"
done
install -m 644 "$ARCHIVE" "$LIBDIR/libwarren.a"
install -m 755 "$SHARED" "$LIBDIR/libwarren.so.$VERSION"
ln -sfn "libwarren.so.$VERSION" "$LIBDIR/$SONAME"
ln -sfn "$SONAME" "$LIBDIR/libwarren.so"

{
  echo "# warren $VERSION, written by tools/install.sh."
  for n in "${header_notes[@]}"; do echo "# $n"; done
  echo "prefix=$PREFIX"
  echo "libdir=\${prefix}/lib"
  echo "includedir=\${prefix}/include/warren"
  echo
  echo "Name: warren"
  echo "Description: multithreaded AMQP 0-9-1 client engine for RabbitMQ (C++20)"
  echo "Version: $VERSION"
  echo "Requires: ${pc_requires[*]}"
  echo "Cflags: -I\${includedir}"
  echo "Libs: -L\${libdir} -lwarren ${pc_libs[*]}"
} >"$LIBDIR/pkgconfig/warren.pc"

cmake_link_list=$(IFS=';' && echo "${cmake_links[*]}")
{
  cat <<EOF
# warren $VERSION, written by tools/install.sh: find_package(warren CONFIG) gives
#   warren::warren         the whole library, shared (lib/libwarren.so.$VERSION)
#   warren::warren_static  the same, static (lib/libwarren.a)
# Both need C++20 (a compile feature of the targets) and bring the system libraries below.
include(CMakeFindDependencyMacro)
EOF
  printf '%s\n' "${cmake_deps[@]}"
  cat <<EOF

# This file is PREFIX/lib/cmake/warren/warrenConfig.cmake: the prefix is three levels up, so the
# installed tree may be moved as a whole.
get_filename_component(_warren_prefix "\${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
set(_warren_includes "\${_warren_prefix}/include/warren")
EOF
  for entry in "${cmake_headers[@]}"; do
    header=${entry%%|*}
    what=${entry#*|}
    var="warren_$(echo "${header%%/*}" | tr -c 'A-Za-z0-9\n' _ | tr '[:lower:]' '[:upper:]')_INCLUDE_DIR"
    cat <<EOF
# Header-only: no package of its own, so its header is looked for.
find_path($var $header)
if(NOT $var)
  set(warren_FOUND FALSE)
  set(warren_NOT_FOUND_MESSAGE "warren's headers include <$header>: install $what")
  unset(_warren_prefix)
  unset(_warren_includes)
  return()
endif()
if(NOT $var STREQUAL "/usr/include")
  list(APPEND _warren_includes "\${$var}")
endif()
EOF
  done
  cat <<EOF

if(NOT TARGET warren::warren)
  add_library(warren::warren SHARED IMPORTED)
  set_target_properties(warren::warren PROPERTIES
    IMPORTED_LOCATION "\${_warren_prefix}/lib/libwarren.so.$VERSION"
    IMPORTED_SONAME "$SONAME"
    INTERFACE_INCLUDE_DIRECTORIES "\${_warren_includes}"
    INTERFACE_COMPILE_FEATURES cxx_std_20
    INTERFACE_LINK_LIBRARIES "$cmake_link_list")
endif()
if(NOT TARGET warren::warren_static)
  add_library(warren::warren_static STATIC IMPORTED)
  set_target_properties(warren::warren_static PROPERTIES
    IMPORTED_LOCATION "\${_warren_prefix}/lib/libwarren.a"
    IMPORTED_LINK_INTERFACE_LANGUAGES CXX
    INTERFACE_INCLUDE_DIRECTORIES "\${_warren_includes}"
    INTERFACE_COMPILE_FEATURES cxx_std_20
    INTERFACE_LINK_LIBRARIES "$cmake_link_list")
endif()
unset(_warren_prefix)
unset(_warren_includes)
EOF
} >"$CMAKEDIR/warrenConfig.cmake"

IFS=. read -r v_major v_minor _ <<<"$VERSION"
cat >"$CMAKEDIR/warrenConfigVersion.cmake" <<EOF
# warren $VERSION, written by tools/install.sh. Compatible with a requested version (or range)
# when this one is not older and has the same major version, and before 1.0 the same minor
# too (every 0.x release may change the ABI). 64-bit only, as built.
set(PACKAGE_VERSION "$VERSION")
set(PACKAGE_VERSION_COMPATIBLE FALSE)
set(PACKAGE_VERSION_EXACT FALSE)
if(PACKAGE_FIND_VERSION_RANGE)
  # find_package(warren 0.1...0.2): within the range, bounds as asked.
  if(PACKAGE_VERSION VERSION_GREATER_EQUAL PACKAGE_FIND_VERSION_MIN AND
     ((PACKAGE_FIND_VERSION_RANGE_MAX STREQUAL "INCLUDE" AND
       PACKAGE_VERSION VERSION_LESS_EQUAL PACKAGE_FIND_VERSION_MAX) OR
      (PACKAGE_FIND_VERSION_RANGE_MAX STREQUAL "EXCLUDE" AND
       PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION_MAX)))
    set(PACKAGE_VERSION_COMPATIBLE TRUE)
  endif()
elseif(NOT PACKAGE_FIND_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
elseif(PACKAGE_FIND_VERSION VERSION_LESS_EQUAL PACKAGE_VERSION AND
       PACKAGE_FIND_VERSION_MAJOR EQUAL $v_major AND
       ($v_major GREATER 0 OR PACKAGE_FIND_VERSION_MINOR EQUAL $v_minor))
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION VERSION_EQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
if(DEFINED CMAKE_SIZEOF_VOID_P AND NOT CMAKE_SIZEOF_VOID_P STREQUAL "8")
  set(PACKAGE_VERSION "$VERSION (64-bit)")
  set(PACKAGE_VERSION_UNSUITABLE TRUE)
endif()
EOF
chmod 644 "$LIBDIR/pkgconfig/warren.pc" "$CMAKEDIR"/*.cmake

# A library directory the dynamic loader searches (e.g. /usr/local/lib) needs its cache renewed.
if [[ $(id -u) == 0 ]] && ldconfig -v -N 2>/dev/null | grep -q "^$LIBDIR:"; then
  ldconfig
fi

n_headers=$(find "$INCDIR" -name '*.h' | wc -l)
log "installed:"
log "  $INCDIR/ ($n_headers headers)"
log "  $LIBDIR/libwarren.so.$VERSION (soname $SONAME), libwarren.so, libwarren.a"
log "  $LIBDIR/pkgconfig/warren.pc (Requires: ${pc_requires[*]})"
log "  $CMAKEDIR/warrenConfig.cmake, warrenConfigVersion.cmake (warren::warren, warren::warren_static)"
log "use: PKG_CONFIG_PATH=$LIBDIR/pkgconfig pkg-config --cflags --libs warren"
log "     cmake -DCMAKE_PREFIX_PATH=$PREFIX ...   with find_package(warren CONFIG REQUIRED)"
