// Options, key syntax, registration-time refusals, fingerprint and scope settings, and an
// unreachable database.
import { randomUUID } from 'node:crypto';
import { ConfigurationError, hasCode, InboxError } from '@inboxkit/core';
import { createPgKysely } from '@inboxkit/core/pg';
import {
  createIdempotency,
  IdempotencyKeyMissingError,
  IdempotencyProblemError,
  idempotent,
  readIdempotencyKey,
  StreamingResponseError,
} from '@inboxkit/http';
import {
  type ExpressRequestLike,
  idempotent as expressIdempotent,
  transactionOf as expressTransactionOf,
  keepRawBody,
} from '@inboxkit/http/express';
import { fastifyIdempotency, transactionOf } from '@inboxkit/http/fastify';
import express from 'express';
import express4 from 'express4';
import Fastify from 'fastify';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase, type TestDB } from '../../../test/support/postgres.ts';
import { post, waitFor } from './support/client.ts';
import { listenExpress, serveFetch } from './support/harness.ts';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('http_options');
});
afterAll(async () => {
  await t?.dispose();
});

describe('options are checked at construction, and errors name the option', () => {
  it.each([
    [{}, /`db`/],
    [{ db: 'nope' }, /`db`/],
    [{ lockTimeoutMs: 5 }, /Unknown option `lockTimeoutMs`/],
    [{ inFlightWaitMs: -1 }, /`inFlightWaitMs`/],
    [{ retentionMs: 1.5 }, /`retentionMs`/],
    [{ handlerTimeoutMs: 0 }, /`handlerTimeoutMs`/],
    [{ handlerTimeoutMs: 2000, retentionMs: 2000 }, /`retentionMs` \(2000 ms\).*`handlerTimeoutMs` \(2000 ms\)/],
    [{ principal: true }, /`principal`/],
    [{ retryAfterSeconds: 0 }, /`retryAfterSeconds`/],
    [{ mismatchStatus: 418 }, /`mismatchStatus`/],
    [{ keyWhenMissing: 'hash' }, /`keyWhenMissing`.*'reject'.*'derive'/],
    [{ keyWhenMissing: true }, /`keyWhenMissing`/],
    [{ storedHeaders: ['content-length'] }, /`storedHeaders`.*content-length/],
    [{ storedHeaders: 'location' }, /`storedHeaders`/],
    [{ headerName: 'bad header' }, /`headerName`/],
    [{ replayHeader: 'x y' }, /`replayHeader`/],
    [{ fingerprint: { query: true } }, /`fingerprint.query`/],
    [{ fingerprint: { body: 'yes' } }, /`fingerprint.body`/],
    [{ principal: 'user' }, /`principal`/],
    [{ route: '/charges' }, /`route`/],
    [{ problemTypeBase: 'not a uri' }, /`problemTypeBase`/],
    [{ consumer: '' }, /`consumer`/],
    [{ table: 'x; drop table y' }, /`table`/],
  ])('%j', (options, message) => {
    const withDb = 'db' in options || Object.keys(options).length === 0 ? options : { db: t.db, ...options };
    expect(() => createIdempotency(withDb as never)).toThrow(ConfigurationError);
    expect(() => createIdempotency(withDb as never)).toThrow(message);
  });

  it('checks route options and names them with their prefix', () => {
    const store = createIdempotency({ db: t.db, principal: false });
    expect(() => store.route({ mismatchStatus: 400 as 422 })).toThrow(/`route.mismatchStatus`/);
    expect(() => store.route({ fingerprint: { headers: ['ok', 'not ok'] } })).toThrow(/`route.fingerprint.headers`/);
    expect(() => store.route({ colour: 'red' } as never)).toThrow(/Unknown option `route.colour`/);
    expect(store.route({ route: '/x', mismatchStatus: 409 })).toMatchObject({ route: '/x', mismatchStatus: 409 });
    expect(() => store.route({ keyWhenMissing: 'always' as 'derive' })).toThrow(/`route.keyWhenMissing`/);
    expect(() => expressIdempotent(store as never, { keyWhenMissing: 'on' as 'derive' })).toThrow(
      /`route.keyWhenMissing`/,
    );
    expect(() =>
      idempotent(async () => new Response('x'), { idempotency: store, keyWhenMissing: 'sometimes' as never }),
    ).toThrow(/`route.keyWhenMissing`/);
  });

  it("keyWhenMissing is 'reject' by default, may be a store-wide default, and a route overrides it", () => {
    expect(createIdempotency({ db: t.db, principal: false }).route().keyWhenMissing).toBe('reject');
    const deriving = createIdempotency({ db: t.db, principal: false, keyWhenMissing: 'derive' });
    expect(deriving.route().keyWhenMissing).toBe('derive');
    expect(deriving.route({ keyWhenMissing: 'reject' }).keyWhenMissing).toBe('reject');
  });

  it('gives errors stable codes on core InboxError', () => {
    const error = new IdempotencyKeyMissingError('Idempotency-Key');
    expect(error).toBeInstanceOf(InboxError);
    expect(error).toBeInstanceOf(IdempotencyProblemError);
    expect(error.name).toBe('IdempotencyKeyMissingError');
    expect(hasCode(error, 'INBOX_HTTP_KEY_MISSING')).toBe(true);
    expect(new StreamingResponseError('x').code).toBe('INBOX_HTTP_STREAMING_RESPONSE');
  });
});

