#!/usr/bin/env bash
# Benchmarks (not tests): print figures and save them to bench/results/*.json.
#
#   npm run bench                 every benchmark
#   npm run bench -- core         one of: core, kafka, kafka-offsets, rabbitmq, http, outbox, cli-status, retention,
#                                 scaling (the last two not in "every benchmark": retention fills about 4 GB and runs
#                                 for ten minutes)
#   npm run bench -- core --rounds 5 --messages 8000
#   pnpm run bench core           (pnpm passes a "--" on as an argument: it is skipped)
#
# Each benchmark redraws the charts in docs/benchmarks/ after saving (bench/support.ts,
# saveResults); `pnpm run bench:charts` redraws them from bench/results alone.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
cd "$INBOXKIT_ROOT"
pnpm install --reporter=silent
pnpm run --silent build
[ "${1:-}" = -- ] && shift
which="${1:-all}"
[ $# -gt 0 ] && shift
run() {
  local name="$1"; shift
  [ -f "bench/$name.ts" ] || { echo "inboxkit: no benchmark named $name" >&2; exit 2; }
  case "$name" in
    core|http|cli-status|retention) bash scripts/services.sh start postgres ;;
    rabbitmq) bash scripts/services.sh start postgres; bash scripts/services.sh start rabbitmq ;;
    kafka|kafka-offsets) bash scripts/services.sh start postgres; bash scripts/services.sh start kafka ;;
    outbox) for service in postgres rabbitmq kafka; do bash scripts/services.sh start "$service"; done ;;
  esac
  echo "inboxkit: benchmark $name" >&2
  node "bench/$name.ts" "$@"
}
if [ "$which" = all ]; then
  for name in core rabbitmq kafka http outbox cli-status; do [ -f "bench/$name.ts" ] && run "$name" "$@"; done
else
  run "$which" "$@"
fi
