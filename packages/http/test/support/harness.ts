// One set of routes served three ways (the Fetch handler behind node:http, the Fastify
// plugin, the Express middleware), so that one table-driven suite runs against all three.
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { createIdempotency, type Idempotency, type IdempotencyOptions, idempotent } from '@inboxkit/http';
import {
  type ExpressRequestLike,
  idempotent as expressIdempotent,
  idempotencyOf,
  keepRawBody,
  transactionOf,
} from '@inboxkit/http/express';
import {
  fastifyIdempotency,
  idempotencyOf as fastifyIdempotencyOf,
  transactionOf as fastifyTransactionOf,
} from '@inboxkit/http/fastify';
import express from 'express';
import express4 from 'express4';
import Fastify, { type FastifyRequest } from 'fastify';
import { type Kysely, sql, type Transaction } from 'kysely';
import type { TestDB } from '../../../../test/support/postgres.ts';

/** `express4` is Express 4 (an alias in package.json), whose router drops a handler's rejected promise. */
export type Framework = 'fetch' | 'fastify' | 'express' | 'express4';
export const FRAMEWORKS: readonly Framework[] = ['fetch', 'fastify', 'express', 'express4'];

/** Store options the harness may be given (the db is its own; keys are shared, `principal: false`, but on `/tenant/charges`). */
export type HarnessOptions = Omit<IdempotencyOptions<TestDB>, 'db' | 'principal'>;

export interface Harness {
  readonly framework: Framework;
  readonly url: string;
  readonly consumer: string;
  /** Handler runs per route name. */
  readonly runs: Map<string, number>;
  /** Requests that reached the idempotency layer (its principal resolver) on `/gated/:name`. */
  readonly arrivals: Map<string, number>;
  /** The gate of `/gated/:name`: its handler inserts a row, then waits for `open()` or its signal. */
  gate(name: string): Gate;
  /** The next answer is dropped (the socket destroyed) after its transaction committed. */
  dropNextAnswer(): void;
  purge(olderThanMs?: number): Promise<number>;
  close(): Promise<void>;
}

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string | string[]>;
  readonly json: unknown;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Holds the handlers of `/gated/:name` until the test opens it. A handler gives up when
 * its signal aborts (it throws the signal's reason), unless the gate ignores signals.
 */
export class Gate {
  /** Handler calls that reached the gate. */
  entered = 0;
  /** Reasons of the signals that aborted a waiting handler. */
  readonly aborts: unknown[] = [];
  /** Handler calls that passed the open gate. */
  passed = 0;
  ignoreSignal = false;
  #open!: () => void;
  readonly #opened = new Promise<void>((resolve) => {
    this.#open = resolve;
  });

  open(): void {
    this.#open();
  }

  async wait(signal: AbortSignal | undefined): Promise<void> {
    this.entered++;
    if (this.ignoreSignal || signal === undefined) {
      await this.#opened;
    } else {
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => {
          this.aborts.push(signal.reason);
          reject(signal.reason);
        };
        if (signal.aborted) return onAbort();
        signal.addEventListener('abort', onAbort, { once: true });
        this.#opened.then(() => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        });
      });
    }
    this.passed++;
  }
}

function gates() {
  const all = new Map<string, Gate>();
  return (name: string): Gate => {
    let gate = all.get(name);
    if (gate === undefined) all.set(name, (gate = new Gate()));
    return gate;
  };
}

/**
 * The routes' business logic, framework-neutral. Each inserts one row in `charges` through
 * the transaction it is given (when it takes one) and counts its runs.
 */
