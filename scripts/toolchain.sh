#!/usr/bin/env bash
# Puts Node >= 22 and pnpm on PATH. Sourced by the other scripts.
#
# A machine that already has Node >= 22 and pnpm uses them as they are. Otherwise Node 24
# and pnpm are installed from the npm registry into .tools/ (git-ignored), once; later runs
# reuse them. Nothing outside the repository is touched.
set -euo pipefail
INBOXKIT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export INBOXKIT_ROOT
NODE_VERSION="${INBOXKIT_NODE_VERSION:-24}"
PNPM_VERSION="$(sed -n 's/.*"packageManager": *"pnpm@\([^"]*\)".*/\1/p' "$INBOXKIT_ROOT/package.json")"

have_node22() {
  command -v node >/dev/null 2>&1 || return 1
  local major
  major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
  [ "$major" -ge 22 ]
}

tools="$INBOXKIT_ROOT/.tools"
if [ -x "$tools/node_modules/.bin/node" ]; then
  export PATH="$tools/node_modules/.bin:$PATH"
fi
if ! have_node22 || ! command -v pnpm >/dev/null 2>&1; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "inboxkit: need npm (any Node version) to fetch Node $NODE_VERSION and pnpm" >&2
    exit 1
  fi
  echo "inboxkit: installing Node $NODE_VERSION and pnpm $PNPM_VERSION into .tools/ (once, about 10 s)" >&2
  mkdir -p "$tools"
  [ -f "$tools/package.json" ] || echo '{"private":true}' > "$tools/package.json"
  npm install --prefix "$tools" --no-audit --no-fund --loglevel=error \
    "node@$NODE_VERSION" "pnpm@$PNPM_VERSION" >/dev/null
  export PATH="$tools/node_modules/.bin:$PATH"
fi
have_node22 || { echo "inboxkit: Node >= 22 is required, found $(node --version)" >&2; exit 1; }
# pnpm must run on the Node found above, not on whatever node its shebang would pick.
export npm_config_update_notifier=false
