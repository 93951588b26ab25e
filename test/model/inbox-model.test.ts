import { beforeAll, describe, expect, it } from 'vitest';
import { checkLine, type ModelCheckResult, runModelCheck } from '../support/model-check.ts';

/**
 * Runs spin on model/inbox.pml through scripts/model-check.sh: the protocol must verify, and
 * every variant broken on purpose must be caught by the property it breaks. A machine
 * without spin (that cannot install it) fails here: the script exits non-zero.
 */
let result: ModelCheckResult;

/** The summary line of one check. */
function line(name: string): string {
  return checkLine(result, name);
}

beforeAll(async () => {
  result = await runModelCheck('inbox');
}, 600_000);

describe('the inbox protocol, model-checked with spin', () => {
  it('runs every check as expected', () => {
    expect(result.output).toMatch(/model-check: (\d+) of \1 checks as expected/);
    expect(result.code, result.output).toBe(0);
  });

  it('verifies the protocol with no error: effects once, no ack before commit, nothing lost, handlers one at a time', () => {
    expect(line('real-safety')).toMatch(/^ok +real-safety +verified: 0 errors, \d+ states/);
  });

  it('proves under weak fairness that every delivery settles (processed, duplicate or dead-lettered)', () => {
    expect(line('real-liveness')).toMatch(/^ok +real-liveness +verified: 0 errors/);
  });

  it.each([
    ['broken-ack-before-commit', 'assertion violated (key!=0)'],
    ['broken-claim-after-handler', 'assertion violated (inHandler<=1)'],
    ['broken-key-after-commit', 'assertion violated (effect<=1)'],
    ['broken-no-record-dead-letter', 'assertion violated  !(dlAcked)'],
    ['broken-record-before-publish', 'assertion violated ((effect==1)||(dlq>0))'],
    ['broken-ack-on-lock-timeout', 'assertion violated (key!=0)'],
    ['broken-no-retry-budget', 'acceptance cycle'],
  ])('catches the broken variant %s', (name, violation) => {
    expect(line(name)).toMatch(new RegExp(`^ok +${name} +caught: `));
    expect(line(name)).toContain(violation);
  });

  it('shows that only a crash counted after the claim, and taken back on a clean end, is a real crash', () => {
    // real-safety asserts P7 on the code's counting; these are the two ways to get it wrong.
    expect(line('broken-count-before-claim')).toContain('caught: assertion violated (realCrashes>=');
    expect(line('broken-no-uncount-on-end')).toContain('caught: assertion violated (realCrashes>=');
  });
});