function business(runs: Map<string, number>) {
  const count = (route: string) => {
    const n = (runs.get(route) ?? 0) + 1;
    runs.set(route, n);
    return n;
  };
  const insert = async (trx: Transaction<TestDB>, body: unknown, amount?: number) => {
    const input = (body ?? {}) as { userId?: string; amountCents?: number };
    const id = `ch_${randomUUID()}`;
    await trx
      .insertInto('charges')
      .values({ id, user_id: input.userId ?? 'u1', amount_cents: amount ?? input.amountCents ?? 100 })
      .execute();
    return { id, amountCents: amount ?? input.amountCents ?? 100 };
  };
  return {
    async charge(route: string, trx: Transaction<TestDB>, body: unknown, delayMs = 0): Promise<Answer> {
      const run = count(route);
      const charge = await insert(trx, body);
      if (delayMs > 0) await sleep(delayMs);
      return {
        status: 201,
        headers: {
          location: `/charges/${charge.id}`,
          'x-run': String(run),
          'set-cookie': [`seen=${run}; Path=/`],
        },
        json: { ...charge, run },
      };
    },
    async fail(route: string, trx: Transaction<TestDB>, body: unknown): Promise<never> {
      count(route);
      await insert(trx, body);
      throw new Error('handler failed on purpose');
    },
    async status(route: string, trx: Transaction<TestDB>, body: unknown, code: number): Promise<Answer> {
      const run = count(route);
      await insert(trx, body);
      return { status: code, headers: {}, json: { code, run } };
    },
    plain(route: string): string {
      return `ok ${count(route)}`;
    },
    async large(route: string, trx: Transaction<TestDB>, body: unknown): Promise<Answer> {
      const run = count(route);
      const data = String((body as { data?: unknown } | undefined)?.data ?? '');
      await insert(trx, body, data.length);
      return { status: 201, headers: {}, json: { size: data.length, run, data } };
    },
    async gated(gate: Gate, trx: Transaction<TestDB>, body: unknown, signal: AbortSignal | undefined): Promise<Answer> {
      const run = count('/gated');
      const charge = await insert(trx, body);
      await gate.wait(signal);
      return { status: 201, headers: {}, json: { ...charge, run } };
    },
    /** A statement that would run for an hour, on the key's transaction; ignores the signal. */
    async pgSleep(route: string, trx: Transaction<TestDB>): Promise<Answer> {
      const run = count(route);
      await sql`SELECT pg_sleep(3600)`.execute(trx);
      return { status: 201, headers: {}, json: { run } };
    },
    async binary(route: string, trx: Transaction<TestDB>): Promise<Uint8Array> {
      count(route);
      await insert(trx, {});
      return Uint8Array.from([0, 1, 2, 0xff, 0xfe, 0, 0x41]);
    },
    async beforeStream(route: string, trx: Transaction<TestDB>): Promise<void> {
      count(route);
      await insert(trx, {});
    },
    count,
  };
}

const principalHeader = (value: string | string[] | null | undefined) =>
  typeof value === 'string' && value.length > 0 ? value : undefined;

/** Counts the requests that reached the idempotency layer of `/gated/:name`, by name. */
function arrivalCounter(arrivals: Map<string, number>) {
  return (path: string): string => {
    const name = gateName(path);
    arrivals.set(name, (arrivals.get(name) ?? 0) + 1);
    return 'gated-client';
  };
}

function gateName(path: string): string {
  return decodeURIComponent(new URL(path, 'http://x').pathname.split('/')[2] ?? '');
}

/** What each server is given besides the db. */
interface ServerState {
  readonly runs: Map<string, number>;
  readonly arrivals: Map<string, number>;
  readonly gate: (name: string) => Gate;
  drop: boolean;
}

