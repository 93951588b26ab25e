#!/usr/bin/env bash
# Model-checks the inbox protocol (model/inbox.pml) and the outbox relay (model/outbox.pml)
# with spin. Each protocol as designed must verify with no error, and each variant broken on
# purpose must be caught, by the property it breaks. Exits non-zero when any check does not
# go as expected.
#
#   bash scripts/model-check.sh            every check (about a minute on 2 cores)
#   bash scripts/model-check.sh real       only the checks whose model or name contains "real"
#   bash scripts/model-check.sh outbox     only the outbox's checks (inbox: the inbox's)
#
# Needs spin and gcc. When spin is missing and this runs as root, it is installed with
# apt-get (Debian package `spin`); otherwise the script stops and says how to install it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
filter="${1:-}"

if ! command -v spin >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "model-check: installing spin (apt-get install spin)" >&2
    if ! { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq spin >/dev/null; }; then
      echo "model-check: apt-get could not install spin" >&2
      exit 2
    fi
  else
    echo "model-check: spin is not installed. Install the Debian package as root: apt-get update && apt-get install -y spin" >&2
    exit 2
  fi
fi
if ! command -v gcc >/dev/null 2>&1; then
  echo "model-check: gcc is needed to compile spin's verifier (apt-get install -y gcc)" >&2
  exit 2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# model | name | kind (safety: assertions and deadlocks; liveness: pan -a -f) | flags |
# expected ("verified", or the violation spin must report)
checks=(
  "inbox|real-safety|safety||verified"
  "inbox|real-liveness|liveness|-DMAXCRASH=1|verified"
  "inbox|broken-ack-before-commit|safety|-DACK_BEFORE_COMMIT|assertion violated (key!=0)"
  "inbox|broken-claim-after-handler|safety|-DCLAIM_AFTER_HANDLER|assertion violated (inHandler<=1)"
  "inbox|broken-key-after-commit|safety|-DKEY_AFTER_COMMIT|assertion violated (effect<=1)"
  "inbox|broken-no-record-dead-letter|safety|-DNO_RECORD_DEAD_LETTER|assertion violated  !(dlAcked)"
  "inbox|broken-record-before-publish|safety|-DRECORD_BEFORE_PUBLISH|assertion violated ((effect==1)||(dlq>0))"
  "inbox|broken-ack-on-lock-timeout|safety|-DACK_ON_LOCK_TIMEOUT|assertion violated (key!=0)"
  "inbox|broken-no-retry-budget|liveness|-DNO_RETRY_BUDGET -DMAXCRASH=1|acceptance cycle"
  "inbox|broken-count-before-claim|safety|-DCOUNT_BEFORE_CLAIM|assertion violated (realCrashes>="
  "inbox|broken-no-uncount-on-end|safety|-DNO_UNCOUNT_ON_END|assertion violated (realCrashes>="
  "outbox|outbox-real-safety|safety||verified"
  "outbox|outbox-real-liveness|liveness|-DMAXLOSS=1|verified"
  "outbox|outbox-broken-cursor|liveness|-DCURSOR -DMAXREFUSE=0|acceptance cycle"
  "outbox|outbox-broken-skip-locked-only|safety|-DSKIP_LOCKED_ONLY -DMAXREFUSE=0 -DMAXLOSS=0|assertion violated (rank[best]==firstPub[rkey[best]])"
  "outbox|outbox-broken-no-key-lock|safety|-DNO_KEY_LOCK -DMAXREFUSE=0 -DMAXLOSS=0|assertion violated (rank[best]==firstPub[rkey[best]])"
  "outbox|outbox-broken-no-dedup|safety|-DNO_DEDUP|assertion violated (effect[best]<=1)"
)

total=0
good=0
for check in "${checks[@]}"; do
  IFS='|' read -r model name kind flags expected <<<"$check"
  [[ -n "$filter" && "$model $name" != *"$filter"* ]] && continue
  total=$((total + 1))
  dir="$work/$name"
  mkdir -p "$dir"
  cp "$root/model/$model.pml" "$dir/"
  started=$SECONDS
  # shellcheck disable=SC2086 # flags are words on purpose
  if ! (cd "$dir" && spin -a $flags "$model.pml" >spin.out 2>&1); then
    echo "FAIL $name: spin could not generate the verifier" >&2
    cat "$dir/spin.out" >&2
    continue
  fi
  if [ "$kind" = safety ]; then
    cc_flags=(-DSAFETY -DNOCLAIM)
    pan_flags=(-m100000)
  else
    cc_flags=()
    pan_flags=(-a -f -m100000)
  fi
  if ! (cd "$dir" && gcc -O1 "${cc_flags[@]}" -o pan pan.c 2>cc.out); then
    echo "FAIL $name: gcc could not compile the verifier" >&2
    cat "$dir/cc.out" >&2
    continue
  fi
  (cd "$dir" && ./pan "${pan_flags[@]}" >pan.out 2>&1) || true
  out="$dir/pan.out"
  seconds=$((SECONDS - started))
  errors="$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' "$out" | tail -1)"
  states="$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$out" | tail -1)"
  if grep -q 'max search depth too small' "$out"; then
    echo "FAIL $name: the search was cut at its depth limit (raise -m)"
    tail -20 "$out"
    continue
  fi
  if [ "$expected" = verified ]; then
    if [ "$errors" = 0 ]; then
      printf 'ok   %-32s verified: 0 errors, %s states (%ss)\n' "$name" "$states" "$seconds"
      good=$((good + 1))
    else
      printf 'FAIL %-32s expected no error, spin reported %s:\n' "$name" "${errors:-none}"
      grep -E '^pan|violated|acceptance|invalid end' "$out" | head -5
    fi
  else
    if [ -n "$errors" ] && [ "$errors" != 0 ] && grep -qF -- "$expected" "$out"; then
      printf 'ok   %-32s caught: %s (%ss)\n' "$name" "$(grep -m1 -E '^pan:1:' "$out" | sed 's/^pan:1: //')" "$seconds"
      good=$((good + 1))
    else
      printf 'FAIL %-32s expected "%s", spin reported %s error(s):\n' "$name" "$expected" "${errors:-no}"
      grep -E '^pan|violated|acceptance|invalid end' "$out" | head -5
    fi
  fi
done

echo "model-check: $good of $total checks as expected"
[ "$total" -gt 0 ] && [ "$good" = "$total" ]
