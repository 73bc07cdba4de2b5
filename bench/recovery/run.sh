#!/usr/bin/env bash
# The recovery benchmark: Java, Node and warren side by side while RabbitMQ nodes of the
# harness's own are killed, closed and restarted (bench/recovery/README.md). A benchmark, not a
# test: it takes about 25 minutes for every client and scenario with 3 runs each.
#
#   bash bench/recovery/run.sh [--clients java,node,warren] [--scenarios kill,leader,close,restart]
#                              [--runs 3] [--warren-args '...'] [--help]
#
# Needs the Debian packages of tools/setup.sh (python3-amqp, rabbitmq-server,
# librabbitmq-client-java, default-jdk-headless, nodejs, npm) and npm's registry the first time
# (`npm ci` from bench/peers/node/package-lock.json).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec /usr/bin/python3 "$here/recovery_bench.py" "$@"