export async function startHarness(
  framework: Framework,
  db: Kysely<TestDB>,
  options: HarnessOptions = {},
): Promise<Harness> {
  const consumer = options.consumer ?? `http-${framework}-${randomUUID().slice(0, 8)}`;
  const state: ServerState = { runs: new Map(), arrivals: new Map(), gate: gates(), drop: false };
  const store: Idempotency<TestDB, unknown> = createIdempotency<TestDB, unknown>({ ...options, db, consumer });
  let started: { url: string; close(): Promise<void> };
  if (framework === 'fetch') started = await startFetch(db, { ...options, consumer }, state);
  else if (framework === 'fastify') started = await startFastify(db, { ...options, consumer }, state);
  else started = await startExpress(db, { ...options, consumer }, state, framework === 'express4' ? express4 : express);
  return {
    framework,
    url: started.url,
    consumer,
    runs: state.runs,
    arrivals: state.arrivals,
    gate: state.gate,
    dropNextAnswer() {
      state.drop = true;
    },
    async purge(olderThanMs) {
      const result = await store.purge(olderThanMs === undefined ? {} : { olderThanMs });
      return result.deleted;
    },
    close: started.close,
  };
}

// ---------------------------------------------------------------------------------------
// Fetch, behind a node:http bridge
// ---------------------------------------------------------------------------------------

async function startFetch(db: Kysely<TestDB>, options: HarnessOptions & { consumer: string }, state: ServerState) {
  const b = business(state.runs);
  const arrived = arrivalCounter(state.arrivals);
  const store = createIdempotency<TestDB, Request>({ principal: false, ...options, db });
  const tenant = createIdempotency<TestDB, Request>({
    ...options,
    db,
    principal: (request) => principalHeader(request.headers.get('x-user')),
  });
  const reply = (answer: Answer) => {
    const headers = new Headers();
    for (const [name, value] of Object.entries(answer.headers)) {
      for (const v of Array.isArray(value) ? value : [value]) headers.append(name, v);
    }
    headers.set('content-type', 'application/json; charset=utf-8');
    return new Response(JSON.stringify(answer.json), { status: answer.status, headers });
  };
  const json = async (request: Request): Promise<unknown> => {
    const text = await request.text();
    return text.length === 0 ? undefined : JSON.parse(text);
  };
  const routes = new Map<string, (request: Request) => Promise<Response>>([
    [
      '/charges',
      idempotent<TestDB>(async (trx, r) => reply(await b.charge('/charges', trx, await json(r))), {
        idempotency: store,
      }),
    ],
    [
      '/charges-409',
      idempotent<TestDB>(async (trx, r) => reply(await b.charge('/charges-409', trx, await json(r))), {
        idempotency: store,
        mismatchStatus: 409,
      }),
    ],
    [
      '/tenant/charges',
      idempotent<TestDB>(async (trx, r) => reply(await b.charge('/tenant/charges', trx, await json(r))), {
        idempotency: tenant,
      }),
    ],
    [
      '/derive/charges',
      idempotent<TestDB>(async (trx, r) => reply(await b.charge('/derive/charges', trx, await json(r))), {
        idempotency: tenant,
        keyWhenMissing: 'derive',
      }),
    ],
    [
      '/slow',
      idempotent<TestDB>(
        async (trx, r) =>
          reply(await b.charge('/slow', trx, await json(r), Number(new URL(r.url).searchParams.get('ms')))),
        { idempotency: store },
      ),
    ],
    ['/fail', idempotent<TestDB>(async (trx, r) => b.fail('/fail', trx, await json(r)), { idempotency: store })],
    [
      '/gated',
      idempotent<TestDB>(
        async (trx, r, context) =>
          reply(await b.gated(state.gate(gateName(r.url)), trx, await json(r), context.signal)),
        { idempotency: store, route: '/gated/:name', principal: (r) => arrived(r.url) },
      ),
    ],
    ['/pg-sleep', idempotent<TestDB>(async (trx) => reply(await b.pgSleep('/pg-sleep', trx)), { idempotency: store })],
    ['/plain', idempotent<TestDB>(async () => new Response(b.plain('/plain')), { idempotency: store })],
    [
      '/large',
      idempotent<TestDB>(async (trx, r) => reply(await b.large('/large', trx, await json(r))), { idempotency: store }),
    ],
    [
      '/binary',
      idempotent<TestDB>(
        async (trx) =>
          new Response(await b.binary('/binary', trx), { headers: { 'content-type': 'application/octet-stream' } }),
        { idempotency: store },
      ),
    ],
    [
      '/stream',
      idempotent<TestDB>(
        async (trx) => {
          await b.beforeStream('/stream', trx);
          let timer: NodeJS.Timeout | undefined;
          return new Response(
            new ReadableStream<Uint8Array>({
              start(controller) {
                timer = setTimeout(() => {
                  controller.enqueue(new TextEncoder().encode('late chunk'));
                  controller.close();
                }, 20);
              },
              cancel() {
                clearTimeout(timer);
              },
            }),
          );
        },
        { idempotency: store },
      ),
    ],
  ]);
  for (const unstored of [false, true]) {
    const prefix = unstored ? '/status-unstored' : '/status';
    const handler = idempotent<TestDB>(
      async (trx, r) =>
        reply(await b.status(prefix, trx, await json(r), Number(new URL(r.url).pathname.split('/').pop()))),
      { idempotency: store, route: `${prefix}/:code`, storeClientErrors: !unstored },
    );
    routes.set(prefix, handler);
  }
  return serveNode(async (incoming, res, body) => {
    const request = toRequest(incoming, res, body);
    const path = new URL(request.url).pathname;
    const handler = routes.get(path) ?? routes.get(path.slice(0, path.lastIndexOf('/')));
    if (handler === undefined) return new Response('not found', { status: 404 });
    try {
      return await handler(request);
    } catch (error) {
      const e = error as { message?: string; code?: string };
      return Response.json({ error: e.message, code: e.code }, { status: 500 });
    }
  }, state);
}

