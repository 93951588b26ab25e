// How long a request may hold its transaction, pool connection and key: requests waiting
// on a key in flight, handlerTimeoutMs, a client that goes away, and Express routes that
// throw. The pool has pg's default size (10), so a request that holds a connection while
// it waits shows as another request starved.
import { randomUUID } from 'node:crypto';
import { createIdempotency } from '@inboxkit/http';
import { type ExpressRequestLike, idempotent, transactionOf } from '@inboxkit/http/express';
import express from 'express';
import express4 from 'express4';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase, type TestDB } from '../../../test/support/postgres.ts';
import { keyRows, post, type Reply, waitFor, within } from './support/client.ts';
import { FRAMEWORKS, type Harness, listenExpress, startHarness } from './support/harness.ts';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('http_lifetime');
  expect(t.pool.options.max).toBe(10);
});
afterAll(async () => {
  await t?.dispose();
});

const newKey = () => randomUUID();

function expectProblem(reply: Reply, status: number, slug: string) {
  expect(reply.status).toBe(status);
  expect(reply.headers.get('content-type')).toBe('application/problem+json');
  const problem = reply.json() as Record<string, unknown>;
  expect(problem).toMatchObject({ status, type: `tag:inboxkit.dev,2025:idempotency/${slug}` });
  return problem;
}

/** Backends of the test database (other than ours) inside a transaction, or running the hour-long sleep. */
async function busyBackends(): Promise<number> {
  const { rows } = await sql<{ n: string }>`
    SELECT count(*) AS n FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND (state LIKE 'idle in transaction%' OR query LIKE '%pg_sleep(3600)%' AND state = 'active')`.execute(t.db);
  return Number(rows[0]?.n);
}

const noBusyBackends = () =>
  waitFor('every transaction of the test database to end', async () => (await busyBackends()) === 0);