describe('principal: the safe choice is the easy one', () => {
  const handler = async () => new Response('ok');

  it('a route with no `principal` is refused at construction, naming the option and the opt-out', async () => {
    const expected = /`principal`.*`principal: false`/s;
    expect(() => idempotent(handler, { db: t.db })).toThrow(ConfigurationError);
    expect(() => idempotent(handler, { db: t.db })).toThrow(expected);
    expect(() => createIdempotency({ db: t.db }).route()).toThrow(expected);
    expect(() => expressIdempotent({ db: t.db })).toThrow(expected);
    const app = Fastify();
    await app.register(fastifyIdempotency, { db: t.db });
    expect(() => app.post('/charges', { config: { idempotency: true } }, async () => 'x')).toThrow(
      /POST \/charges: .*`principal`/s,
    );
    await app.close();
  });

  it('`principal: false` (for the store or one route) opts out, and a route may still give its own', () => {
    expect(createIdempotency({ db: t.db, principal: false }).route().principal).toBe(false);
    expect(createIdempotency({ db: t.db }).route({ principal: false }).principal).toBe(false);
    const resolver = () => 'user-1';
    expect(createIdempotency({ db: t.db, principal: false }).route({ principal: resolver }).principal).toBe(resolver);
    expect(() => idempotent(handler, { db: t.db, principal: false })).not.toThrow();
  });
});

describe('inFlightWaitMs', () => {
  it.each([
    [7000, '7s'],
    [5, '5ms'],
  ])(
    "is the lock_timeout of the handler's statements (%i ms), though the key's claim waits 10 ms at most",
    async (inFlightWaitMs, shown) => {
      const handler = idempotent<TestDB>(
        async (trx) => {
          const { rows } = await sql<{ value: string }>`SELECT current_setting('lock_timeout') AS value`.execute(trx);
          return Response.json(rows[0]);
        },
        { db: t.db, consumer: `lock-timeout-${inFlightWaitMs}`, principal: false, inFlightWaitMs },
      );
      const s = await serveFetch(handler);
      expect((await post(s.url, '/a', { key: randomUUID() })).json()).toEqual({ value: shown });
      await s.close();
    },
  );
});

describe('retentionMs, as HTTP needs it', () => {
  it('accepts a short window (1.5 s); a key older than that runs as new, even with another body', async () => {
    let runs = 0;
    const handler = idempotent<TestDB>(async () => Response.json({ run: ++runs }), {
      db: t.db,
      consumer: 'short-retention',
      principal: false,
      retentionMs: 1500,
    });
    const s = await serveFetch(handler);
    const key = randomUUID();
    const first = await post(s.url, '/a', { key });
    expect((await post(s.url, '/a', { key })).headers.get('idempotent-replayed')).toBe('true');
    const stored = Date.now();
    await waitFor('the key to expire', () => Date.now() - stored > 1600);
    const again = await post(s.url, '/a', { key, body: { amountCents: 5 } });
    expect(again.status).toBe(200);
    expect(again.headers.get('idempotent-replayed')).toBeNull();
    expect(again.text).not.toBe(first.text);
    expect(runs).toBe(2);
    await s.close();
  });

  it('refuses a window no longer than handlerTimeoutMs, with a message about requests, not message retries', () => {
    const make = () => createIdempotency({ db: t.db, retentionMs: 1000, handlerTimeoutMs: 5000 });
    expect(make).toThrow(ConfigurationError);
    expect(make).toThrow(/`retentionMs`/);
    expect(make).not.toThrow(/retry span|retry options|7 days/i);
  });
});

