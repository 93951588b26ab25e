#!/usr/bin/env bash
# Starts the local services tests, benchmarks and the demo use, when they are down, on a
# machine without Docker. Leaves them running. Services named by an environment variable
# (DATABASE_URL, AMQP_URL, KAFKA_BROKERS) are the user's and are not touched.
#
#   scripts/services.sh start [postgres|rabbitmq|kafka|all]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { echo "inboxkit: $*" >&2; }

start_postgres() {
  [ -n "${DATABASE_URL:-}" ] && return 0
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return 0; fi
  say "starting the local PostgreSQL"
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    local version
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
  for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p 5432 && return 0
    sleep 0.5
  done
  say "PostgreSQL did not come up on 127.0.0.1:5432; set DATABASE_URL to use another server"
  return 1
}

rabbit_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

start_rabbitmq() {
  [ -n "${AMQP_URL:-}" ] && return 0
  if rabbit_up; then return 0; fi
  say "starting the local RabbitMQ"
  if command -v rabbitmq-server >/dev/null 2>&1; then rabbitmq-server -detached || true; fi
  for _ in $(seq 1 120); do
    if rabbit_up; then
      command -v rabbitmqctl >/dev/null 2>&1 && rabbitmqctl await_startup >/dev/null 2>&1 || true
      return 0
    fi
    sleep 0.5
  done
  say "RabbitMQ did not come up on 127.0.0.1:5672; set AMQP_URL to use another broker"
  return 1
}

start_kafka() {
  [ -n "${KAFKA_BROKERS:-}" ] && return 0
  bash "$ROOT/scripts/kafka.sh" start
}

case "${1:-}" in
  start)
    case "${2:-all}" in
      postgres) start_postgres ;;
      rabbitmq) start_rabbitmq ;;
      kafka) start_kafka ;;
      all) start_postgres; start_rabbitmq; start_kafka ;;
      *) say "unknown service ${2}"; exit 2 ;;
    esac
    ;;
  *) echo "usage: scripts/services.sh start [postgres|rabbitmq|kafka|all]" >&2; exit 2 ;;
esac