/** Serves a Fetch handler on 127.0.0.1 (a free port) through node:http. */
export function serveFetch(handler: (request: Request) => Promise<Response>) {
  return serveNode(
    async (incoming, res, body) => {
      try {
        return await handler(toRequest(incoming, res, body));
      } catch (error) {
        const e = error as { message?: string; code?: string };
        return Response.json({ error: e.message, code: e.code }, { status: 500 });
      }
    },
    { drop: false },
  );
}

/** The Fetch request of a node:http request; its signal aborts when the client goes away before the answer. */
function toRequest(incoming: IncomingMessage, res: ServerResponse, body: Buffer | undefined): Request {
  const headers = new Headers();
  for (let i = 0; i + 1 < incoming.rawHeaders.length; i += 2) {
    headers.append(incoming.rawHeaders[i] as string, incoming.rawHeaders[i + 1] as string);
  }
  const gone = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) gone.abort(new Error('the client went away'));
  });
  return new Request(`http://127.0.0.1${incoming.url}`, {
    method: incoming.method,
    headers,
    body,
    signal: gone.signal,
  });
}

/** Serves a Fetch handler with node:http; `state.drop` destroys the socket instead of answering. */
async function serveNode(
  handle: (incoming: IncomingMessage, res: ServerResponse, body: Buffer | undefined) => Promise<Response>,
  state: { drop: boolean },
) {
  const server = createServer((incoming, res) => {
    const chunks: Buffer[] = [];
    incoming.on('data', (chunk: Buffer) => chunks.push(chunk));
    incoming.on('end', () => {
      const body = incoming.method === 'GET' || incoming.method === 'HEAD' ? undefined : Buffer.concat(chunks);
      handle(incoming, res, body).then(async (response) => {
        if (state.drop) {
          state.drop = false;
          incoming.socket.destroy();
          return;
        }
        res.statusCode = response.status;
        response.headers.forEach((value, name) => {
          if (name !== 'set-cookie') res.setHeader(name, value);
        });
        const cookies = response.headers.getSetCookie();
        if (cookies.length > 0) res.setHeader('set-cookie', cookies);
        res.end(Buffer.from(await response.arrayBuffer()));
      });
    });
  });
  return listen(server);
}