describe('the key', () => {
  it.each([
    ['8e03978e-40d5-43e8-bc93-6894a57f9324', '8e03978e-40d5-43e8-bc93-6894a57f9324'],
    ['"8e03978e-40d5-43e8-bc93-6894a57f9324"', '8e03978e-40d5-43e8-bc93-6894a57f9324'],
    ['"a\\"b\\\\c"', 'a"b\\c'],
    ['k', 'k'],
    ['~!#$%&*+-.^_`|', '~!#$%&*+-.^_`|'],
    // RFC 8941 parameters after the sf-string are allowed and ignored (the draft's syntax is an Item).
    ['"k1";a=1', 'k1'],
    ['"k1"; a=1;b', 'k1'],
    ['"k1";a="x;y\\"z";b=?0;c=:aGk=:;d=-1.5;e=tok/en:x;*f=2', 'k1'],
    ['  "k1";a=1  ', 'k1'],
  ])('reads %s', (header, key) => {
    expect(readIdempotencyKey(header, 'Idempotency-Key', 255)).toEqual({ key });
  });

  it.each([
    [undefined, 'INBOX_HTTP_KEY_MISSING'],
    ['', 'INBOX_HTTP_KEY_INVALID'],
    ['""', 'INBOX_HTTP_KEY_INVALID'],
    ['"a b"', 'INBOX_HTTP_KEY_INVALID'],
    ['"a\\x"', 'INBOX_HTTP_KEY_INVALID'],
    ['"ab"c', 'INBOX_HTTP_KEY_INVALID'],
    ['tab\there', 'INBOX_HTTP_KEY_INVALID'],
    ['x'.repeat(256), 'INBOX_HTTP_KEY_INVALID'],
    [['a', 'b'], 'INBOX_HTTP_KEY_INVALID'],
    ['"k1";', 'INBOX_HTTP_KEY_INVALID'],
    ['"k1";A=1', 'INBOX_HTTP_KEY_INVALID'],
    ['"k1";a=', 'INBOX_HTTP_KEY_INVALID'],
    ['"k1";a="x', 'INBOX_HTTP_KEY_INVALID'],
    ['"k1" x', 'INBOX_HTTP_KEY_INVALID'],
    ['"k1";a=1.23456', 'INBOX_HTTP_KEY_INVALID'],
  ])('refuses %j', (header, code) => {
    expect(readIdempotencyKey(header, 'Idempotency-Key', 255).error?.code).toBe(code);
  });
});

