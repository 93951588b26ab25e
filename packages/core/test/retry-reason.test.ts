// The reason a dead letter carries once retries end (docs/design.md, "Failures"): a TypeError
// that p-retry retries (a network error of `fetch`) and that keeps failing has spent its
// retries, so it is `retries_exhausted`; only a TypeError p-retry refuses to retry is
// `non_retryable`.
import { createInbox } from '@inboxkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/support/postgres.ts';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('core_retry_reason');
});
afterAll(async () => {
  await t?.dispose();
});

const fastRetry = { retries: 3, minTimeout: 1, maxTimeout: 5, randomize: false } as const;

describe('the dead-letter reason of a TypeError', () => {
  it('a network TypeError (fetch failed) on every attempt is retried, then retries_exhausted', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'network-type-error', retry: fastRetry });
    let calls = 0;
    const outcome = await inbox.process({ id: 'n-1', payload: 'x' }, async () => {
      calls++;
      throw new TypeError('fetch failed');
    });
    expect(calls).toBe(4);
    expect(outcome).toMatchObject({ status: 'dead_letter', reason: 'retries_exhausted', attempts: 4 });
  });

  it('a programming TypeError is not retried: non_retryable after one attempt', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'plain-type-error', retry: fastRetry });
    let calls = 0;
    const outcome = await inbox.process({ id: 't-1', payload: 'x' }, async () => {
      calls++;
      throw new TypeError('undefined is not a function');
    });
    expect(calls).toBe(1);
    expect(outcome).toMatchObject({ status: 'dead_letter', reason: 'non_retryable', attempts: 1 });
  });

  it('a network TypeError past maxRetryTime is retries_exhausted too', async () => {
    const inbox = createInbox({
      db: t.db,
      consumer: 'network-type-error-time',
      retry: { retries: 1000, minTimeout: 20, maxTimeout: 20, randomize: false, maxRetryTime: 100 },
    });
    const outcome = await inbox.process({ id: 'n-2', payload: 'x' }, async () => {
      throw new TypeError('fetch failed');
    });
    expect(outcome).toMatchObject({ status: 'dead_letter', reason: 'retries_exhausted' });
    expect(outcome.status === 'dead_letter' && outcome.attempts).toBeGreaterThan(1);
  });
});
