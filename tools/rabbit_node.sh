#!/usr/bin/env bash
# RabbitMQ nodes of a test's (or a benchmark's) own, beside the shared broker of tools/setup.sh.
# The one implementation of owning nodes: the C++ test library (tests/support/rabbit_node.h) and
# the benchmark drivers call this script; nothing else starts, kills or deletes such nodes.
#
#   rabbit_node.sh start [OPTIONS]        start one node, wait until it serves AMQP; prints its name
#   rabbit_node.sh cluster N [OPTIONS]    start N nodes with one cookie and join them to the first;
#                                         prints the names, the first first
#   rabbit_node.sh stop NAME              graceful stop (rabbitmqctl stop); data kept for restart
#   rabbit_node.sh kill NAME              kill -9 of the pid in its pid file; data kept for restart
#   rabbit_node.sh restart NAME [--no-wait] [--timeout S]
#                                         start a stopped or killed node again: same name, ports,
#                                         data and cookie
#   rabbit_node.sh wait NAME [--timeout S]  until the node answers the AMQP protocol header
#   rabbit_node.sh join NAME FIRST        stop_app, join_cluster FIRST, start_app
#   rabbit_node.sh alarm NAME on|off      raise / clear a memory alarm (node-wide)
#   rabbit_node.sh sync NAME              writes the node's metadata (Mnesia: queues, exchanges,
#                                         bindings) to disk now. RabbitMQ 3.10 logs a declaration
#                                         without waiting for the disk: a kill -9 within about a
#                                         second of a queue.declare lost the durable queue itself in
#                                         3 of 32 runs here, although a persistent message published
#                                         to it had been confirmed. Call it before a kill when the
#                                         topology must survive.
#   rabbit_node.sh port NAME              its AMQP port
#   rabbit_node.sh info NAME              key=value lines: name, address, amqp_port, dist_port, pid,
#                                         running, nofile (the running node's soft limit), dir, log,
#                                         owner, netns
#   rabbit_node.sh partition NAME         (a --netns node) nftables DROP of all its traffic with
#                                         other addresses: nodes and clients see a black hole
#   rabbit_node.sh heal NAME              removes that rule
#   rabbit_node.sh ctl NAME ARGS...       rabbitmqctl -n NAME ARGS (with the node's cookie)
#   rabbit_node.sh tool NAME PROGRAM ARGS...  rabbitmq-diagnostics, rabbitmq-queues, ... -n NAME
#   rabbit_node.sh list                   every recorded node: name, owner, state, port
#   rabbit_node.sh cleanup NAME...        kill -9 and delete its directory and port claims
#   rabbit_node.sh cleanup --owner PID    the same for every node PID started
#   rabbit_node.sh sweep                  cleanup of every node whose owner process has died
#
# Options of start and cluster:
#   --owner PID    the process the node belongs to (default: the caller, $PPID). The sweeper
#                  deletes a node once its owner has exited; pass the long-lived process (the test
#                  binary, the benchmark driver), never a short-lived shell.
#   --nofile N     open-files limit of the node (default 65536; lowered to the hard limit, with a
#                  warning, when that is lower and cannot be raised)
#   --cookie C     Erlang cookie (default: random; cluster shares one)
#   --timeout S    boot deadline in seconds (default 120)
#   --no-wait      return once the node is launched (then: wait NAME)
#   --net-ticktime S  Erlang's net_ticktime (default 60): how soon a silent peer node is declared
#                  down (within about S to 1.25 S); use ~5-10 with partition
#   --config LINE  a line added to the node's rabbitmq.conf, e.g.
#                  'cluster_partition_handling = pause_minority' (repeatable)
#   --netns        in a network namespace of its own (one for a whole cluster), reached from here
#                  through a veth pair: node i of the namespace has address 10.251.K.i (K claimed
#                  per namespace; the host end is 10.251.K.254, the namespace's end .253) and name
#                  warren-<owner>-<n>@h<i>
#                  (an inetrc file maps h<i>); it has its own epmd there. Needs root and, for
#                  partition/heal, nftables. Removing the last node of a namespace deletes it.
#
# Where things are: every node has a directory $WARREN_NODE_ROOT/nodes/<short name> (default root
# /tmp/warren-nodes) with its config, enabled-plugins file, env file, mnesia/, log/, home/ (its
# HOME, holding .erlang.cookie, mode 400), beam.pid and beam.id (pid and start time). Ports are claimed in
# $WARREN_NODE_ROOT/ports/<port> (an atomic mkdir), chosen at random in 20000-32767 among those no
# socket uses: below the kernel's ephemeral range (32768-60999), so no outgoing connection takes a
# port while its node is down between kill and restart. Names are warren-<owner pid>-<n>@localhost.
# Distribution stays on loopback; epmd (127.0.0.1:4369) is shared and never stopped. Namespaces
# are recorded in $WARREN_NODE_ROOT/netns/<name> (owner, inetrc, members/) and swept likewise:
# their processes (the node VMs, their epmd) are killed by namespace, never by name. The shared
# broker (rabbit@localhost, 5672/5671/15672/25672) is never touched: this script only signals the
# pid recorded in a node's own pid file, after checking that the process with that pid is the one
# it launched (same start time), never a process found by name.
set -uo pipefail

