// The behaviour of issue 7, case by case, against the Fetch handler, the Fastify plugin and
// the Express middleware alike: real HTTP servers on 127.0.0.1, real Postgres.
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/support/postgres.ts';
import { keyRows, post, type Reply, sleep } from './support/client.ts';
import { FRAMEWORKS, type Harness, startHarness } from './support/harness.ts';

let t: TestDatabase;
beforeAll(async () => {
  // pg's default pool size (10): requests waiting on a key in flight hold no connection.
  t = await createTestDatabase('http_behaviour');
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
  expect(typeof problem.title).toBe('string');
  expect(typeof problem.detail).toBe('string');
  return problem;
}

describe.each(FRAMEWORKS)('%s', (framework) => {
  let h: Harness;
  let short: Harness;
  beforeAll(async () => {
    h = await startHarness(framework, t.db, { inFlightWaitMs: 10_000 });
    short = await startHarness(framework, t.db, { inFlightWaitMs: 150, retryAfterSeconds: 2 });
  });
  afterAll(async () => {
    await h?.close();
    await short?.close();
  });
  const runs = (route: string, harness = h) => harness.runs.get(route) ?? 0;

  it('answers 400 problem+json naming the header when it is missing, without running the handler', async () => {
    const rows = await t.countCharges();
    const reply = await post(h.url, '/charges');
    const problem = expectProblem(reply, 400, 'key-missing');
    expect(problem.detail).toContain('Idempotency-Key');
    expect(problem.code).toBe('INBOX_HTTP_KEY_MISSING');
    expect(runs('/charges')).toBe(0);
    expect(await t.countCharges()).toBe(rows);
  });

  it.each([
    ['empty', ''],
    ['256 characters', 'k'.repeat(256)],
    ['a space', 'has space'],
    ['a non-ASCII character', 'clé'],
    ['an unterminated sf-string', '"abc'],
    ['two header fields', ['k1', 'k2']],
  ])('answers 400 to a key that is %s', async (_what, key) => {
    const before = runs('/charges');
    const reply = await post(h.url, '/charges', { key });
    const problem = expectProblem(reply, 400, 'key-invalid');
    expect(problem.code).toBe('INBOX_HTTP_KEY_INVALID');
    expect(runs('/charges')).toBe(before);
  });

  it('accepts a key of 255 visible ASCII characters, and the sf-string form of a key as the same key', async () => {
    const long = `${'k'.repeat(219)}${newKey()}`;
    expect(long).toHaveLength(255);
    expect((await post(h.url, '/charges', { key: long })).status).toBe(201);
    const key = newKey();
    const first = await post(h.url, '/charges', { key });
    const quoted = await post(h.url, '/charges', { key: `"${key}"` });
    expect(quoted.headers.get('idempotent-replayed')).toBe('true');
    expect(quoted.text).toBe(first.text);
  });

  it('reads an sf-string key with parameters as the key, the parameters ignored', async () => {
    const key = newKey();
    const first = await post(h.url, '/charges', { key: `"${key}";a=1` });
    expect(first.status).toBe(201);
    const again = await post(h.url, '/charges', { key: `"${key}"; v=?1;by="x;y";n=-1.5;t=tok/en` });
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(again.text).toBe(first.text);
    const bare = await post(h.url, '/charges', { key });
    expect(bare.headers.get('idempotent-replayed')).toBe('true');
  });

  it('runs a new key once and stores status, the headers that matter and the body with it, in the same transaction', async () => {
    const key = newKey();
    const rows = await t.countCharges();
    const reply = await post(h.url, '/charges', { key, body: { userId: 'u-new', amountCents: 1234 } });
    expect(reply.status).toBe(201);
    expect(reply.headers.get('idempotent-replayed')).toBeNull();
    const charge = reply.json() as { id: string; amountCents: number; run: number };
    expect(charge.amountCents).toBe(1234);
    expect(reply.headers.get('location')).toBe(`/charges/${charge.id}`);
    expect(reply.headers.get('set-cookie')).toContain('seen=');
    expect(await t.countCharges()).toBe(rows + 1);
    const [row, ...others] = await keyRows(t, h.consumer, key);
    expect(others).toHaveLength(0);
    expect(row?.message_id).toBe(JSON.stringify([null, 'POST', '/charges', key]));
    expect(row?.result?.status).toBe(201);
    expect(row?.result?.body).toBe(reply.text);
    const stored = Object.fromEntries(row?.result?.headers ?? []);
    expect(stored.location).toBe(`/charges/${charge.id}`);
    expect(stored['content-type']).toMatch(/^application\/json/);
    expect(stored).not.toHaveProperty('set-cookie');
    expect(stored).not.toHaveProperty('x-run');
  });

  it('answers a completed key with the stored response, marked Idempotent-Replayed, without running the handler', async () => {
    const key = newKey();
    const rows = await t.countCharges();
    const first = await post(h.url, '/charges', { key, body: { amountCents: 700 } });
    const before = runs('/charges');
    const second = await post(h.url, '/charges', { key, body: { amountCents: 700 } });
    expect(second.status).toBe(201);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect(second.text).toBe(first.text);
    expect(second.headers.get('location')).toBe(first.headers.get('location'));
    expect(second.headers.get('content-type')).toBe(first.headers.get('content-type'));
    // Headers outside `storedHeaders` belong to the first answer only.
    expect(first.headers.get('x-run')).not.toBeNull();
    expect(second.headers.get('x-run')).toBeNull();
    expect(second.headers.get('set-cookie')).toBeNull();
    expect(runs('/charges')).toBe(before);
    expect(await t.countCharges()).toBe(rows + 1);
  });

  it('answers 422 to the same key with a different body, and 409 where the route asks for it', async () => {
    const key = newKey();
    await post(h.url, '/charges', { key, body: { amountCents: 100 } });
    const before = runs('/charges');
    const reused = await post(h.url, '/charges', { key, body: { amountCents: 999 } });
    expect(expectProblem(reused, 422, 'key-reused').code).toBe('INBOX_HTTP_KEY_REUSED');
    expect(runs('/charges')).toBe(before);

    const key409 = newKey();
    await post(h.url, '/charges-409', { key: key409, body: { amountCents: 100 } });
    expectProblem(await post(h.url, '/charges-409', { key: key409, body: { amountCents: 5 } }), 409, 'key-reused');
  });

  it('scopes keys by method and route, and by principal when the route gives one', async () => {
    const key = newKey();
    expect((await post(h.url, '/charges', { key })).status).toBe(201);
    const plain = await post(h.url, '/plain', { key });
    expect(plain.status).toBe(200);
    expect(plain.headers.get('idempotent-replayed')).toBeNull();

    const shared = newKey();
    const alice = await post(h.url, '/tenant/charges', { key: shared, headers: { 'x-user': 'alice' } });
    const bob = await post(h.url, '/tenant/charges', { key: shared, headers: { 'x-user': 'bob' } });
    expect(alice.status).toBe(201);
    expect(bob.status).toBe(201);
    expect(bob.headers.get('idempotent-replayed')).toBeNull();
    expect(bob.text).not.toBe(alice.text);
    const aliceAgain = await post(h.url, '/tenant/charges', { key: shared, headers: { 'x-user': 'alice' } });
    expect(aliceAgain.headers.get('idempotent-replayed')).toBe('true');
    expect(aliceAgain.text).toBe(alice.text);
    const ids = (await keyRows(t, h.consumer, shared)).map((row) => JSON.parse(row.message_id)[0]).sort();
    expect(ids).toEqual(['alice', 'bob']);
  });

  it('makes a request with the key of one in flight wait for it, then replays its answer', async () => {
    const key = newKey();
    const first = post(h.url, '/slow?ms=600', { key });
    await sleep(150);
    const second = await post(h.url, '/slow?ms=600', { key });
    const firstReply = await first;
    expect(firstReply.status).toBe(201);
    expect(second.status).toBe(201);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect(second.text).toBe(firstReply.text);
    expect(second.ms).toBeGreaterThan(300);
    expect(runs('/slow')).toBe(1);
  });

  it('answers 409 with Retry-After when the request in flight outlasts inFlightWaitMs, and never runs the handler twice', async () => {
    const key = newKey();
    const rows = await t.countCharges();
    const first = post(short.url, '/slow?ms=900', { key });
    await sleep(150);
    const second = await post(short.url, '/slow?ms=900', { key });
    expect(expectProblem(second, 409, 'key-in-flight').code).toBe('INBOX_HTTP_KEY_IN_FLIGHT');
    expect(second.headers.get('retry-after')).toBe('2');
    expect((await first).status).toBe(201);
    const third = await post(short.url, '/slow?ms=900', { key });
    expect(third.headers.get('idempotent-replayed')).toBe('true');
    expect(runs('/slow', short)).toBe(1);
    expect(await t.countCharges()).toBe(rows + 1);
  });

  it('stores nothing when the handler throws, and a retry with the key runs it again', async () => {
    const key = newKey();
    const rows = await t.countCharges();
    const before = runs('/fail');
    const first = await post(h.url, '/fail', { key });
    expect(first.status).toBe(500);
    expect(await keyRows(t, h.consumer, key)).toEqual([]);
    expect(await t.countCharges()).toBe(rows);
    const second = await post(h.url, '/fail', { key });
    expect(second.status).toBe(500);
    expect(runs('/fail')).toBe(before + 2);
    expect(await t.countCharges()).toBe(rows);
  });

  it('answers a 5xx as it is but stores nothing (its writes roll back), and a retry runs again', async () => {
    const key = newKey();
    const rows = await t.countCharges();
    const first = await post(h.url, '/status/503', { key });
    expect(first.status).toBe(503);
    expect(first.json()).toMatchObject({ code: 503, run: expect.any(Number) });
    expect(await keyRows(t, h.consumer, key)).toEqual([]);
    expect(await t.countCharges()).toBe(rows);
    const second = await post(h.url, '/status/503', { key });
    expect(second.headers.get('idempotent-replayed')).toBeNull();
    expect((second.json() as { run: number }).run).toBe((first.json() as { run: number }).run + 1);
  });

  it('stores a 4xx and replays it, except where storeClientErrors is false, and never a 429', async () => {
    const stored = newKey();
    const rows = await t.countCharges();
    const a = await post(h.url, '/status/404', { key: stored });
    const b = await post(h.url, '/status/404', { key: stored });
    expect(a.status).toBe(404);
    expect(b.status).toBe(404);
    expect(b.headers.get('idempotent-replayed')).toBe('true');
    expect(b.text).toBe(a.text);
    expect(await t.countCharges()).toBe(rows + 1);

    const unstored = newKey();
    const c = await post(h.url, '/status-unstored/404', { key: unstored });
    const d = await post(h.url, '/status-unstored/404', { key: unstored });
    expect(d.status).toBe(404);
    expect(d.headers.get('idempotent-replayed')).toBeNull();
    expect(d.text).not.toBe(c.text);
    expect(await keyRows(t, h.consumer, unstored)).toEqual([]);

    const limited = newKey();
    const e = await post(h.url, '/status/429', { key: limited });
    const f = await post(h.url, '/status/429', { key: limited });
    expect(f.headers.get('idempotent-replayed')).toBeNull();
    expect(f.text).not.toBe(e.text);
    expect(await t.countCharges()).toBe(rows + 1);
  });

  it('treats a key past its retention window as new, and purge deletes expired keys', async () => {
    const key = newKey();
    const first = await post(h.url, '/charges', { key });
    await sql`UPDATE processed_messages SET processed_at = now() - interval '25 hours'
      WHERE consumer = ${h.consumer} AND strpos(message_id, ${key}) > 0`.execute(t.db);
    const again = await post(h.url, '/charges', { key });
    expect(again.status).toBe(201);
    expect(again.headers.get('idempotent-replayed')).toBeNull();
    expect(again.text).not.toBe(first.text);
    const [row] = await keyRows(t, h.consumer, key);
    expect(Date.now() - (row?.processed_at.getTime() ?? 0)).toBeLessThan(60_000);

    // Expired, so new: another body under the key is a new request too, not a reuse.
    const reused = newKey();
    await post(h.url, '/charges', { key: reused, body: { amountCents: 100 } });
    await sql`UPDATE processed_messages SET processed_at = now() - interval '25 hours'
      WHERE consumer = ${h.consumer} AND strpos(message_id, ${reused}) > 0`.execute(t.db);
    const other = await post(h.url, '/charges', { key: reused, body: { amountCents: 555 } });
    expect(other.status).toBe(201);
    expect((other.json() as { amountCents: number }).amountCents).toBe(555);

    const old = newKey();
    await post(h.url, '/charges', { key: old });
    await sql`UPDATE processed_messages SET processed_at = now() - interval '25 hours'
      WHERE consumer = ${h.consumer} AND strpos(message_id, ${old}) > 0`.execute(t.db);
    expect(await h.purge()).toBeGreaterThanOrEqual(1);
    expect(await keyRows(t, h.consumer, old)).toEqual([]);
    expect(await keyRows(t, h.consumer, key)).toHaveLength(1);
  });

  it('serves a route whose handler does not use the transaction', async () => {
    const key = newKey();
    const first = await post(h.url, '/plain', { key });
    const second = await post(h.url, '/plain', { key });
    expect(first.status).toBe(200);
    expect(first.text).toMatch(/^ok \d+$/);
    expect(second.text).toBe(first.text);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
  });

  it('stores and replays a binary body byte for byte', async () => {
    const key = newKey();
    const first = await fetch(`${h.url}/binary`, { method: 'POST', headers: { 'idempotency-key': key } });
    const second = await fetch(`${h.url}/binary`, { method: 'POST', headers: { 'idempotency-key': key } });
    const expected = [0, 1, 2, 0xff, 0xfe, 0, 0x41];
    expect([...new Uint8Array(await first.arrayBuffer())]).toEqual(expected);
    expect([...new Uint8Array(await second.arrayBuffer())]).toEqual(expected);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect(second.headers.get('content-type')).toBe('application/octet-stream');
    expect((await keyRows(t, h.consumer, key))[0]?.result?.base64).toBe(true);
  });

  it('20 concurrent requests with one key: one business row, 19 identical replays', async () => {
    const key = newKey();
    const rows = await t.countCharges();
    const before = runs('/slow');
    const replies = await Promise.all(
      Array.from({ length: 20 }, () => post(h.url, '/slow?ms=300', { key, body: { amountCents: 20 } })),
    );
    expect(replies.map((r) => r.status)).toEqual(Array(20).fill(201));
    const fresh = replies.filter((r) => r.headers.get('idempotent-replayed') === null);
    const replayed = replies.filter((r) => r.headers.get('idempotent-replayed') === 'true');
    expect(fresh).toHaveLength(1);
    expect(replayed).toHaveLength(19);
    expect(new Set(replies.map((r) => r.text)).size).toBe(1);
    expect(runs('/slow')).toBe(before + 1);
    expect(await t.countCharges()).toBe(rows + 1);
  });

  it('20 concurrent requests with one key and a short wait: one business row, 19 identical 409s', async () => {
    const key = newKey();
    const rows = await t.countCharges();
    const before = runs('/slow', short);
    const replies = await Promise.all(
      Array.from({ length: 20 }, () => post(short.url, '/slow?ms=1500', { key, body: { amountCents: 20 } })),
    );
    const ok = replies.filter((r) => r.status === 201);
    const conflicts = replies.filter((r) => r.status === 409);
    expect(ok).toHaveLength(1);
    expect(conflicts).toHaveLength(19);
    expect(new Set(conflicts.map((r) => r.text)).size).toBe(1);
    for (const reply of conflicts) expect(reply.headers.get('retry-after')).toBe('2');
    expect(runs('/slow', short)).toBe(before + 1);
    expect(await t.countCharges()).toBe(rows + 1);
  });

  it('a crash between commit and answer: the connection drops, and the retry gets the stored answer', async () => {
    const key = newKey();
    const rows = await t.countCharges();
    const before = runs('/charges');
    h.dropNextAnswer();
    await expect(post(h.url, '/charges', { key })).rejects.toThrow();
    expect(await t.countCharges()).toBe(rows + 1);
    const [row] = await keyRows(t, h.consumer, key);
    expect(row?.result?.status).toBe(201);
    const retry = await post(h.url, '/charges', { key });
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(retry.text).toBe(row?.result?.body);
    expect(runs('/charges')).toBe(before + 1);
    expect(await t.countCharges()).toBe(rows + 1);
  });

  it('handles a large body: 5 MB in, 5 MB out, stored and replayed intact', async () => {
    const key = newKey();
    const data = Array.from({ length: 5 * 1024 }, (_, i) => `${i}`.padStart(8, '.').repeat(128)).join('');
    expect(data.length).toBeGreaterThan(5_000_000);
    const first = await post(h.url, '/large', { key, body: { data } });
    expect(first.status).toBe(201);
    expect((first.json() as { size: number }).size).toBe(data.length);
    const second = await post(h.url, '/large', { key, body: { data } });
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect(second.text.length).toBe(first.text.length);
    expect(second.text === first.text).toBe(true);
    const changed = await post(h.url, '/large', { key, body: { data: `${data}!` } });
    expect(changed.status).toBe(422);
  });

  it('refuses a streaming response with a clear error: rolled back, nothing stored', async () => {
    const key = newKey();
    const rows = await t.countCharges();
    const before = runs('/stream');
    const reply = await post(h.url, '/stream', { key });
    expect(reply.status).toBe(500);
    expect(reply.text).toContain('streaming body');
    expect(reply.text).toContain('INBOX_HTTP_');
    expect(await keyRows(t, h.consumer, key)).toEqual([]);
    expect(await t.countCharges()).toBe(rows);
    expect(runs('/stream')).toBe(before + 1);
  });

  describe("keyWhenMissing: 'derive' (a key derived from the request when none is sent)", () => {
    const route = '/derive/charges';
    const derivedRows = async (user: string) => {
      const { rows } = await sql<{ message_id: string }>`
        SELECT message_id FROM processed_messages
        WHERE consumer = ${h.consumer} AND message_id LIKE ${`${JSON.stringify([user, 'POST', route]).slice(0, -1)},"derived sha256:%`}`.execute(
        t.db,
      );
      return rows.map((row) => row.message_id);
    };

    it('runs a request without a key once and replays its identical retry, scoped by principal and route', async () => {
      const user = `u-${newKey()}`;
      const body = { chargeId: newKey(), amountCents: 4200 };
      const rows = await t.countCharges();
      const before = runs(route);
      const first = await post(h.url, route, { body, headers: { 'x-user': user } });
      expect(first.status).toBe(201);
      expect(first.headers.get('idempotent-replayed')).toBeNull();
      const retry = await post(h.url, route, { body, headers: { 'x-user': user } });
      expect(retry.status).toBe(201);
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
      expect(retry.text).toBe(first.text);
      expect(runs(route)).toBe(before + 1);
      expect(await t.countCharges()).toBe(rows + 1);
      const ids = await derivedRows(user);
      expect(ids).toHaveLength(1);
      expect(JSON.parse(ids[0] as string)).toEqual([
        user,
        'POST',
        route,
        expect.stringMatching(/^derived sha256:[0-9a-f]{64}$/),
      ]);
    });

    it('runs a different body anew, the same JSON with other bytes too, and another query string', async () => {
      const user = `u-${newKey()}`;
      const chargeId = newKey();
      const headers = { 'x-user': user };
      const before = runs(route);
      const first = await post(h.url, route, { rawBody: `{"chargeId":"${chargeId}","amountCents":100}`, headers });
      const other = await post(h.url, route, { rawBody: `{"chargeId":"${chargeId}","amountCents":101}`, headers });
      // The same parsed body: a key from the parsed body would make it a replay.
      const spaced = await post(h.url, route, { rawBody: `{"chargeId": "${chargeId}", "amountCents": 100}`, headers });
      const query = await post(h.url, `${route}?account=2`, {
        rawBody: `{"chargeId":"${chargeId}","amountCents":100}`,
        headers,
      });
      for (const reply of [first, other, spaced, query]) {
        expect(reply.status).toBe(201);
        expect(reply.headers.get('idempotent-replayed')).toBeNull();
      }
      expect(runs(route)).toBe(before + 4);
      expect(await derivedRows(user)).toHaveLength(4);
      const again = await post(h.url, route, { rawBody: `{"chargeId": "${chargeId}", "amountCents": 100}`, headers });
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      expect(again.text).toBe(spaced.text);
    });

    it('never shares a derived key between two principals with the same body', async () => {
      const body = { chargeId: newKey(), amountCents: 900 };
      const alice = `alice-${newKey()}`;
      const bob = `bob-${newKey()}`;
      const before = runs(route);
      const a = await post(h.url, route, { body, headers: { 'x-user': alice } });
      const b = await post(h.url, route, { body, headers: { 'x-user': bob } });
      expect(a.status).toBe(201);
      expect(b.status).toBe(201);
      expect(b.headers.get('idempotent-replayed')).toBeNull();
      expect(b.text).not.toBe(a.text);
      expect(runs(route)).toBe(before + 2);
      expect(await derivedRows(alice)).toHaveLength(1);
      expect(await derivedRows(bob)).toHaveLength(1);
    });

    it('uses a sent key as before: scoped as always, never derived, and apart from the derived key of the same body', async () => {
      const user = `u-${newKey()}`;
      const body = { chargeId: newKey(), amountCents: 300 };
      const headers = { 'x-user': user };
      const before = runs(route);
      const derived = await post(h.url, route, { body, headers });
      const key = newKey();
      const sent = await post(h.url, route, { key, body, headers });
      expect(sent.status).toBe(201);
      expect(sent.headers.get('idempotent-replayed')).toBeNull();
      expect(sent.text).not.toBe(derived.text);
      const replay = await post(h.url, route, { key, body, headers });
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(replay.text).toBe(sent.text);
      expect((await post(h.url, route, { key, body: { ...body, amountCents: 301 }, headers })).status).toBe(422);
      expect(runs(route)).toBe(before + 2);
      const [row, ...others] = await keyRows(t, h.consumer, key);
      expect(others).toHaveLength(0);
      expect(row?.message_id).toBe(JSON.stringify([user, 'POST', route, key]));
      // A bad key is the client's mistake, answered as such; it is never replaced by a derived one.
      expectProblem(await post(h.url, route, { key: '', body, headers }), 400, 'key-invalid');
      expect(runs(route)).toBe(before + 2);
    });

    it('leaves a route without the option answering 400 key-missing', async () => {
      const before = runs('/charges');
      expectProblem(await post(h.url, '/charges', { body: { chargeId: newKey() } }), 400, 'key-missing');
      expect(runs('/charges')).toBe(before);
    });
  });
});
