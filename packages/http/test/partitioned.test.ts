// The idempotency layer on an inbox table partitioned by time (docs/retention.md): it claims
// through `inbox.process`, so keys are deduplicated across partitions there too, and an
// isolation level the partitioned table cannot deduplicate under is refused.
import { randomUUID } from 'node:crypto';
import { migrateInbox } from '@inboxkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/support/postgres.ts';
import { post } from './support/client.ts';
import { type Harness, startHarness } from './support/harness.ts';

const schema = 'http_partitioned';
let t: TestDatabase;
let h: Harness;
let short: Harness;
beforeAll(async () => {
  t = await createTestDatabase('http_partitioned');
  const { error } = await migrateInbox(t.db, { schema, partitioned: { intervalMs: 86_400_000 } });
  if (error) throw error;
  h = await startHarness('fetch', t.db, { schema, inFlightWaitMs: 10_000 });
  short = await startHarness('fetch', t.db, { schema, inFlightWaitMs: 150, retryAfterSeconds: 2 });
});
afterAll(async () => {
  await h?.close();
  await short?.close();
  await t?.dispose();
});

describe('a partitioned inbox table behind the idempotency layer', () => {
  it('20 concurrent requests with one key: one business row, 19 identical replays', async () => {
    const key = randomUUID();
    const rows = await t.countCharges();
    const replies = await Promise.all(
      Array.from({ length: 20 }, () => post(h.url, '/slow?ms=300', { key, body: { amountCents: 20 } })),
    );
    expect(replies.map((r) => r.status)).toEqual(Array(20).fill(201));
    expect(replies.filter((r) => r.headers.get('idempotent-replayed') === 'true')).toHaveLength(19);
    expect(new Set(replies.map((r) => r.text)).size).toBe(1);
    expect(h.runs.get('/slow')).toBe(1);
    expect(await t.countCharges()).toBe(rows + 1);
  });

  it('with a short wait, the requests behind the key in flight get 409 and the handler runs once', async () => {
    const key = randomUUID();
    const rows = await t.countCharges();
    const replies = await Promise.all(
      Array.from({ length: 5 }, () => post(short.url, '/slow?ms=1500', { key, body: { amountCents: 20 } })),
    );
    expect(replies.filter((r) => r.status === 201)).toHaveLength(1);
    expect(replies.filter((r) => r.status === 409)).toHaveLength(4);
    expect(short.runs.get('/slow')).toBe(1);
    expect(await t.countCharges()).toBe(rows + 1);
  });

  it('refuses REPEATABLE READ on it: the handler never runs', async () => {
    const rr = await startHarness('fetch', t.db, { schema, isolationLevel: 'repeatable read' });
    try {
      const rows = await t.countCharges();
      const reply = await post(rr.url, '/charges', { key: randomUUID(), body: { amountCents: 5 } });
      expect(reply.status).toBeGreaterThanOrEqual(500);
      expect(rr.runs.get('/charges') ?? 0).toBe(0);
      expect(await t.countCharges()).toBe(rows);
    } finally {
      await rr.close();
    }
  });
});