describe('Fastify registration', () => {
  it('refuses a safe method marked idempotent, and bad route options, naming the route', async () => {
    const app = Fastify();
    await app.register(fastifyIdempotency, { db: t.db });
    expect(() => app.get('/things', { config: { idempotency: true } }, async () => 'x')).toThrow(
      /GET \/things.*POST and PATCH/,
    );
    expect(() =>
      app.post('/charges', { config: { idempotency: { mismatchStatus: 400 as 422 } } }, async () => 'x'),
    ).toThrow(/POST \/charges: Expected `route.mismatchStatus`/);
    expect(() =>
      app.post('/payments', { config: { idempotency: { keyWhenMissing: 'yes' as 'derive' } } }, async () => 'x'),
    ).toThrow(/POST \/payments: Expected `route.keyWhenMissing`/);
    app.post('/free', async () => 'not idempotent');
    await app.ready();
    await app.close();
  });

  it('leaves routes without the option alone, and transactionOf() outside an idempotent handler throws', async () => {
    const app = Fastify();
    await app.register(fastifyIdempotency, { db: t.db });
    app.post('/free', async (request) => {
      try {
        transactionOf(request);
        return 'no error';
      } catch (error) {
        return (error as InboxError).code;
      }
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as { port: number };
    const reply = await post(`http://127.0.0.1:${port}`, '/free');
    expect(reply.status).toBe(200);
    expect(reply.text).toBe('INBOX_HTTP_NO_CONTEXT');
    await app.close();
  });
});

describe('fingerprint and scope settings (Fetch handler behind node:http)', () => {
  async function serve(options: Parameters<typeof idempotent<TestDB>>[1]) {
    let runs = 0;
    const handler = idempotent<TestDB>(
      async (trx) => {
        runs++;
        await trx.insertInto('ledger').values({ charge_id: 'x', amount_cents: 1 }).execute();
        return Response.json({ run: runs });
      },
      { principal: false, ...options },
    );
    const server = await serveFetch(handler);
    return { ...server, runs: () => runs };
  }

  it('fingerprint.body: false makes a different body with the same key a replay', async () => {
    const s = await serve({ db: t.db, consumer: 'fp-body', fingerprint: { body: false } });
    const key = randomUUID();
    await post(s.url, '/a', { key, body: { n: 1 } });
    const second = await post(s.url, '/a', { key, body: { n: 2 } });
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect(s.runs()).toBe(1);
    await s.close();
  });

  it('fingerprint.headers makes a header count, and the path with its query string counts by default', async () => {
    const s = await serve({ db: t.db, consumer: 'fp-headers', route: '/a', fingerprint: { headers: ['x-tenant'] } });
    const key = randomUUID();
    await post(s.url, '/a', { key, headers: { 'x-tenant': 't1' } });
    expect((await post(s.url, '/a', { key, headers: { 'x-tenant': 't2' } })).status).toBe(422);
    expect((await post(s.url, '/a?x=1', { key, headers: { 'x-tenant': 't1' } })).status).toBe(422);
    expect((await post(s.url, '/a', { key, headers: { 'x-tenant': 't1' } })).status).toBe(200);
    expect(s.runs()).toBe(1);
    await s.close();
  });

  it('scopeByRoute: false shares a key across routes, so another route with it is a reuse', async () => {
    const s = await serve({ db: t.db, consumer: 'scope-global', scopeByRoute: false });
    const key = randomUUID();
    expect((await post(s.url, '/a', { key })).status).toBe(200);
    const other = await post(s.url, '/b', { key });
    expect(other.status).toBe(422);
    expect(s.runs()).toBe(1);
    await s.close();
  });

  it('headerName, replayHeader: false and problemTypeBase change the wire format', async () => {
    const s = await serve({
      db: t.db,
      consumer: 'wire',
      headerName: 'X-Request-Key',
      replayHeader: false,
      problemTypeBase: 'https://developer.example.com/idempotency#',
    });
    const missing = await post(s.url, '/a', { headers: { 'idempotency-key': 'ignored' } });
    expect(missing.status).toBe(400);
    expect(missing.json()).toMatchObject({ type: 'https://developer.example.com/idempotency#key-missing' });
    expect((missing.json() as { detail: string }).detail).toContain('X-Request-Key');
    const key = randomUUID();
    const first = await post(s.url, '/a', { headers: { 'x-request-key': key } });
    const second = await post(s.url, '/a', { headers: { 'x-request-key': key } });
    expect(second.text).toBe(first.text);
    expect(second.headers.get('idempotent-replayed')).toBeNull();
    expect(s.runs()).toBe(1);
    await s.close();
  });

  it('a principal resolver that returns something other than a string fails the request, storing nothing', async () => {
    const s = await serve({ db: t.db, consumer: 'bad-principal', principal: () => 42 as unknown as string });
    const reply = await post(s.url, '/a', { key: randomUUID() });
    expect(reply.status).toBe(500);
    expect(reply.text).toContain('principal');
    expect(s.runs()).toBe(0);
    await s.close();
  });

  it('text/event-stream is refused as a streaming body', async () => {
    const handler = idempotent<TestDB>(
      async () => new Response('data: 1\n\n', { headers: { 'content-type': 'text/event-stream' } }),
      { db: t.db, consumer: 'sse', principal: false },
    );
    const s = await serveFetch(handler);
    const reply = await post(s.url, '/events', { key: randomUUID() });
    expect(reply.status).toBe(500);
    expect(reply.json()).toMatchObject({ code: 'INBOX_HTTP_STREAMING_RESPONSE' });
    await s.close();
  });
});

describe("the store's inbox events", () => {
  it('show an unstored 5xx as a non-retryable dead-letter outcome named UnstoredResponse, and a stored answer as processed', async () => {
    const idempotency = createIdempotency<TestDB>({ db: t.db, consumer: 'events', principal: false });
    const seen: string[] = [];
    idempotency.inbox.on('deadLetter', ({ reason, error }) => seen.push(`deadLetter ${reason} ${error.name}`));
    idempotency.inbox.on('processed', () => seen.push('processed'));
    const handler = idempotent<TestDB>(
      async (_trx, request) => new Response('{}', { status: new URL(request.url).pathname === '/fail' ? 503 : 201 }),
      { idempotency },
    );
    const s = await serveFetch(handler);
    expect((await post(s.url, '/fail', { key: randomUUID() })).status).toBe(503);
    expect((await post(s.url, '/ok', { key: randomUUID() })).status).toBe(201);
    expect(seen).toEqual(['deadLetter non_retryable UnstoredResponse', 'processed']);
    await s.close();
  });
});

describe('an unreachable database', () => {
  it('answers 503 with Retry-After, without running the handler', async () => {
    const db = createPgKysely<TestDB>({ connectionString: 'postgres://postgres@127.0.0.1:1/none', max: 1 });
    let runs = 0;
    const handler = idempotent<TestDB>(
      async () => {
        runs++;
        return new Response('ran');
      },
      { db, retryAfterSeconds: 7, principal: false },
    );
    const s = await serveFetch(handler);
    const reply = await post(s.url, '/a', { key: randomUUID() });
    expect(reply.status).toBe(503);
    expect(reply.headers.get('retry-after')).toBe('7');
    expect(reply.json()).toMatchObject({ code: 'INBOX_HTTP_STORE_UNAVAILABLE', status: 503 });
    expect(runs).toBe(0);
    await s.close();
    await db.destroy();
  });
});

describe.each([
  ['Express 4', express4],
  ['Express 5', express],
])("%s: keyWhenMissing 'derive' hashes the body's bytes, which the body parser must keep", (_label, expressModule) => {
  async function serve(parser: express.RequestHandler) {
    const consumer = `derive-${randomUUID().slice(0, 8)}`;
    let runs = 0;
    const store = createIdempotency<TestDB, ExpressRequestLike>({ db: t.db, consumer, principal: false });
    const app = expressModule();
    app.post('/payments', parser, expressIdempotent(store, { keyWhenMissing: 'derive' }), async (req, res) => {
      runs++;
      await expressTransactionOf<TestDB>(req)
        .insertInto('ledger')
        .values({ charge_id: consumer, amount_cents: 1 })
        .execute();
      res.status(201).json({ run: runs });
    });
    const server = await listenExpress(app as never);
    return { ...server, runs: () => runs };
  }

  it('answers 500 key-underivable to a keyless request when the parsed body is all there is, and runs nothing', async () => {
    const s = await serve(expressModule.json());
    const reply = await post(s.url, '/payments', { body: { paymentId: randomUUID() } });
    expect(reply.status).toBe(500);
    expect(reply.json()).toMatchObject({ code: 'INBOX_HTTP_KEY_UNDERIVABLE', status: 500 });
    expect((reply.json() as { detail: string }).detail).toContain('send an Idempotency-Key header');
    expect((await post(s.url, '/payments', { key: randomUUID() })).status).toBe(201);
    // A request without a body needs no bytes kept.
    const empty = async () => (await fetch(`${s.url}/payments`, { method: 'POST' })).headers.get('idempotent-replayed');
    expect(await empty()).toBeNull();
    expect(await empty()).toBe('true');
    expect(s.runs()).toBe(2);
    await s.close();
  });

  it('derives from the bytes kept by keepRawBody, or the Buffer of express.raw()', async () => {
    for (const parser of [expressModule.json({ verify: keepRawBody }), expressModule.raw({ type: '*/*' })]) {
      const s = await serve(parser);
      const id = randomUUID();
      const first = await post(s.url, '/payments', { rawBody: `{"paymentId":"${id}"}` });
      expect(first.status).toBe(201);
      const retry = await post(s.url, '/payments', { rawBody: `{"paymentId":"${id}"}` });
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
      expect(retry.text).toBe(first.text);
      const spaced = await post(s.url, '/payments', { rawBody: `{"paymentId": "${id}"}` });
      expect(spaced.headers.get('idempotent-replayed')).toBeNull();
      expect(s.runs()).toBe(2);
      await s.close();
    }
  });
});

describe("Fastify: the derived key sees the bytes after the route's own preParsing hooks", () => {
  it("keeps a route's preParsing hook and derives from what the parser reads", async () => {
    const app = Fastify();
    await app.register(fastifyIdempotency, {
      db: t.db,
      consumer: `fastify-derive-${randomUUID()}`,
      principal: false,
    });
    let hooked = 0;
    let runs = 0;
    app.post(
      '/payments',
      {
        config: { idempotency: { keyWhenMissing: 'derive' } },
        preParsing: (_request, _reply, payload, done) => {
          hooked++;
          done(null, payload);
        },
      },
      async (request, reply) => {
        runs++;
        await transactionOf<TestDB>(request).insertInto('ledger').values({ charge_id: 'f', amount_cents: 1 }).execute();
        return reply.code(201).send({ run: runs });
      },
    );
    await app.listen({ port: 0, host: '127.0.0.1' });
    const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
    const id = randomUUID();
    const first = await post(url, '/payments', { rawBody: `{"paymentId":"${id}"}` });
    const retry = await post(url, '/payments', { rawBody: `{"paymentId":"${id}"}` });
    expect(first.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(retry.text).toBe(first.text);
    const empty = async () => (await fetch(`${url}/payments`, { method: 'POST' })).headers.get('idempotent-replayed');
    expect(await empty()).toBeNull();
    expect(await empty()).toBe('true');
    expect(runs).toBe(2);
    expect(hooked).toBe(4);
    await app.close();
  });
});
