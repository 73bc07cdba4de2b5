#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine for warren: installs the Debian packages the build, the tests
# and the benchmarks need, then configures and starts a loopback-only RabbitMQ with plain AMQP
# (5672), TLS (5671, SASL EXTERNAL by client certificate) and the management API (15672).
# Idempotent: safe to re-run whether the broker is unconfigured, stopped or running.
# Run as root. The only network it needs is Debian's archive (and only when a package is missing).
set -euo pipefail

# Others append here: every Debian package the project needs, one place.
WARREN_PACKAGES=(
  bazel-bootstrap bazel-rules-java
  libtbb-dev libconcurrentqueue-dev libssl-dev libbenchmark-dev libgtest-dev libgmock-dev
  librabbitmq-dev python3-amqp rabbitmq-server nlohmann-json3-dev
  clang libclang-rt-14-dev llvm lld
  openssl curl ca-certificates
  gdb
  nftables
  # bench/recovery's peers: the RabbitMQ Java client (compiled with javac) and Node.js
  librabbitmq-client-java default-jre-headless default-jdk-headless nodejs
  g++ cmake make pkgconf
  python3-prometheus-client prometheus
)
# npm installs bench/peers/node's pinned packages (npm ci). A Node.js from elsewhere (NodeSource)
# brings its own npm and conflicts with Debian's package: ask for it only when npm is missing.
command -v npm >/dev/null 2>&1 || WARREN_PACKAGES+=(npm)

CERT_DIR=/var/lib/warren/certs
RABBIT_ETC=/etc/rabbitmq
RABBIT_LOG=/var/log/rabbitmq
RABBIT_PIDFILE=/var/lib/rabbitmq/mnesia/rabbit@localhost.pid
# Open-files limit of the broker: a load generator's broker must take thousands of connections.
BROKER_NOFILE=65536
CLIENT_CN=warren-client
TEST_VHOST=warren-test

log() { echo "setup: $*"; }

