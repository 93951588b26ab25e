import { afterAll, beforeAll, expect, it } from 'vitest';
import { runScenarios, type ScenarioResult } from '../../examples/retry-policies/main.ts';
import { createTestDatabase, type TestDatabase } from '../support/postgres.ts';

let t: TestDatabase;
let results: ScenarioResult[];
beforeAll(async () => {
  t = await createTestDatabase('example_retry');
  results = await runScenarios(t.url);
});
afterAll(async () => {
  await t?.dispose();
});

const byName = (prefix: string) => {
  const found = results.find((r) => r.name.startsWith(prefix));
  if (!found) throw new Error(`no scenario ${prefix}`);
  return found;
};

it('immediate retries run back to back and succeed on the third attempt', () => {
  const r = byName('immediate');
  expect(r.outcome).toBe('processed after 3 attempt(s)');
  expect(r.timeline.at(-1)!.atMs - r.timeline[0]!.atMs).toBeLessThan(1000);
});

it('exponential backoff with jitter waits at least min x factor^n between attempts', () => {
  const r = byName('exponential');
  expect(r.outcome).toBe('processed after 4 attempt(s)');
  const gaps = r.timeline.slice(1).map((e, i) => e.atMs - r.timeline[i]!.atMs);
  expect(gaps[0]).toBeGreaterThanOrEqual(95);
  expect(gaps[1]).toBeGreaterThanOrEqual(195);
  expect(gaps[2]).toBeGreaterThanOrEqual(395);
});

it('a predicate stops at the first error it refuses', () => {
  expect(byName('retryable-error predicate').outcome).toBe('dead_letter (non_retryable) after 2 attempt(s)');
});

it('non-retryable classes and NonRetryableError are dead-lettered after one attempt', () => {
  expect(byName('non-retryable').outcome).toBe('dead_letter (non_retryable) after 1 attempt(s)');
  expect(byName('NonRetryableError').outcome).toBe('dead_letter (non_retryable) after 1 attempt(s)');
});

it('maxRetryTime ends the retries long before `retries` would', () => {
  const r = byName('max retry time');
  expect(r.outcome).toMatch(/^dead_letter \(retries_exhausted\)/);
  expect(r.timeline.length).toBeLessThan(10);
  expect(r.timeline.at(-1)!.atMs).toBeLessThan(2000); // 100 retries of 80 ms would take 8 s
});

it('handlerTimeoutMs aborts a hanging attempt through its signal; the retry succeeds', () => {
  const r = byName('handler time limit');
  expect(r.outcome).toBe('processed after 2 attempt(s)');
  expect(r.timeline[0]?.result).toMatch(/^hangs, aborted after \d+ ms: HandlerTimeoutError$/);
  expect(r.timeline[1]!.atMs).toBeGreaterThanOrEqual(200);
  expect(r.timeline[1]!.atMs).toBeLessThan(30_000); // the call would have answered after 60 s
});