async function listen(server: Server) {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

// ---------------------------------------------------------------------------------------
// Fastify
// ---------------------------------------------------------------------------------------

async function startFastify(db: Kysely<TestDB>, options: HarnessOptions & { consumer: string }, state: ServerState) {
  const b = business(state.runs);
  const arrived = arrivalCounter(state.arrivals);
  const app = Fastify({ bodyLimit: 64 * 1024 * 1024 });
  app.addHook('onSend', async (request, _reply, payload) => {
    if (state.drop) {
      state.drop = false;
      request.raw.socket.destroy();
    }
    return payload;
  });
  await app.register(fastifyIdempotency, { principal: false, ...options, db: db as Kysely<unknown> });
  const trx = (request: FastifyRequest) => fastifyTransactionOf<TestDB>(request);
  const send = (answer: Answer) => (_request: FastifyRequest, reply: import('fastify').FastifyReply) =>
    reply.code(answer.status).headers(answer.headers).send(answer.json);
  app.post('/charges', { config: { idempotency: true } }, async (request, reply) =>
    send(await b.charge('/charges', trx(request), request.body))(request, reply),
  );
  app.post('/charges-409', { config: { idempotency: { mismatchStatus: 409 } } }, async (request, reply) =>
    send(await b.charge('/charges-409', trx(request), request.body))(request, reply),
  );
  app.post(
    '/tenant/charges',
    { config: { idempotency: { principal: (request) => principalHeader(request.headers['x-user']) } } },
    async (request, reply) => send(await b.charge('/tenant/charges', trx(request), request.body))(request, reply),
  );
  app.post(
    '/derive/charges',
    {
      config: {
        idempotency: { principal: (request) => principalHeader(request.headers['x-user']), keyWhenMissing: 'derive' },
      },
    },
    async (request, reply) => send(await b.charge('/derive/charges', trx(request), request.body))(request, reply),
  );
  app.post<{ Querystring: { ms?: string } }>('/slow', { config: { idempotency: true } }, async (request, reply) =>
    send(await b.charge('/slow', trx(request), request.body, Number(request.query.ms)))(request, reply),
  );
  app.post('/fail', { config: { idempotency: true } }, async (request) => b.fail('/fail', trx(request), request.body));
  app.post<{ Params: { name: string } }>(
    '/gated/:name',
    { config: { idempotency: { principal: (request) => arrived(request.url) } } },
    async (request, reply) =>
      send(
        await b.gated(
          state.gate(request.params.name),
          trx(request),
          request.body,
          fastifyIdempotencyOf(request).signal,
        ),
      )(request, reply),
  );
  app.post('/pg-sleep', { config: { idempotency: true } }, async (request, reply) =>
    send(await b.pgSleep('/pg-sleep', trx(request)))(request, reply),
  );
  app.post('/plain', { config: { idempotency: true } }, async () => b.plain('/plain'));
  app.post('/large', { config: { idempotency: true } }, async (request, reply) =>
    send(await b.large('/large', trx(request), request.body))(request, reply),
  );
  app.post('/binary', { config: { idempotency: true } }, async (request, reply) =>
    reply.type('application/octet-stream').send(Buffer.from(await b.binary('/binary', trx(request)))),
  );
  app.post('/stream', { config: { idempotency: true } }, async (request, reply) => {
    await b.beforeStream('/stream', trx(request));
    return reply.send(Readable.from(['a', 'b']));
  });
  app.post<{ Params: { code: string } }>('/status/:code', { config: { idempotency: true } }, async (request, reply) =>
    send(await b.status('/status', trx(request), request.body, Number(request.params.code)))(request, reply),
  );
  app.post<{ Params: { code: string } }>(
    '/status-unstored/:code',
    { config: { idempotency: { storeClientErrors: false } } },
    async (request, reply) =>
      send(await b.status('/status-unstored', trx(request), request.body, Number(request.params.code)))(request, reply),
  );
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, close: () => app.close() };
}

// ---------------------------------------------------------------------------------------
// Express
// ---------------------------------------------------------------------------------------

