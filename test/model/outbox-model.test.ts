import { beforeAll, describe, expect, it } from 'vitest';
import { checkLine, type ModelCheckResult, runModelCheck } from '../support/model-check.ts';

/**
 * Runs spin on model/outbox.pml (the outbox and two relays) through scripts/model-check.sh:
 * the relay protocol must verify, and every variant broken on purpose must be caught by the
 * property it breaks. A machine without spin (that cannot install it) fails here.
 */
let result: ModelCheckResult;

/** The summary line of one check. */
function line(name: string): string {
  return checkLine(result, name);
}

beforeAll(async () => {
  result = await runModelCheck('outbox');
}, 600_000);

describe('the outbox relay, model-checked with spin', () => {
  it('runs every check as expected', () => {
    expect(result.output).toMatch(/model-check: 6 of 6 checks as expected/);
    expect(result.code, result.output).toBe(0);
  });

  it('verifies the relay with no error: nothing published before its commit or after a rollback, effects once downstream, per-key order', () => {
    expect(line('outbox-real-safety')).toMatch(/^ok +outbox-real-safety +verified: 0 errors, \d+ states/);
  });

  it('proves under weak fairness that every committed row is published and applied, or set aside as failed', () => {
    expect(line('outbox-real-liveness')).toMatch(/^ok +outbox-real-liveness +verified: 0 errors/);
  });

  it('catches the cursor trap: a relay reading past a high-water mark loses a row that committed late', () => {
    expect(line('outbox-broken-cursor')).toContain('caught: acceptance cycle');
  });

  it.each([
    ['outbox-broken-skip-locked-only', 'assertion violated (rank[best]==firstPub[rkey[best]])'],
    ['outbox-broken-no-key-lock', 'assertion violated (rank[best]==firstPub[rkey[best]])'],
  ])('catches %s by per-key order', (name, violation) => {
    expect(line(name)).toMatch(new RegExp(`^ok +${name} +caught: `));
    expect(line(name)).toContain(violation);
  });

  it('shows that relays re-send, so that exactly once downstream rests on the inbox', () => {
    expect(line('outbox-broken-no-dedup')).toContain('caught: assertion violated (effect[best]<=1)');
  });
});