RMQ_BIN=/usr/lib/rabbitmq/bin
ROOT=${WARREN_NODE_ROOT:-/tmp/warren-nodes}
PORT_MIN=20000
PORT_MAX=32767
# The shared broker's distribution port (5672 + 20000) and its management port, never claimed.
RESERVED_PORTS=" 25672 15672 "
export PATH=/usr/lib/rabbitmq/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
export LC_ALL=C.UTF-8 LANG=C.UTF-8
# Nothing of the caller's RabbitMQ environment (or the shared broker's) may leak into a node.
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(RABBITMQ_|ERL_)')

me=rabbit_node.sh
# A signal still runs the EXIT trap (which removes the nodes a failed start created).
trap 'exit 143' TERM
trap 'exit 130' INT
say() { echo "$me: $*" >&2; }
die() {
  say "ERROR: $*"
  exit 1
}

mkdir -p "$ROOT/nodes" "$ROOT/ports" "$ROOT/netns" "$ROOT/subnets" 2>/dev/null ||
  die "cannot create $ROOT"
# Namespaces get 10.$SUBNET_A.K.0/24 for a K in 0-255 that no interface or route here uses.
SUBNET_A=251

# --- processes ------------------------------------------------------------------------------

# "<state> <starttime>" of a pid from /proc/PID/stat, or nothing when there is no such process.
proc_stat() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }
  local -a f
  read -ra f <<<"$s"
  echo "${f[0]} ${f[19]}"
}