async function startExpress(
  db: Kysely<TestDB>,
  options: HarnessOptions & { consumer: string },
  state: ServerState,
  expressModule: typeof express,
) {
  const b = business(state.runs);
  const arrived = arrivalCounter(state.arrivals);
  const store = createIdempotency<TestDB, ExpressRequestLike>({ principal: false, ...options, db });
  const tenant = createIdempotency<TestDB, ExpressRequestLike>({
    ...options,
    db,
    principal: (req) => principalHeader(req.headers['x-user']),
  });
  const app = expressModule();
  app.use((req, res, next) => {
    if (state.drop) {
      state.drop = false;
      Object.defineProperty(res, 'end', {
        configurable: true,
        writable: true,
        value: () => {
          req.socket.destroy();
          return res;
        },
      });
    }
    next();
  });
  app.use(expressModule.json({ limit: '64mb', verify: keepRawBody }));
  const trx = (req: express.Request) => transactionOf<TestDB>(req);
  const send = (res: express.Response, answer: Answer) =>
    res.status(answer.status).set(answer.headers).json(answer.json);
  app.post('/charges', expressIdempotent(store), async (req, res) => {
    send(res, await b.charge('/charges', trx(req), req.body));
  });
  app.post('/charges-409', expressIdempotent(store, { mismatchStatus: 409 }), async (req, res) => {
    send(res, await b.charge('/charges-409', trx(req), req.body));
  });
  app.post('/tenant/charges', expressIdempotent(tenant), async (req, res) => {
    send(res, await b.charge('/tenant/charges', trx(req), req.body));
  });
  app.post('/derive/charges', expressIdempotent(tenant, { keyWhenMissing: 'derive' }), async (req, res) => {
    send(res, await b.charge('/derive/charges', trx(req), req.body));
  });
  app.post('/slow', expressIdempotent(store), async (req, res) => {
    send(res, await b.charge('/slow', trx(req), req.body, Number(req.query.ms)));
  });
  app.post('/fail', expressIdempotent(store), async (req) => {
    await b.fail('/fail', trx(req), req.body);
  });
  app.post(
    '/gated/:name',
    expressIdempotent(store, { principal: (req) => arrived(req.originalUrl ?? req.url ?? '/') }),
    async (req, res) => {
      const gate = state.gate(String(req.params.name));
      send(res, await b.gated(gate, trx(req), req.body, idempotencyOf(req).signal));
    },
  );
  app.post('/pg-sleep', expressIdempotent(store), async (req, res) => {
    send(res, await b.pgSleep('/pg-sleep', trx(req)));
  });
  app.post('/plain', expressIdempotent(store), (_req, res) => {
    res.type('text/plain').send(b.plain('/plain'));
  });
  app.post('/large', expressIdempotent(store), async (req, res) => {
    send(res, await b.large('/large', trx(req), req.body));
  });
  app.post('/binary', expressIdempotent(store), async (req, res) => {
    res.type('application/octet-stream').send(Buffer.from(await b.binary('/binary', trx(req))));
  });
  app.post('/stream', expressIdempotent(store), async (req, res) => {
    await b.beforeStream('/stream', trx(req));
    res.write('part one');
    res.end('part two');
  });
  app.post('/status/:code', expressIdempotent(store), async (req, res) => {
    send(res, await b.status('/status', trx(req), req.body, Number(req.params.code)));
  });
  app.post('/status-unstored/:code', expressIdempotent(store, { storeClientErrors: false }), async (req, res) => {
    send(res, await b.status('/status-unstored', trx(req), req.body, Number(req.params.code)));
  });
  app.use((error: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    res.status(500).json({ error: error.message, code: (error as { code?: unknown }).code });
  });
  const server = createServer(app);
  return listen(server);
}

/** Serves an Express app (4 or 5) on 127.0.0.1, a free port. */
export function listenExpress(app: (req: IncomingMessage, res: ServerResponse) => void) {
  return listen(createServer(app));
}
