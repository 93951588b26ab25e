// HTTP benchmark: what the Idempotency-Key header costs a route that inserts one row.
//
//   npm run bench -- http          (or, after a build: node bench/http.ts [--duration 5] [--rounds 3])
//
// Servers (Fastify and Express, each in a child process of its own) and the load generator
// (autocannon, in this process) run on this machine on 127.0.0.1, against the Postgres in
// DATABASE_URL (default: the local server). For each framework, five modes of one route:
//
//   plain insert       no header; the handler inserts the row with one autocommit statement
//   insert in a trx    no header; the same insert inside BEGIN/COMMIT (what the handler of
//                      an idempotent route does, without the key)
//   inbox.process,     no header; the same work through core's inbox.process with a new
//   no http layer      id per request (claim, insert, store a response-sized result,
//                      commit): the floor this package builds on
//   new keys           Idempotency-Key, a new key per request: claim, insert, store the
//                      response, commit
//   replays            Idempotency-Key, one key for all requests: the stored response
//
// Modes run `rounds` times, interleaved, on emptied tables; the median is kept. Prints a
// table and saves bench/results/http.json.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { benchDatabase, type Figure, median, printTable, saveResults, type Target } from './support.ts';

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '10' },
    serve: { type: 'string' },
    url: { type: 'string' },
  },
});

interface BenchDB {
  bench_rows: { id: string; amount_cents: number };
}

/** The part of express used here. */
interface ExpressApp {
  use(handler: unknown): void;
  post(path: string, ...handlers: unknown[]): void;
  listen(port: number, host: string): Server;
}
interface ExpressLike {
  (): ExpressApp;
  json(): unknown;
}
type ExpressReq = IncomingMessage & { body?: unknown };
type ExpressRes = ServerResponse & {
  status(code: number): { json(body: unknown): void; type(type: string): { send(body: string): void } };
};

// ---------------------------------------------------------------------------------------
// Server mode: node bench/http.ts --serve fastify|express --url <database url>
// ---------------------------------------------------------------------------------------

async function serve(framework: string, url: string): Promise<void> {
  const { createPgKysely } = await import('@inboxkit/core/pg');
  const db = createPgKysely<BenchDB>({ connectionString: url, max: 10 });
  const insert = async (executor: Pick<typeof db, 'insertInto'>, amountCents: number) => {
    const id = randomUUID();
    await executor.insertInto('bench_rows').values({ id, amount_cents: amountCents }).execute();
    return { id, amountCents };
  };
  const amountOf = (body: unknown) => Number((body as { amountCents?: unknown } | undefined)?.amountCents ?? 100);
  // The same work through core's inbox.process, a new key per request, with no HTTP layer
  // on top: what @inboxkit/http adds is the difference between this and "new keys".
  const { createInbox } = await import('@inboxkit/core');
  const inbox = createInbox({ db, consumer: `bench-core-${framework}`, retry: { retries: 0 } });
  const viaCore = async (body: unknown) => {
    const outcome = await inbox.process({ id: randomUUID(), payload: JSON.stringify(body) }, async (trx) => {
      const row = await insert(trx, amountOf(body));
      return { status: 201, headers: [['content-type', 'application/json']], body: JSON.stringify(row) };
    });
    if (outcome.status !== 'processed') throw new Error(`inbox.process: ${outcome.status}`);
    return outcome.result.body;
  };
  let port: number;
  if (framework === 'fastify') {
    const { default: Fastify } = await import('fastify');
    const { fastifyIdempotency, transactionOf } = await import('@inboxkit/http/fastify');
    const app = Fastify();
    await app.register(fastifyIdempotency, { db: db as never, consumer: 'bench-fastify', principal: false });
    app.post('/plain', async (request, reply) => reply.code(201).send(await insert(db, amountOf(request.body))));
    app.post('/trx', async (request, reply) =>
      reply.code(201).send(await db.transaction().execute((trx) => insert(trx, amountOf(request.body)))),
    );
    app.post('/core', async (request, reply) =>
      reply
        .code(201)
        .type('application/json')
        .send(await viaCore(request.body)),
    );
    app.post('/idempotent', { config: { idempotency: true } }, async (request, reply) =>
      reply.code(201).send(await insert(transactionOf<BenchDB>(request), amountOf(request.body))),
    );
    await app.listen({ port: 0, host: '127.0.0.1' });
    port = (app.server.address() as { port: number }).port;
  } else {
    // express ships no types at the root; typed by the shape used here.
    const express = createRequire(import.meta.url)('express') as ExpressLike;
    const { idempotent, transactionOf } = await import('@inboxkit/http/express');
    const app = express();
    app.use(express.json());
    app.post('/plain', async (req: ExpressReq, res: ExpressRes) => {
      res.status(201).json(await insert(db, amountOf(req.body)));
    });
    app.post('/trx', async (req: ExpressReq, res: ExpressRes) => {
      res.status(201).json(await db.transaction().execute((trx) => insert(trx, amountOf(req.body))));
    });
    app.post('/core', async (req: ExpressReq, res: ExpressRes) => {
      res
        .status(201)
        .type('application/json')
        .send(await viaCore(req.body));
    });
    app.post(
      '/idempotent',
      idempotent({ db, consumer: 'bench-express', principal: false }),
      async (req: ExpressReq, res: ExpressRes) => {
        res.status(201).json(await insert(transactionOf<BenchDB>(req), amountOf(req.body)));
      },
    );
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    port = (server.address() as { port: number }).port;
  }
  console.log(`ready ${port}`);
}