describe.each(FRAMEWORKS)('%s', (framework) => {
  let h: Harness;
  beforeAll(async () => {
    // Waiters would wait ten minutes: whatever they hold, they hold it for the whole test.
    h = await startHarness(framework, t.db, { inFlightWaitMs: 600_000 });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('25 requests waiting on a key in flight hold no pool connection: an unrelated request is answered meanwhile', async () => {
    const name = `wait-${randomUUID()}`;
    const gate = h.gate(name);
    const key = newKey();
    const rows = await t.countCharges();
    try {
      const owner = post(h.url, `/gated/${name}`, { key });
      await waitFor('the first request to reach its handler', () => gate.entered === 1);
      const waiters = Array.from({ length: 25 }, () => post(h.url, `/gated/${name}`, { key }));
      await waitFor('the 25 retries to reach the idempotency layer', () => h.arrivals.get(name) === 26);

      const unrelated = await within(
        'an unrelated request while 25 retries wait on a key',
        post(h.url, '/charges', { key: newKey() }),
        30_000,
      );
      expect(unrelated.status).toBe(201);
      expect(gate.passed).toBe(0);

      gate.open();
      const first = await owner;
      expect(first.status).toBe(201);
      const replies = await Promise.all(waiters);
      expect(replies.map((r) => r.status)).toEqual(Array(25).fill(201));
      for (const reply of replies) {
        expect(reply.headers.get('idempotent-replayed')).toBe('true');
        expect(reply.text).toBe(first.text);
      }
      expect(gate.entered).toBe(1);
      expect(await t.countCharges()).toBe(rows + 2);
    } finally {
      gate.open();
    }
  });

  it('a client that goes away aborts the signal; the handler that stops is rolled back and the key is free', async () => {
    const name = `gone-${randomUUID()}`;
    const gate = h.gate(name);
    const key = newKey();
    const rows = await t.countCharges();
    try {
      const client = new AbortController();
      const first = post(h.url, `/gated/${name}`, { key, signal: client.signal }).catch((error: unknown) => error);
      await waitFor('the request to reach its handler', () => gate.entered === 1);
      client.abort();
      expect(await first).toBeInstanceOf(Error);
      await waitFor("the handler's signal to abort", () => gate.aborts.length === 1, 30_000);
      expect(gate.aborts[0]).toMatchObject({ code: 'INBOX_HTTP_CLIENT_GONE' });
      await noBusyBackends();
      expect(await keyRows(t, h.consumer, key)).toEqual([]);

      gate.open();
      const retry = await within('the retry', post(h.url, `/gated/${name}`, { key }), 30_000);
      expect(retry.status).toBe(201);
      expect(retry.headers.get('idempotent-replayed')).toBeNull();
      expect(gate.entered).toBe(2);
      expect(await t.countCharges()).toBe(rows + 1);
    } finally {
      gate.open();
    }
  });

  it('a client that goes away: a handler that completes anyway is committed, and the retry gets its response', async () => {
    const name = `finish-${randomUUID()}`;
    const gate = h.gate(name);
    gate.ignoreSignal = true;
    const key = newKey();
    const rows = await t.countCharges();
    try {
      const client = new AbortController();
      const first = post(h.url, `/gated/${name}`, { key, signal: client.signal }).catch((error: unknown) => error);
      await waitFor('the request to reach its handler', () => gate.entered === 1);
      client.abort();
      expect(await first).toBeInstanceOf(Error);
      gate.open();
      await waitFor('the response to be stored', async () => (await keyRows(t, h.consumer, key))[0]?.result != null);
      const retry = await post(h.url, `/gated/${name}`, { key });
      expect(retry.status).toBe(201);
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
      expect(gate.entered).toBe(1);
      expect(await t.countCharges()).toBe(rows + 1);
    } finally {
      gate.open();
    }
  });

  it('handlerTimeoutMs: a statement past it is cancelled, the request rolled back and answered 503; a retry runs again', async () => {
    const timed = await startHarness(framework, t.db, { handlerTimeoutMs: 1000, retryAfterSeconds: 3 });
    try {
      const key = newKey();
      const reply = await within('a request past handlerTimeoutMs', post(timed.url, '/pg-sleep', { key }), 60_000);
      const problem = expectProblem(reply, 503, 'handler-timeout');
      expect(problem.code).toBe('INBOX_HTTP_HANDLER_TIMEOUT');
      expect(reply.headers.get('retry-after')).toBe('3');
      expect(await keyRows(t, timed.consumer, key)).toEqual([]);
      await noBusyBackends();

      // A handler that stops when its signal aborts; then the retry, with the gate open, runs.
      const name = `timeout-${randomUUID()}`;
      const gate = timed.gate(name);
      const gated = await within('a gated request past handlerTimeoutMs', post(timed.url, `/gated/${name}`, { key }));
      expectProblem(gated, 503, 'handler-timeout');
      expect(gate.aborts[0]).toMatchObject({ code: 'INBOX_HANDLER_TIMEOUT' });
      gate.open();
      const retry = await post(timed.url, `/gated/${name}`, { key });
      expect(retry.status).toBe(201);
      expect(retry.headers.get('idempotent-replayed')).toBeNull();
      expect(gate.entered).toBe(2);
    } finally {
      await timed.close();
    }
  });
});

describe.each([
  ['Express 4', express4],
  ['Express 5', express],
])('%s: a route that throws, in an app with no error handler of its own', (_label, expressModule) => {
  let url: string;
  let close: () => Promise<void>;
  let runs = 0;
  const consumer = `express-throws-${randomUUID().slice(0, 8)}`;
  beforeAll(async () => {
    const store = createIdempotency<TestDB, ExpressRequestLike>({ db: t.db, consumer, principal: false });
    const app = expressModule();
    app.use(expressModule.json());
    const insert = (req: ExpressRequestLike) =>
      transactionOf<TestDB>(req)
        .insertInto('charges')
        .values({ id: `ch_${randomUUID()}`, user_id: 'u1', amount_cents: 1 })
        .execute();
    app.post('/async-throw', idempotent(store), async (req) => {
      runs++;
      await insert(req);
      throw new Error('async route failed');
    });
    app.post('/sync-throw', idempotent(store), () => {
      runs++;
      throw new Error('sync route failed');
    });
    app.post('/next-error', idempotent(store), async (req, _res, next) => {
      runs++;
      await insert(req);
      next(new Error('passed to next'));
    });
    ({ url, close } = await listenExpress(app));
  });
  afterAll(async () => {
    await close?.();
  });

  it.each(['/async-throw', '/sync-throw', '/next-error'])(
    '%s: answered 500 problem+json, rolled back, the key free; a retry runs again',
    async (path) => {
      const key = newKey();
      const rows = await t.countCharges();
      const before = runs;
      const reply = await within(`POST ${path}`, post(url, path, { key }), 30_000);
      expect(expectProblem(reply, 500, 'handler-failed').code).toBe('INBOX_HTTP_HANDLER_FAILED');
      expect(reply.text).not.toContain('<!DOCTYPE html>');
      expect(await keyRows(t, consumer, key)).toEqual([]);
      await noBusyBackends();
      const retry = await within(`POST ${path} again`, post(url, path, { key }), 30_000);
      expect(retry.status).toBe(500);
      expect(runs).toBe(before + 2);
      expect(await t.countCharges()).toBe(rows);
    },
  );
});
