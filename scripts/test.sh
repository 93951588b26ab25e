#!/usr/bin/env bash
# The whole test suite, from a fresh clone: toolchain, dependencies, build, lint and type
# checks (with the packed packages' checks: scripts/packages.mjs), then every test against
# real Postgres, RabbitMQ and Kafka (started by the tests' global setup when they are not
# given by DATABASE_URL / AMQP_URL / KAFKA_BROKERS and Docker is not there).
#
#   npm test                        everything
#   npm test -- --project core      one vitest project (vitest.config.ts): core, rabbitmq, kafka,
#                                   http, cli, examples, docs (every snippet type-checked, the
#                                   README's quick starts run), model, pgbouncer or packages (the
#                                   packed packages on Node 22 and 24; it installs Node 22 into .tools/)
#   npm test -- quick-start         test files whose path contains the filter
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
cd "$INBOXKIT_ROOT"

# The protocol's model check (project `model`) runs spin: install it on a fresh machine.
if ! command -v spin >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "inboxkit: installing spin (model checker)" >&2
  { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq spin >/dev/null; } ||
    echo "inboxkit: could not install spin; the model project will fail" >&2
fi

# The project `pgbouncer` runs the essential cases through Debian's PgBouncer in transaction
# mode (test/support/pgbouncer.ts starts a private one): install it on a fresh machine.
if [ ! -x "${INBOXKIT_PGBOUNCER:-/usr/sbin/pgbouncer}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "inboxkit: installing pgbouncer" >&2
  { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; } ||
    echo "inboxkit: could not install pgbouncer; the pgbouncer project will fail" >&2
fi

echo "inboxkit: installing dependencies" >&2
if [ -n "${CI:-}" ]; then pnpm install --frozen-lockfile --reporter=silent; else pnpm install --reporter=silent; fi
echo "inboxkit: building" >&2
pnpm run --silent build
echo "inboxkit: lint and type checks" >&2
pnpm run --silent check
report="$INBOXKIT_ROOT/.tools/vitest-report.json"
rm -f "$report"
status=0
pnpm exec vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@" || status=$?
# One plain closing line, whatever the reporter printed above it.
if [ -f "$report" ]; then
  node -e '
    const r = require(process.argv[1]);
    const skipped = (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
    console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
  ' "$report"
fi
exit "$status"
