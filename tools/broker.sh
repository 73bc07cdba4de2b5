#!/usr/bin/env bash
# The test broker: start | stop | status. Run as root.
#   start   configure (first time) and start RabbitMQ on loopback; same as tools/setup.sh, which
#           also installs any missing Debian package.
#   stop    rabbitmqctl shutdown (returns once the node has exited).
#   status  which of 5672 (amqp), 5671 (amqps), 15672 (management) answer, and the node's
#           open-files limit (it caps the number of connections); exit 0 only if all answer.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

case "${1:-}" in
  start) exec bash "$here/setup.sh" ;;
  stop)
    if ! port_open 5672 && ! rabbitmqctl -q status >/dev/null 2>&1; then
      echo "broker: not running"
      exit 0
    fi
    rabbitmqctl shutdown
    echo "broker: stopped"
    ;;
  status)
    all=0
    for p in 5672 5671 15672; do
      if port_open "$p"; then echo "127.0.0.1:$p answers"; else echo "127.0.0.1:$p DOWN"; all=3; fi
    done
    pid=$(cat /var/lib/rabbitmq/mnesia/rabbit@localhost.pid 2>/dev/null)
    if [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/limits ]]; then
      read -r soft hard < <(awk '/^Max open files/ {print $4, $5}' "/proc/$pid/limits")
      used=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
      echo "open files: limit $soft (hard $hard), $used in use (pid $pid)"
    else
      echo "open files: no running broker process (pid file /var/lib/rabbitmq/mnesia/rabbit@localhost.pid)"
    fi
    exit "$all"
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