die() {
  echo "setup: ERROR: $*" >&2
  if [[ -d $RABBIT_LOG ]]; then
    local f
    for f in "$RABBIT_LOG"/*.log "$RABBIT_LOG"/startup_err "$RABBIT_LOG"/startup_log; do
      [[ -s $f ]] || continue
      echo "----- last 30 lines of $f -----" >&2
      tail -n 30 "$f" >&2
    done
  fi
  exit 1
}

[[ $(id -u) -eq 0 ]] || { echo "setup: run as root (sudo bash tools/setup.sh)" >&2; exit 1; }

install_packages() {
  local missing=() p
  for p in "${WARREN_PACKAGES[@]}"; do
    if [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) != "install ok installed" ]]; then
      missing+=("$p")
    fi
  done
  if ((${#missing[@]} == 0)); then
    log "all ${#WARREN_PACKAGES[@]} Debian packages present"
    return
  fi
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q || die "apt-get update failed"
  apt-get install -y -q --no-install-recommends "${missing[@]}" || die "apt-get install failed"
  # Under systemd the package starts a node with the default configuration (all interfaces, no
  # TLS); stop it so the check below does not mistake it for ours.
  if [[ " ${missing[*]} " == *" rabbitmq-server "* ]] && command -v systemctl >/dev/null &&
    systemctl is-active --quiet rabbitmq-server 2>/dev/null; then
    systemctl stop rabbitmq-server
  fi
  # Likewise Debian's prometheus (all interfaces, port 9090): the tests start their own, on
  # loopback and a free port, with a temporary configuration.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null &&
    systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl disable --now prometheus
  fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Returns 0 if it (re)generated the set, so a running broker can be restarted to load it.
make_certs() {
  local f absent=0
  for f in ca.pem ca.key server.pem server.key client.pem client.key other_ca.pem; do
    [[ -s $CERT_DIR/$f ]] || absent=1
  done
  ((absent)) || return 1
  log "generating test certificates in $CERT_DIR"
  mkdir -p "$CERT_DIR"
  chmod 755 "$CERT_DIR"
  local tmp
  tmp=$(mktemp -d)
  # Server and client certificates hang off one CA, so the whole set is regenerated together.
  (
    cd "$tmp"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=warren test CA" \
      -keyout ca.key -out ca.pem
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=warren unrelated CA" \
      -keyout other_ca.key -out other_ca.pem
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$CLIENT_CN" -keyout client.key -out client.csr
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile client.ext -out client.pem
  ) >"$tmp/openssl.log" 2>&1 || { cat "$tmp/openssl.log" >&2; die "certificate generation failed"; }
  install -m 644 "$tmp"/{ca.pem,other_ca.pem,server.pem,client.pem} "$CERT_DIR"/
  install -m 600 "$tmp"/ca.key "$CERT_DIR"/
  # The broker runs as user rabbitmq and must read its key.
  install -m 640 -o root -g rabbitmq "$tmp"/server.key "$CERT_DIR"/
  # A test-only identity for a loopback broker: readable so tests run by any user can present it.
  install -m 644 "$tmp"/client.key "$CERT_DIR"/
  rm -rf "$tmp"
  return 0
}

write_if_changed() {  # path, content
  if [[ ! -f $1 ]] || [[ $(cat "$1") != "$2" ]]; then
    printf '%s\n' "$2" >"$1"
    chmod 644 "$1"
  fi
}

configure_broker() {
  mkdir -p "$RABBIT_ETC"
  write_if_changed "$RABBIT_ETC/rabbitmq-env.conf" "# Written by warren tools/setup.sh: loopback only.
NODENAME=rabbit@localhost
SERVER_ADDITIONAL_ERL_ARGS=\"-kernel inet_dist_use_interface {127,0,0,1}\"
export ERL_EPMD_ADDRESS=127.0.0.1"
  write_if_changed "$RABBIT_ETC/rabbitmq.conf" "# Written by warren tools/setup.sh: loopback only.
listeners.tcp.default = 127.0.0.1:5672
listeners.ssl.default = 127.0.0.1:5671
ssl_options.cacertfile = $CERT_DIR/ca.pem
ssl_options.certfile = $CERT_DIR/server.pem
ssl_options.keyfile = $CERT_DIR/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = AMQPLAIN
auth_mechanisms.3 = EXTERNAL
ssl_cert_login_from = common_name
management.tcp.ip = 127.0.0.1
management.tcp.port = 15672"
  rabbitmq-plugins enable --offline rabbitmq_management rabbitmq_auth_mechanism_ssl >/dev/null ||
    die "rabbitmq-plugins enable failed"
}

start_broker() {
  log "starting RabbitMQ (open-files limit $BROKER_NOFILE, or the hard limit when lower)"
  # A pid file left by a node that died would make 'rabbitmqctl wait' watch a dead process.
  rm -f "$RABBIT_PIDFILE"
  # The node's open-files limit is the soft limit of the shell that starts it. The Debian wrapper
  # (/usr/sbin/rabbitmq-server) switches to the rabbitmq user with su, whose pam_limits puts the
  # soft limit back to 1024: at ~1,000 connections the node runs out of descriptors ("Ranch
  # acceptor reducing accept rate: out of file descriptors"). So the limit is raised inside the
  # su, just before the wrapper (which, run as rabbitmq, starts the node directly).
  ulimit -n "$BROKER_NOFILE" 2>/dev/null || true
  su rabbitmq -s /bin/sh -c "ulimit -n $BROKER_NOFILE 2>/dev/null || ulimit -n \$(ulimit -Hn)
    exec /usr/sbin/rabbitmq-server -detached" || die "rabbitmq-server -detached failed"
  rabbitmqctl wait --timeout 120 "$RABBIT_PIDFILE" >/dev/null || die "RabbitMQ did not start"
}

provision() {
  if ! rabbitmqctl list_users -q | awk '{print $1}' | grep -qx "$CLIENT_CN"; then
    # EXTERNAL logins need no password; a random one keeps PLAIN logins for this user closed.
    rabbitmqctl add_user "$CLIENT_CN" "$(openssl rand -hex 24)" >/dev/null || die "add_user failed"
  fi
  rabbitmqctl set_permissions -p / "$CLIENT_CN" '.*' '.*' '.*' >/dev/null
  if ! rabbitmqctl list_vhosts -q | grep -qx "$TEST_VHOST"; then
    rabbitmqctl add_vhost "$TEST_VHOST" >/dev/null || die "add_vhost failed"
  fi
  rabbitmqctl set_permissions -p "$TEST_VHOST" guest '.*' '.*' '.*' >/dev/null
}

wait_ports() {
  local port deadline=$((SECONDS + 60))
  for port in 5672 5671 15672; do
    until port_open "$port"; do
      ((SECONDS < deadline)) || die "nothing answers on 127.0.0.1:$port"
      sleep 1
    done
  done
}

install_packages
certs_new=0
make_certs && certs_new=1
if port_open 5672; then
  if ((certs_new)); then
    log "new certificates: restarting the running broker"
    rabbitmqctl shutdown >/dev/null || die "rabbitmqctl shutdown failed"
    configure_broker
    start_broker
  else
    log "a broker already answers on 127.0.0.1:5672; leaving its configuration alone"
    nofile=$(awk '/^Max open files/ {print $4}' "/proc/$(cat "$RABBIT_PIDFILE" 2>/dev/null)/limits" 2>/dev/null)
    if [[ -n $nofile && $nofile != unlimited ]] && ((nofile < 4096)); then
      log "WARNING: the running broker's open-files limit is $nofile (it runs out near that many" \
        "connections); restart it to apply $BROKER_NOFILE: bash tools/broker.sh stop && bash tools/setup.sh"
    fi
  fi
else
  configure_broker
  start_broker
fi
provision || die "provisioning users and vhosts failed"
wait_ports
log "RabbitMQ ready: amqp 127.0.0.1:5672, amqps 127.0.0.1:5671, http 127.0.0.1:15672, certs in $CERT_DIR"
