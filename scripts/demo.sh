#!/usr/bin/env bash
# The demo, from a fresh clone: toolchain, dependencies, build, services, then the
# payments scenario. `npm run demo -- --core` runs the Postgres-only version.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
cd "$INBOXKIT_ROOT"
echo "inboxkit: installing dependencies (first run only takes a while)" >&2
pnpm install --reporter=silent
echo "inboxkit: building" >&2
pnpm run --silent build
# kafkajs 2.2.4 sets negative timeouts, which Node 24 warns about.
export NODE_OPTIONS="${NODE_OPTIONS:-} --disable-warning=TimeoutNegativeWarning"
if [ "${1:-}" = "--core" ]; then
  shift
  bash scripts/services.sh start postgres
  exec node examples/demo/core-demo.ts "$@"
fi
exec node examples/demo/demo.ts "$@"