# True if PID runs (a zombie counts as exited); with STARTTIME, only if it is that same process.
pid_alive() {
  local st
  st=$(proc_stat "$1") || return 1
  [[ ${st%% *} != Z ]] || return 1
  [[ -z ${2:-} || ${st#* } == "$2" ]]
}

# --- a node's record -----------------------------------------------------------------------

short_of() {  # NAME (short or name@host) -> short
  local s=${1%%@*}
  [[ $s =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad node name '$1'"
  echo "$s"
}

# Loads a node's record into NODE_* variables; dies if there is none.
load() {
  local short
  short=$(short_of "$1")
  DIR=$ROOT/nodes/$short
  [[ -f $DIR/env ]] || die "no node '$1' (no $DIR/env): not started by $me, or cleaned up"
  read_env
}

read_env() {  # the record in $DIR/env
  NODE_NETNS='' NODE_INDEX='' NODE_ADDR=127.0.0.1 NODE_ERL_ARGS=''
  # shellcheck source=/dev/null
  . "$DIR/env"
}

beam_pid() {  # pid of the running node in $DIR, or nothing
  local pid start
  [[ -f $DIR/beam.id ]] || return 1
  read -r pid start <"$DIR/beam.id" || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  # The start time recorded with the pid guards against a pid reused by another process.
  pid_alive "$pid" "$start" || return 1
  echo "$pid"
}

# --- ports ----------------------------------------------------------------------------------

port_busy() { [[ -n $(ss -Htan "sport = :$1" 2>/dev/null) ]]; }

claim_port() {  # SHORT -> prints a port now claimed for SHORT
  local i p
  for ((i = 0; i < 200; i++)); do
    p=$((PORT_MIN + (RANDOM * 32768 + RANDOM) % (PORT_MAX - PORT_MIN + 1)))
    [[ $RESERVED_PORTS == *" $p "* ]] && continue
    port_busy "$p" && continue
    if mkdir "$ROOT/ports/$p" 2>/dev/null; then
      echo "$1" >"$ROOT/ports/$p/node"
      echo "$p"
      return 0
    fi
  done
  die "no free port in $PORT_MIN-$PORT_MAX after 200 tries"
}

release_ports() {  # SHORT: every claim naming it
  local c
  for c in "$ROOT"/ports/*/node; do
    [[ -f $c && $(cat "$c" 2>/dev/null) == "$1" ]] && rm -rf "${c%/node}"
  done
  return 0
}

# --- environment of the node and of its CLI tools ---------------------------------------------

cli_env() {
  export HOME=$DIR/home
  export RABBITMQ_CONF_ENV_FILE=$DIR/rabbitmq-env.conf
  if [[ -n $NODE_NETNS ]]; then
    # Its own epmd, on every address of the namespace; h<i> names resolve through inetrc.
    export ERL_INETRC=$ROOT/netns/$NODE_NETNS/inetrc
  else
    export ERL_EPMD_ADDRESS=127.0.0.1
  fi
  export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  # Each CLI call takes a distribution port of its own in this range; the default (11 ports) runs
  # out when several test processes call rabbitmqctl at once.
  export RABBITMQ_CTL_DIST_PORT_MIN=35672 RABBITMQ_CTL_DIST_PORT_MAX=35872
}

server_env() {
  cli_env
  export WARREN_NODE_DIR=$DIR
  export RABBITMQ_NODENAME=$NODE_NAME
  export RABBITMQ_NODE_IP_ADDRESS=$NODE_ADDR RABBITMQ_NODE_PORT=$NODE_AMQP_PORT
  export RABBITMQ_DIST_PORT=$NODE_DIST_PORT
  export RABBITMQ_CONFIG_FILE=$DIR/rabbitmq.conf
  export RABBITMQ_ADVANCED_CONFIG_FILE=$DIR/advanced.config
  export RABBITMQ_ENABLED_PLUGINS_FILE=$DIR/enabled_plugins
  export RABBITMQ_MNESIA_BASE=$DIR/mnesia RABBITMQ_LOG_BASE=$DIR/log
  export RABBITMQ_PID_FILE=$DIR/beam.pid
  export ERL_CRASH_DUMP=$DIR/log/erl_crash.dump
  # The VM runs in the foreground of a background subshell (not -detached), so the pid of the
  # subshell is the pid of beam.smp from the first instant: a node is never unrecorded.
  # ALLOW_INPUT makes rabbitmq-server exec erl directly; -noinput keeps the shell off stdin.
  export RABBITMQ_ALLOW_INPUT=true
  # Distribution listens on the node's address only and, in a namespace, connects from it (so a
  # rule on that address cuts the node's own connections too).
  local a=${NODE_ADDR//./,}
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {$a} -noinput"
  [[ -n $NODE_NETNS ]] &&
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS+=" -kernel inet_dist_connect_options [{ip,{$a}}]"
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS+=${NODE_ERL_ARGS:+ $NODE_ERL_ARGS}
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS
}

# Runs a command in the node's namespace (if it has one), replacing this (sub)shell: the pid
# stays the command's (ip netns exec execs it).
exec_in_ns() {
  if [[ -n $NODE_NETNS ]]; then
    exec ip netns exec "$NODE_NETNS" "$@"
  else
    exec "$@"
  fi
}

# --- boot -----------------------------------------------------------------------------------

# Raises the soft open-files limit of this (sub)shell to N, or as far as the hard limit allows.
raise_nofile() {
  local want=$1 hard
  ulimit -n "$want" 2>/dev/null && return 0
  hard=$(ulimit -Hn)
  if [[ $hard != unlimited ]] && ((hard < want)); then
    say "warning: open-files hard limit is $hard (< $want) and cannot be raised here; using $hard"
    ulimit -Sn "$hard"
  else
    ulimit -Sn "$want"
  fi
}

launch() {  # the node in $DIR, as recorded; returns at once
  [[ -z $(beam_pid) ]] || die "$NODE_NAME is already running (pid $(beam_pid))"
  rm -f "$DIR/beam.pid" "$DIR/beam.id"
  mkdir -p "$DIR/log"
  echo "=== launch $(date '+%F %T')" >>"$DIR/log/console.log"
  (
    # The node must hold none of the caller's descriptors (a test's sockets, popen's pipe).
    for fd in "/proc/$BASHPID/fd/"*; do
      fd=${fd##*/}
      ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null
    done
    cd "$DIR" || exit 1
    raise_nofile "$NODE_NOFILE"
    server_env
    exec_in_ns "$RMQ_BIN/rabbitmq-server" </dev/null >>"$DIR/log/console.log" 2>&1
  ) &
  local pid=$! st
  st=$(proc_stat "$pid") || st="? ?"
  echo "$pid ${st#* }" >"$DIR/beam.id"
  echo "$pid" >"$DIR/beam.pid"  # rabbit writes the same pid there once it boots
}

amqp_answers() {  # ADDR PORT: connection.start (a method frame, type 1) answers a protocol header
  # shellcheck disable=SC2016  # expanded by the inner bash
  timeout 5 bash -c '
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf "AMQP\x00\x00\x09\x01" >&3
    IFS= read -r -t 4 -N 1 -u 3 b || exit 1
    [[ $b == $'"'"'\x01'"'"' ]]' _ "$1" "$2" 2>/dev/null
}

show_logs() {
  local f
  for f in "$DIR"/log/console.log "$DIR/log/$NODE_NAME.log"; do
    [[ -s $f ]] || continue
    echo "----- last 25 lines of $f -----" >&2
    tail -n 25 "$f" >&2
  done
}

wait_boot() {  # TIMEOUT_S
  local deadline=$((SECONDS + $1))
  while ((SECONDS < deadline)); do
    if [[ -z $(beam_pid) ]]; then
      show_logs
      die "$NODE_NAME exited while booting (logs above)"
    fi
    amqp_answers "$NODE_ADDR" "$NODE_AMQP_PORT" && return 0
    sleep 0.25
  done
  show_logs
  die "$NODE_NAME did not answer AMQP on $NODE_ADDR:$NODE_AMQP_PORT within $1 s (logs above)"
}

random_cookie() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n' | tr '0-9a-f' 'A-P'; }

# --- network namespaces ---------------------------------------------------------------------

# Creates a namespace for OWNER with a veth pair to it; sets NS (its name).
ns_create() {  # OWNER
  local owner=$1 st k i tries route
  command -v ip >/dev/null || die "--netns: the ip command (iproute2) is missing"
  st=$(proc_stat "$owner") || die "owner pid $owner does not run"
  for ((tries = 0; tries < 300; tries++)); do
    k=$((RANDOM % 256))
    # Nothing here may route or own 10.$SUBNET_A.k.0/24 already (the default route aside).
    route=$(ip -4 route show to match "10.$SUBNET_A.$k.1" | grep -v '^default')
    [[ -z $route ]] || continue
    mkdir "$ROOT/subnets/$k" 2>/dev/null && break
  done
  ((tries < 300)) || die "no free 10.$SUBNET_A.K.0/24 for a namespace"
  NS=warren-ns$k
  local d=$ROOT/netns/$NS
  mkdir -p "$d/members" || die "cannot create $d"
  echo "$owner ${st#* }" >"$d/owner"
  echo "$k" >"$d/k"
  echo "$NS" >"$ROOT/subnets/$k/netns"
  {
    echo '% Written by rabbit_node.sh: node host names of this namespace.'
    for ((i = 1; i <= 252; i++)); do echo "{host, {10,$SUBNET_A,$k,$i}, [\"h$i\"]}."; done
    echo '{lookup, [file, native]}.'
  } >"$d/inetrc"
  ip netns add "$NS" || die "ip netns add $NS failed (root needed)"
  if ! { ip -n "$NS" link set lo up &&
    ip link add "wv${k}r" type veth peer name "wv${k}n" netns "$NS" &&
    ip addr add "10.$SUBNET_A.$k.254/24" dev "wv${k}r" &&
    ip link set "wv${k}r" up &&
    ip -n "$NS" addr add "10.$SUBNET_A.$k.253/24" dev "wv${k}n" &&
    ip -n "$NS" link set "wv${k}n" up; }; then
    die "could not set up the veth pair of $NS"
  fi
}

# Kills every process in the namespace (ours: we made it), deletes it and its record.
ns_remove() {  # NS
  local ns=$1 d=$ROOT/netns/$1 k pids i
  k=$(cat "$d/k" 2>/dev/null)
  if [[ -e /run/netns/$ns ]]; then
    for ((i = 0; i < 100; i++)); do
      pids=$(ip netns pids "$ns" 2>/dev/null)
      [[ -z $pids ]] && break
      # shellcheck disable=SC2086
      kill -KILL $pids 2>/dev/null
      sleep 0.05
    done
    ip netns del "$ns" 2>/dev/null
  fi
  [[ -n $k ]] && ip link del "wv${k}r" 2>/dev/null
  rm -rf "$d"
  [[ -n $k ]] && rm -rf "$ROOT/subnets/$k"
  return 0
}

# Adds the next member to namespace NS; sets NODE_INDEX and NODE_ADDR.
ns_join() {  # NS SHORT
  local d=$ROOT/netns/$1 k i
  k=$(cat "$d/k")
  for ((i = 1; i <= 252; i++)); do
    mkdir "$d/members/$i" 2>/dev/null && break
  done
  ((i <= 252)) || die "namespace $1 is full"
  echo "$2" >"$d/members/$i/node"
  NODE_INDEX=$i
  NODE_ADDR=10.$SUBNET_A.$k.$i
  # A /32 of its own (the /24 belongs to the namespace's .253): a connection made inside the
  # namespace to the node's address then has that address as its source too (with secondary
  # addresses it would be the primary's), so a partition rule lets rabbitmqctl still reach it.
  ip -n "$1" addr add "$NODE_ADDR/32" dev "wv${k}n" || die "cannot add $NODE_ADDR to $1"
}

# After a node left: deletes its slot, and the namespace when it was the last.
ns_leave() {  # NS INDEX
  local d=$ROOT/netns/$1
  [[ -n $2 ]] && rm -rf "$d/members/$2"
  [[ -d $d && -z $(ls -A "$d/members" 2>/dev/null) ]] && ns_remove "$1"
  return 0
}

# Creates the record of a new node; sets DIR and NODE_*.
create() {  # OWNER COOKIE NOFILE [NS]
  local owner=$1 cookie=$2 nofile=$3 n short st
  st=$(proc_stat "$owner") || die "owner pid $owner does not run"
  for ((n = 1; ; n++)); do
    short=warren-$owner-$n
    mkdir "$ROOT/nodes/$short" 2>/dev/null && break
    ((n < 10000)) || die "cannot create a node directory in $ROOT/nodes"
  done
  DIR=$ROOT/nodes/$short
  # The owner first: a node directory without a live owner is the sweeper's.
  echo "$owner ${st#* }" >"$DIR/owner"
  NODE_NETNS=${4:-} NODE_INDEX='' NODE_ADDR=127.0.0.1 NODE_ERL_ARGS=$OPT_ERL_ARGS
  if [[ -n $NODE_NETNS ]]; then
    ns_join "$NODE_NETNS" "$short"
    NODE_NAME=$short@h$NODE_INDEX
  else
    NODE_NAME=$short@localhost
  fi
  NODE_AMQP_PORT=$(claim_port "$short") || exit 1
  NODE_DIST_PORT=$(claim_port "$short") || exit 1
  NODE_OWNER=$owner
  NODE_OWNER_START=${st#* }
  NODE_NOFILE=$nofile
  mkdir -p "$DIR/home" "$DIR/mnesia" "$DIR/log"
  [[ -n $cookie ]] || cookie=$(random_cookie)
  printf '%s' "$cookie" >"$DIR/home/.erlang.cookie"
  chmod 400 "$DIR/home/.erlang.cookie"
  : >"$DIR/rabbitmq-env.conf"
  echo '[].' >"$DIR/enabled_plugins"
  cat >"$DIR/rabbitmq.conf" <<EOF
# Written by $me for $NODE_NAME.
listeners.tcp.default = $NODE_ADDR:$NODE_AMQP_PORT
loopback_users.guest = $([[ -n $NODE_NETNS ]] && echo false || echo true)
log.file.level = info
EOF
  local line
  for line in "${OPT_CONFIG[@]}"; do echo "$line" >>"$DIR/rabbitmq.conf"; done
  cat >"$DIR/env.tmp" <<EOF
NODE_NAME=$NODE_NAME
NODE_AMQP_PORT=$NODE_AMQP_PORT
NODE_DIST_PORT=$NODE_DIST_PORT
NODE_OWNER=$NODE_OWNER
NODE_OWNER_START=$NODE_OWNER_START
NODE_NOFILE=$NODE_NOFILE
NODE_NETNS=$NODE_NETNS
NODE_INDEX=$NODE_INDEX
NODE_ADDR=$NODE_ADDR
NODE_ERL_ARGS=$(printf '%q' "$NODE_ERL_ARGS")
EOF
  mv "$DIR/env.tmp" "$DIR/env"
}

# --- removal --------------------------------------------------------------------------------

hard_kill() {  # the node in $DIR: SIGKILL and wait (at most 10 s) until it is gone
  local pid i
  pid=$(beam_pid) || return 0
  kill -KILL "$pid" 2>/dev/null
  for ((i = 0; i < 1000; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.01
  done
  die "$NODE_NAME (pid $pid) still runs 10 s after SIGKILL"
}

remove() {  # the node in $DIR
  local short=${DIR##*/}
  NODE_NETNS='' NODE_INDEX=''
  [[ -f $DIR/env ]] && read_env
  hard_kill
  rm -rf "$DIR"
  release_ports "$short"
  [[ -n $NODE_NETNS ]] && ns_leave "$NODE_NETNS" "$NODE_INDEX"
  return 0
}

sweep() {
  local d owner start n=0
  for d in "$ROOT"/nodes/*/; do
    [[ -d $d ]] || continue
    DIR=${d%/}
    owner='' start=
    read -r owner start <"$DIR/owner" 2>/dev/null
    if [[ -n $owner ]]; then
      pid_alive "$owner" "$start" && continue
    elif [[ -z $(find "$DIR" -maxdepth 0 -mmin +1) ]]; then
      continue  # being created this very minute
    fi
    NODE_NAME=${DIR##*/}
    say "sweeping $NODE_NAME (owner ${owner:-unknown} has exited)"
    remove
    n=$((n + 1))
  done
  # Namespaces whose owner has exited (their nodes went above).
  for d in "$ROOT"/netns/*/; do
    [[ -d $d ]] || continue
    owner='' start=''
    read -r owner start <"$d/owner" 2>/dev/null
    if [[ -n $owner ]] && pid_alive "$owner" "$start"; then continue; fi
    [[ -z $owner && -z $(find "$d" -maxdepth 0 -mmin +1) ]] && continue
    say "sweeping namespace $(basename "$d") (owner ${owner:-unknown} has exited)"
    ns_remove "$(basename "$d")"
  done
  for d in "$ROOT"/subnets/*/; do
    [[ -d $d && ! -f $d/netns && -n $(find "$d" -maxdepth 0 -mmin +1) ]] && rm -rf "$d"
  done
  # Claims whose node is gone (a start killed between claim and record).
  local c
  for c in "$ROOT"/ports/*/; do
    [[ -d $c ]] || continue
    local node
    node=$(cat "$c/node" 2>/dev/null)
    if [[ -n $node && ! -d $ROOT/nodes/$node ]] ||
      [[ -z $node && -n $(find "$c" -maxdepth 0 -mmin +1) ]]; then
      rm -rf "$c"
    fi
  done
  return 0
}

# --- commands -------------------------------------------------------------------------------

parse_start_opts() {
  OPT_OWNER=$PPID OPT_COOKIE='' OPT_NOFILE=65536 OPT_TIMEOUT=120 OPT_WAIT=1 OPT_NETNS=0
  OPT_ERL_ARGS='' OPT_CONFIG=()
  while (($#)); do
    case "$1" in
      --netns) OPT_NETNS=1 ;;
      --net-ticktime)
        [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--net-ticktime takes seconds"
        OPT_ERL_ARGS+=" -kernel net_ticktime $2"
        shift
        ;;
      --config)
        [[ ${2:-} == *=* && ${2:-} != *$'\n'* ]] || die "--config takes one 'key = value' line"
        OPT_CONFIG+=("$2")
        shift
        ;;
      --owner) OPT_OWNER=${2:?--owner PID}; shift ;;
      --cookie) OPT_COOKIE=${2:?--cookie C}; shift ;;
      --nofile) OPT_NOFILE=${2:?--nofile N}; shift ;;
      --timeout) OPT_TIMEOUT=${2:?--timeout S}; shift ;;
      --no-wait) OPT_WAIT=0 ;;
      *) die "unknown option $1" ;;
    esac
    shift
  done
  [[ $OPT_OWNER =~ ^[0-9]+$ && $OPT_NOFILE =~ ^[0-9]+$ && $OPT_TIMEOUT =~ ^[0-9]+$ ]] ||
    die "--owner, --nofile and --timeout take numbers"
  [[ $OPT_COOKIE =~ ^[A-Za-z0-9]*$ ]] || die "--cookie takes letters and digits"
  OPT_ERL_ARGS=${OPT_ERL_ARGS# }
}

ctl() { (cli_env && exec_in_ns "$RMQ_BIN/rabbitmqctl" -n "$NODE_NAME" "$@"); }

# Nodes this invocation created: removed again if it fails before handing them over.
CREATED=()
CREATED_NS=''
remove_created() {
  local d
  for d in "${CREATED[@]}"; do
    DIR=$d
    NODE_NAME=${DIR##*/}
    say "removing $NODE_NAME, which this failed command started"
    remove
  done
  [[ -n $CREATED_NS ]] && ns_remove "$CREATED_NS"
}

cmd_start() {
  parse_start_opts "$@"
  sweep
  trap remove_created EXIT
  NS=''
  if ((OPT_NETNS)); then
    ns_create "$OPT_OWNER"
    CREATED_NS=$NS
  fi
  create "$OPT_OWNER" "$OPT_COOKIE" "$OPT_NOFILE" "$NS"
  CREATED+=("$DIR")
  launch
  ((OPT_WAIT)) && wait_boot "$OPT_TIMEOUT"
  trap - EXIT
  echo "$NODE_NAME"
}

cmd_cluster() {
  local n=${1:?cluster N}
  shift
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "cluster takes a count"
  parse_start_opts "$@"
  [[ -n $OPT_COOKIE ]] || OPT_COOKIE=$(random_cookie)
  sweep
  trap remove_created EXIT
  NS=''
  if ((OPT_NETNS)); then
    ns_create "$OPT_OWNER"
    CREATED_NS=$NS
  fi
  local -a names=() i
  # Parallel boot: one node's boot is mostly waiting on its own Erlang processes.
  for ((i = 0; i < n; i++)); do
    create "$OPT_OWNER" "$OPT_COOKIE" "$OPT_NOFILE" "$NS"
    CREATED+=("$DIR")
    launch
    names+=("$NODE_NAME")
  done
  for i in "${names[@]}"; do
    load "$i"
    wait_boot "$OPT_TIMEOUT"
  done
  for i in "${names[@]:1}"; do join "$i" "${names[0]}" || exit 1; done
  # A joined node has booted, but the first node lists it as running only once its node monitor
  # has heard of the start (asynchronous, seconds on a loaded machine): a cluster is handed over
  # when every node's view lists every node, so callers never see a half-formed cluster.
  for i in "${names[@]}"; do wait_running "$i" 120 "${names[@]}"; done
  trap - EXIT
  printf '%s\n' "${names[@]}"
}

# running_nodes of NAME's `cluster_status`, one node name per line (nothing if it does not answer).
running_of() {  # NAME
  load "$1"
  ctl cluster_status --formatter json 2>/dev/null |
    python3 -c 'import json, sys; print("\n".join(json.load(sys.stdin).get("running_nodes", [])))' \
      2>/dev/null
}

wait_running() {  # NAME TIMEOUT_S NODE...: until NAME lists every NODE as running
  local name=$1 deadline=$((SECONDS + $2)) running missing n
  shift 2
  while :; do
    running=$(running_of "$name")
    missing=()
    for n in "$@"; do
      grep -qxF "$(load "$n" && echo "$NODE_NAME")" <<<"$running" || missing+=("$n")
    done
    ((${#missing[@]} == 0)) && return 0
    ((SECONDS < deadline)) || die "$name does not list ${missing[*]} as running after $2 s (it lists: $(echo $running))"
    sleep 0.5
  done
}

join() {  # NAME FIRST
  local first out
  first=$(load "$2" && echo "$NODE_NAME") || exit 1
  load "$1"
  for step in stop_app "join_cluster $first" start_app; do
    # shellcheck disable=SC2086
    out=$(ctl $step 2>&1) || {
      echo "$out" >&2
      die "rabbitmqctl -n $NODE_NAME $step failed"
    }
  done
  wait_boot 120
}

nofile_of() {  # PID: its soft open-files limit, or the limit asked for when it does not run
  local l
  if [[ -n $1 ]] && l=$(grep -m1 '^Max open files' "/proc/$1/limits" 2>/dev/null); then
    read -ra l <<<"${l#Max open files}"
    echo "${l[0]}"
  else
    echo "$NODE_NOFILE"
  fi
}

cmd_info() {
  load "$1"
  local pid
  pid=$(beam_pid)
  cat <<EOF
name=$NODE_NAME
address=$NODE_ADDR
amqp_port=$NODE_AMQP_PORT
dist_port=$NODE_DIST_PORT
pid=${pid:-}
running=$([[ -n $pid ]] && echo 1 || echo 0)
nofile=$(nofile_of "$pid")
dir=$DIR
log=$DIR/log/$NODE_NAME.log
owner=$NODE_OWNER
netns=$NODE_NETNS
EOF
}

cmd_list() {
  local d
  for d in "$ROOT"/nodes/*/; do
    [[ -f $d/env ]] || continue
    DIR=${d%/}
    read_env
    local state=stopped owner=alive
    [[ -n $(beam_pid) ]] && state=running
    pid_alive "$NODE_OWNER" "$NODE_OWNER_START" || owner=exited
    echo "$NODE_NAME owner=$NODE_OWNER($owner) $state $NODE_ADDR:$NODE_AMQP_PORT${NODE_NETNS:+ netns=$NODE_NETNS}"
  done
}

case "${1:-}" in
  start)
    shift
    cmd_start "$@"
    ;;
  cluster)
    shift
    cmd_cluster "$@"
    ;;
  stop)
    load "${2:?stop NAME}"
    pid=$(beam_pid) || { say "$NODE_NAME is not running"; exit 0; }
    ctl stop "$DIR/beam.pid" >/dev/null || die "rabbitmqctl stop failed"
    ;;
  kill)
    load "${2:?kill NAME}"
    hard_kill
    ;;
  restart)
    load "${2:?restart NAME}"
    shift 2
    wait_s=120 do_wait=1
    while (($#)); do
      case "$1" in
        --no-wait) do_wait=0 ;;
        --timeout) wait_s=${2:?}; shift ;;
        *) die "unknown option $1" ;;
      esac
      shift
    done
    launch
    # Not `((do_wait)) && ...`: as the branch's last command it made --no-wait exit 1.
    if ((do_wait)); then wait_boot "$wait_s"; fi
    ;;
  wait)
    load "${2:?wait NAME}"
    wait_s=120
    [[ ${3:-} == --timeout ]] && wait_s=${4:?}
    wait_boot "$wait_s"
    ;;
  join) join "${2:?join NAME FIRST}" "${3:?join NAME FIRST}" ;;
  alarm)
    load "${2:?alarm NAME on|off}"
    case "${3:-}" in
      # A watermark no node can stay under: the alarm is raised at the next memory check (~1 s).
      on) ctl set_vm_memory_high_watermark 0.0000001 >/dev/null ;;
      off) ctl set_vm_memory_high_watermark 0.4 >/dev/null ;;
      *) die "alarm NAME on|off" ;;
    esac
    ;;
  sync)
    load "${2:?sync NAME}"
    out=$(ctl eval 'mnesia:dump_log().' 2>&1) || die "mnesia:dump_log() on $NODE_NAME failed: $out"
    ;;
  port)
    load "${2:?port NAME}"
    echo "$NODE_AMQP_PORT"
    ;;
  info) cmd_info "${2:?info NAME}" ;;
  ctl)
    load "${2:?ctl NAME ARGS...}"
    shift 2
    ctl "$@"
    ;;
  tool)
    load "${2:?tool NAME PROGRAM ARGS...}"
    prog=${3:?tool NAME PROGRAM ARGS...}
    shift 3
    [[ $prog =~ ^rabbitmq-(diagnostics|queues|plugins|streams|upgrade)$ ]] ||
      die "tool: one of rabbitmq-diagnostics, -queues, -plugins, -streams, -upgrade"
    (cli_env && exec_in_ns "$RMQ_BIN/$prog" -n "$NODE_NAME" "$@")
    ;;
  partition | heal)
    load "${2:?$1 NAME}"
    [[ -n $NODE_NETNS ]] || die "$1: $NODE_NAME is not in a namespace (start it with --netns)"
    command -v nft >/dev/null || die "$1: nft is missing (apt-get install nftables; tools/setup.sh does)"
    table=warren_$(short_of "$NODE_NAME" | tr -c 'A-Za-z0-9\n' _)
    if [[ $1 == partition ]]; then
      # In the namespace only: every packet between the node's address and any other is dropped
      # (its connections to itself, and to epmd on 127.0.0.1, stay).
      rules="ip saddr $NODE_ADDR ip daddr != $NODE_ADDR drop; ip daddr $NODE_ADDR ip saddr != $NODE_ADDR drop;"
      ip netns exec "$NODE_NETNS" nft -f - <<EOF || die "nft failed"
table ip $table {
  chain input { type filter hook input priority 0; policy accept; $rules }
  chain output { type filter hook output priority 0; policy accept; $rules }
}
EOF
    elif ip netns exec "$NODE_NETNS" nft list table ip "$table" >/dev/null 2>&1; then
      ip netns exec "$NODE_NETNS" nft delete table ip "$table" || die "nft failed"
    fi
    ;;
  list) cmd_list ;;
  cleanup)
    shift
    if [[ ${1:-} == --owner ]]; then
      owner=${2:?cleanup --owner PID}
      for d in "$ROOT"/nodes/warren-"$owner"-*/; do
        [[ -d $d ]] || continue
        DIR=${d%/}
        NODE_NAME=${DIR##*/}
        remove
      done
      for d in "$ROOT"/netns/*/; do
        [[ -d $d && $(cut -d' ' -f1 "$d/owner" 2>/dev/null) == "$owner" ]] &&
          ns_remove "$(basename "$d")"
      done
    else
      for name in "$@"; do
        DIR=$ROOT/nodes/$(short_of "$name")
        NODE_NAME=${DIR##*/}
        [[ -d $DIR ]] && remove
      done
    fi
    ;;
  sweep) sweep ;;
  -h | --help | help) awk 'NR > 1 && /^set -uo/ {exit} NR > 1' "$0" ;;
  *)
    awk 'NR > 1 && /^set -uo/ {exit} NR > 1' "$0" >&2
    exit 2
    ;;
esac