if (args.serve !== undefined) {
  if (args.url === undefined) throw new Error('--serve needs --url');
  await serve(args.serve, args.url);
} else {
  await main();
}

// ---------------------------------------------------------------------------------------
// Load mode
// ---------------------------------------------------------------------------------------

/** The part of autocannon's API used here (it ships no types). */
interface AutocannonRequest {
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  body?: string;
}
interface AutocannonResult {
  readonly duration: number;
  readonly errors: number;
  readonly timeouts: number;
  readonly non2xx: number;
  readonly '2xx': number;
  readonly latency: { readonly p50: number; readonly p99: number };
}
type Autocannon = (
  options: {
    url: string;
    connections: number;
    duration: number;
    method: string;
    headers: Record<string, string>;
    body: string;
    requests?: { setupRequest?: (request: AutocannonRequest) => AutocannonRequest }[];
  },
  callback: (error: Error | null, result: AutocannonResult) => void,
) => unknown;

interface Measurement {
  readonly reqPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly failures: number;
}

async function main(): Promise<void> {
  const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;
  const duration = Number(args.duration);
  const rounds = Number(args.rounds);
  const connections = Number(args.connections);
  const url = await benchDatabase('inboxkit_bench_http');
  const { createPgKysely } = await import('@inboxkit/core/pg');
  const { migrateInbox } = await import('@inboxkit/core');
  const { sql } = await import('kysely');
  const admin = createPgKysely<BenchDB>({ connectionString: url, max: 1 });
  const { error } = await migrateInbox(admin as never);
  if (error) throw error;
  await sql`CREATE TABLE bench_rows (id text PRIMARY KEY, amount_cents integer NOT NULL)`.execute(admin);

  const frameworks = ['fastify', 'express'] as const;
  const servers = new Map<string, { port: number; child: ChildProcess }>();
  for (const framework of frameworks) servers.set(framework, await startServer(framework, url));

  const modes = [
    { mode: 'plain insert', path: '/plain', key: 'none' },
    { mode: 'insert in a trx', path: '/trx', key: 'none' },
    { mode: 'inbox.process, no http layer', path: '/core', key: 'none' },
    { mode: 'new keys', path: '/idempotent', key: 'new' },
    { mode: 'replays', path: '/idempotent', key: 'one' },
  ] as const;
  const body = JSON.stringify({ amountCents: 1250 });
  const samples = new Map<string, Measurement[]>();

  const load = (port: number, path: string, key: 'none' | 'new' | 'one', seconds: number) =>
    new Promise<Measurement>((resolve, reject) => {
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (key === 'one') headers['idempotency-key'] = `replay-${randomUUID()}`;
      const prefix = randomUUID();
      let n = 0;
      autocannon(
        {
          url: `http://127.0.0.1:${port}${path}`,
          connections,
          duration: seconds,
          method: 'POST',
          headers,
          body,
          ...(key === 'new'
            ? {
                requests: [
                  {
                    setupRequest: (request: AutocannonRequest) => ({
                      ...request,
                      headers: { ...request.headers, 'idempotency-key': `${prefix}-${n++}` },
                    }),
                  },
                ],
              }
            : {}),
        },
        (err, result) => {
          if (err) reject(err);
          else {
            resolve({
              reqPerSec: Math.round(result['2xx'] / result.duration),
              p50Ms: result.latency.p50,
              p99Ms: result.latency.p99,
              failures: result.errors + result.timeouts + result.non2xx,
            });
          }
        },
      );
    });

  const reset = async () => {
    // Requests in flight when autocannon stopped may still be running: let them finish.
    for (let attempt = 1; ; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      try {
        await sql`TRUNCATE bench_rows, processed_messages`.execute(admin);
        break;
      } catch (err) {
        if (attempt >= 10) throw err;
      }
    }
    await sql`VACUUM ANALYZE bench_rows`.execute(admin);
    await sql`VACUUM ANALYZE processed_messages`.execute(admin);
  };

  const loadBefore = loadavg().map((l) => Math.round(l * 100) / 100);
  console.log(`load average before: ${loadBefore.join(' ')} (other work on this machine skews the figures)`);
  console.log(
    `${frameworks.length} frameworks x ${modes.length} modes x ${rounds} rounds, ${duration} s each, ${connections} connections`,
  );
  for (const framework of frameworks) {
    const { port } = servers.get(framework) as { port: number };
    for (const { path, key } of modes) await load(port, path, key, 1); // warm-up
  }
  for (let round = 1; round <= rounds; round++) {
    for (const framework of frameworks) {
      const { port } = servers.get(framework) as { port: number };
      for (const { mode, path, key } of modes) {
        await reset();
        const m = await load(port, path, key, duration);
        const name = `${framework}: ${mode}`;
        samples.set(name, [...(samples.get(name) ?? []), m]);
        console.log(
          `round ${round}  ${name.padEnd(38)} ${String(m.reqPerSec).padStart(6)} req/s  p50 ${m.p50Ms} ms  p99 ${m.p99Ms} ms${m.failures > 0 ? `  FAILURES ${m.failures}` : ''}`,
        );
      }
    }
  }

  const rate = (name: string) => median((samples.get(name) ?? []).map((m) => m.reqPerSec));
  const figures: Figure[] = [...samples.keys()].map((name) => ({
    name,
    concurrency: connections,
    messagesPerSec: Math.round(rate(name)),
  }));
  const targets: Target[] = frameworks.flatMap((f) => [
    {
      target: `${f}: plain insert / new keys (new keys within 1.3x)`,
      value: rate(`${f}: plain insert`) / rate(`${f}: new keys`),
      limit: 1.3,
      higherIsBetter: false,
    },
    {
      target: `${f}: insert in a trx / new keys (like with like)`,
      value: rate(`${f}: insert in a trx`) / rate(`${f}: new keys`),
      limit: 1.3,
      higherIsBetter: false,
    },
    {
      target: `${f}: inbox.process without http / new keys (the http layer's own cost)`,
      value: rate(`${f}: inbox.process, no http layer`) / rate(`${f}: new keys`),
      limit: 1.3,
      higherIsBetter: false,
    },
    {
      target: `${f}: replays / new keys (replays faster)`,
      value: rate(`${f}: replays`) / rate(`${f}: new keys`),
      limit: 1,
      higherIsBetter: true,
    },
  ]);
  const spread = [...samples.entries()].map(([name, ms]) => {
    const rates = ms.map((m) => m.reqPerSec);
    return `${name}: ${rates.join(' / ')} req/s (spread ${Math.round(((Math.max(...rates) - Math.min(...rates)) / median(rates)) * 100)}%)`;
  });
  const notes = [
    `(msg/s above = requests/s; median of ${rounds} rounds of ${duration} s, ${connections} connections, autocannon in-process, servers in child processes, 1 Node.js process each)`,
    ...spread,
  ];
  printTable(figures, targets, notes);
  const failures = [...samples.values()].flat().reduce((sum, m) => sum + m.failures, 0);
  if (failures > 0) console.log(`\nWARNING: ${failures} requests failed or answered non-2xx`);
  saveResults('http', {
    command: `node bench/http.ts --duration ${duration} --rounds ${rounds} --connections ${connections}`,
    settings: {
      durationSec: duration,
      rounds,
      connections,
      loadGenerator: 'autocannon 9 (in-process)',
      loadAverageBefore: loadBefore,
      loadAverageAfter: loadavg().map((l) => Math.round(l * 100) / 100),
    },
    figures,
    rounds: Object.fromEntries(samples),
    targets,
    failures,
  });

  for (const { child } of servers.values()) child.kill('SIGTERM');
  await admin.destroy();
}

function startServer(framework: string, url: string): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--serve', framework, '--url', url], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = /ready (\d+)/.exec(out);
      if (match?.[1]) resolve({ port: Number(match[1]), child });
    });
    child.once('exit', (code) => reject(new Error(`${framework} server exited with ${code}: ${out}`)));
  });
}
