// RabbitMQ benchmark: what the inboxkit subscriber costs over a plain amqplib consumer doing
// the same database work.
//
//   npm run bench -- rabbitmq       (or, after `pnpm run build`: node bench/rabbitmq.ts
//                                    [--messages 50000] [--prefetch 1,100] [--pool 10]
//                                    [--rounds 1] [--slices 10] [--only 'regexp of mode names']
//                                    [--sweep-pools 2,4,8,16,40] [--sweep-prefetch 50]
//                                    [--sweep-messages 10000])
//
// `messages` small persistent messages (a messageId and a ~30-byte JSON body) are published
// to a fresh durable queue for each run; the consumer then drains it with a handler that
// inserts one row per message into `bench_rows`, at each prefetch, with a pg pool of `pool`
// connections:
// - plain amqplib: the insert in its own transaction (BEGIN, INSERT, COMMIT), ack after commit;
// - inboxkit subscribe: `subscribe()` with the same insert through `trx`, a transaction per
//   message (the default);
// - inboxkit subscribe, batched: the same with `maxBatchSize` half the prefetch: deliveries
//   that arrived together share a transaction (opt-in; at prefetch 4 and up);
// - inboxkit subscribe, bulk: the same batches through `bulkHandler`, one multi-row insert
//   per batch (at prefetch 4 and up).
// Each inboxkit consumer has its hand-written twin, the same SQL by hand on the same pool:
// - hand-written dedup: the plain consumer plus the dedup insert in the same transaction
//   (the floor of any effectively-once consumer: one more statement per message), twin of
//   `subscribe`;
// - hand-written dedup, batched: deliveries that arrived together (as the subscriber groups
//   them, up to `maxBatchSize`) in one transaction: the batch's keys claimed in one
//   statement, the insert per new message, ack each; twin of `subscribe` batched.
// The pool-size sweep runs the per-message consumers (hand-written dedup and `subscribe`)
// at `sweep-prefetch` on pools of each size in `sweep-pools`, all in one interleaved run
// (`--prefetch ''` runs the sweep alone and saves bench/results/rabbitmq-pool-sweep.json).
// Diagnostic rows tell where a gap goes:
// - amqplib + inbox.process: the plain consumer calling the inbox, without the adapter.
// The clock runs from the first message handed to a handler to the last one acked. Each
// mode drains its messages in `slices` parts, the modes taking turns, so that the load of a
// shared machine falls on all of them alike; a mode's rate is its messages over its summed time. Broker:
// AMQP_URL (default the local one); Postgres: DATABASE_URL (default the local server).
// Prints a table, saves bench/results/rabbitmq.json.
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { createInbox, migrateInbox } from '@inboxkit/core';
import { createPgPool } from '@inboxkit/core/pg';
import { subscribe } from '@inboxkit/rabbitmq';
import amqplib from 'amqplib';
import { Kysely, PostgresDialect } from 'kysely';
import type pg from 'pg';
import { benchDatabase, type Figure, median, printTable, saveResults, type Target } from './support.ts';

const { values: args } = parseArgs({
  options: {
    messages: { type: 'string', default: '50000' },
    prefetch: { type: 'string', default: '1,100' },
    pool: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '1' },
    slices: { type: 'string', default: '10' },
    only: { type: 'string', default: '' },
    'sweep-pools': { type: 'string', default: '2,4,8,16,40' },
    'sweep-prefetch': { type: 'string', default: '50' },
    'sweep-messages': { type: 'string', default: '10000' },
  },
});
const SWEEP_POOLS = args['sweep-pools'] === '' ? [] : args['sweep-pools'].split(',').map(Number);
const SWEEP_PREFETCH = Number(args['sweep-prefetch']);
const SWEEP_N = Number(args['sweep-messages']);
const N = Number(args.messages);
const PREFETCHES = args.prefetch === '' ? [] : args.prefetch.split(',').map(Number);
const POOL = Number(args.pool);
const ROUNDS = Number(args.rounds);
const SLICES = Number(args.slices);
const ONLY = args.only === '' ? undefined : new RegExp(args.only);
const AMQP_URL = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

interface BenchDB {
  bench_rows: { id: string; amount: number };
}
interface Body {
  id: string;
  amount: number;
}

const INSERT = 'INSERT INTO bench_rows (id, amount) VALUES ($1, $2)';
const CLAIM = `INSERT INTO processed_messages (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1`;
const CLAIM_MANY = `INSERT INTO processed_messages (consumer, message_id)
SELECT $1, id FROM unnest($2::text[]) AS k(id) ORDER BY 1 ON CONFLICT DO NOTHING RETURNING message_id`;

// ---- setup ----------------------------------------------------------------------------------

const dbUrl = await benchDatabase('inboxkit_bench_rabbitmq');
const admin = createPgPool({ connectionString: dbUrl, max: 1 });
await admin.query('CREATE TABLE bench_rows (id text PRIMARY KEY, amount integer NOT NULL)');
{
  const { error } = await migrateInbox(new Kysely<unknown>({ dialect: new PostgresDialect({ pool: admin }) }));
  if (error) throw error;
}
const connection = await amqplib.connect(AMQP_URL, {
  clientProperties: { connection_name: 'inboxkit bench publisher' },
});
const publisher = await connection.createConfirmChannel();

async function reset(): Promise<void> {
  await admin.query('TRUNCATE bench_rows, processed_messages');
  await admin.query('VACUUM ANALYZE bench_rows');
  await admin.query('VACUUM ANALYZE processed_messages');
}

/** A fresh durable queue holding `count` persistent messages. */
async function fill(count: number): Promise<string> {
  const queue = `inboxkit.bench.${randomBytes(4).toString('hex')}`;
  await publisher.assertQueue(queue, { durable: true });
  const prefix = randomBytes(3).toString('hex');
  for (let i = 0; i < count; i++) {
    const body: Body = { id: `${prefix}-${i}`, amount: i % 1000 };
    const ok = publisher.sendToQueue(queue, Buffer.from(JSON.stringify(body)), {
      messageId: body.id,
      persistent: true,
      contentType: 'application/json',
    });
    if (!ok) await new Promise<void>((resolve) => publisher.once('drain', () => resolve()));
    if (i % 5000 === 4999) await publisher.waitForConfirms();
  }
  await publisher.waitForConfirms();
  return queue;
}

/** Counts completions; resolves with msg/s from the first start to the `count`-th done. */
function clock(count: number) {
  let first = 0;
  let done = 0;
  let finish: (rate: number) => void = () => {};
  const finished = new Promise<number>((resolve) => {
    finish = resolve;
  });
  return {
    started(): void {
      if (first === 0) first = performance.now();
    },
    completed(): void {
      done++;
      if (done === count) finish((count / (performance.now() - first)) * 1000);
    },
    finished,
  };
}

// ---- the consumers --------------------------------------------------------------------------

type Mode = (queue: string, prefetch: number, count: number, poolSize?: number) => Promise<number>;

/** A plain amqplib consumer: `work` inside BEGIN/COMMIT on a pooled client, ack after commit. */
function plainConsumer(work: (client: pg.PoolClient, body: Body) => Promise<void>): Mode {
  return async (queue, prefetch, count, poolSize = POOL) => {
    const pool = createPgPool({ connectionString: dbUrl, max: poolSize });
    const conn = await amqplib.connect(AMQP_URL);
    const channel = await conn.createChannel();
    await channel.prefetch(prefetch);
    const timer = clock(count);
    await channel.consume(queue, (message) => {
      if (message === null) return;
      timer.started();
      void (async () => {
        const body = JSON.parse(message.content.toString()) as Body;
        const client = await pool.connect();
        try {
          await client.query('BEGIN');
          await work(client, body);
          await client.query('COMMIT');
        } catch (error) {
          await client.query('ROLLBACK').catch(() => {});
          throw error;
        } finally {
          client.release();
        }
        channel.ack(message);
        timer.completed();
      })();
    });
    const rate = await timer.finished;
    await conn.close();
    await pool.end();
    return rate;
  };
}

/**
 * The inboxkit subscriber; `batchSize(prefetch)` is its `maxBatchSize`. `bulk`: its batches
 * go to a `bulkHandler` writing them with one insert.
 */
function inboxkitSubscriber(batchSize: (prefetch: number) => number, bulk = false): Mode {
  return async (queue, prefetch, count, poolSize = POOL) => {
    const pool = createPgPool({ connectionString: dbUrl, max: poolSize });
    const db = new Kysely<BenchDB>({ dialect: new PostgresDialect({ pool }) });
    const inbox = createInbox({ db, consumer: 'bench' });
    const timer = clock(count);
    // 'processed' is emitted after the commit, right before the ack.
    inbox.on('processed', () => timer.completed());
    const subscription = subscribe<BenchDB, Body, void>({
      inbox,
      url: AMQP_URL,
      queue,
      prefetch,
      maxBatchSize: Math.max(1, batchSize(prefetch)),
      decode: 'json',
      connectionName: 'inboxkit bench subscriber',
      ...(bulk
        ? {
            bulkHandler: async (trx, messages) => {
              timer.started();
              await trx
                .insertInto('bench_rows')
                .values(messages.map((message) => ({ id: message.body.id, amount: message.body.amount })))
                .execute();
            },
          }
        : {
            handler: async (trx, message) => {
              timer.started();
              await trx.insertInto('bench_rows').values({ id: message.body.id, amount: message.body.amount }).execute();
            },
          }),
    });
    const rate = await timer.finished;
    await subscription.close();
    await db.destroy();
    return rate;
  };
}

/**
 * The hand-written twin of the batched subscriber: deliveries that arrived in the same turn
 * of the event loop, up to `batchSize(prefetch)`, share a transaction (as the subscriber
 * groups them): their keys claimed in one statement, the insert per new message, COMMIT,
 * then each acked. A batch of one is the per-message transaction.
 */
function handWrittenBatched(batchSize: (prefetch: number) => number): Mode {
  return async (queue, prefetch, count, poolSize = POOL) => {
    const pool = createPgPool({ connectionString: dbUrl, max: poolSize });
    const conn = await amqplib.connect(AMQP_URL);
    const channel = await conn.createChannel();
    await channel.prefetch(prefetch);
    const timer = clock(count);
    const max = Math.max(1, batchSize(prefetch));
    let pending: amqplib.ConsumeMessage[] = [];
    let scheduled = false;
    const run = async (batch: amqplib.ConsumeMessage[]) => {
      const bodies = batch.map((message) => JSON.parse(message.content.toString()) as Body);
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        if (bodies.length === 1) {
          const body = bodies[0] as Body;
          const claimed = await client.query(CLAIM, ['bench', body.id]);
          if (claimed.rowCount === 1) await client.query(INSERT, [body.id, body.amount]);
        } else {
          const { rows } = await client.query<{ message_id: string }>(CLAIM_MANY, ['bench', bodies.map((b) => b.id)]);
          const fresh = new Set(rows.map((row) => row.message_id));
          for (const body of bodies) if (fresh.has(body.id)) await client.query(INSERT, [body.id, body.amount]);
        }
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK').catch(() => {});
        throw error;
      } finally {
        client.release();
      }
      for (const message of batch) {
        channel.ack(message);
        timer.completed();
      }
    };
    const flush = () => {
      const batch = pending.splice(0, max);
      if (pending.length > 0) schedule();
      if (batch.length > 0) void run(batch);
    };
    const schedule = () => {
      if (scheduled) return;
      scheduled = true;
      setImmediate(() => {
        scheduled = false;
        flush();
      });
    };
    await channel.consume(queue, (message) => {
      if (message === null) return;
      timer.started();
      pending.push(message);
      if (pending.length >= max) flush();
      else schedule();
    });
    const rate = await timer.finished;
    await conn.close();
    await pool.end();
    pending = [];
    return rate;
  };
}

/** Modes that only make sense at some prefetch counts. */
const BATCHED = ['inboxkit subscribe, batched', 'inboxkit subscribe, bulk', 'hand-written dedup, batched'];
const applies = (name: string, prefetch: number) => !BATCHED.includes(name) || prefetch >= 4;

const modes: Record<string, Mode> = {
  'plain amqplib': plainConsumer(async (client, body) => {
    await client.query(INSERT, [body.id, body.amount]);
  }),
  'hand-written dedup': plainConsumer(async (client, body) => {
    const claimed = await client.query(CLAIM, ['bench', body.id]);
    if (claimed.rowCount === 1) await client.query(INSERT, [body.id, body.amount]);
  }),
  'amqplib + inbox.process': async (queue, prefetch, count) => {
    const pool = createPgPool({ connectionString: dbUrl, max: POOL });
    const db = new Kysely<BenchDB>({ dialect: new PostgresDialect({ pool }) });
    const inbox = createInbox({ db, consumer: 'bench' });
    const conn = await amqplib.connect(AMQP_URL);
    const channel = await conn.createChannel();
    await channel.prefetch(prefetch);
    const timer = clock(count);
    await channel.consume(queue, (message) => {
      if (message === null) return;
      timer.started();
      void (async () => {
        const body = JSON.parse(message.content.toString()) as Body;
        const outcome = await inbox.process({ id: body.id, payload: message.content }, async (trx) => {
          await trx.insertInto('bench_rows').values({ id: body.id, amount: body.amount }).execute();
        });
        if (outcome.status !== 'processed') throw new Error(`unexpected ${outcome.status}`);
        channel.ack(message);
        timer.completed();
      })();
    });
    const rate = await timer.finished;
    await conn.close();
    await db.destroy();
    return rate;
  },
  'inboxkit subscribe': inboxkitSubscriber(() => 1),
  'hand-written dedup, batched': handWrittenBatched((prefetch) => Math.floor(prefetch / 2)),
  'inboxkit subscribe, batched': inboxkitSubscriber((prefetch) => Math.floor(prefetch / 2)),
  'inboxkit subscribe, bulk': inboxkitSubscriber((prefetch) => Math.floor(prefetch / 2), true),
};
/** Each inboxkit consumer's hand-written twin. */
const TWINS: Record<string, string> = {
  'inboxkit subscribe': 'hand-written dedup',
  'inboxkit subscribe, batched': 'hand-written dedup, batched',
};
const MAIN = ['plain amqplib', 'inboxkit subscribe', 'hand-written dedup'];

// ---- runs -----------------------------------------------------------------------------------

const rates = new Map<string, number[]>(); // `${mode} @${prefetch}` -> rate per round
const perRoundRatios = new Map<string, number[]>(); // `${mode} @${prefetch}` -> plain/inboxkit rate ratio per round
const selected = Object.keys(modes).filter((name) => ONLY === undefined || ONLY.test(name) || MAIN.includes(name));

// Warm up the JIT and the connections on a small queue per mode (not measured).
for (const name of selected) {
  await reset();
  const queue = await fill(2_000);
  // (warm-up at prefetch 100)
  await (modes[name] as Mode)(queue, 100, 2_000);
  await publisher.deleteQueue(queue);
}

/**
 * Drains `total` messages per mode in `SLICES` slices taken by turns (the mode order
 * rotates), so that the load of a shared machine falls on every mode alike; returns each
 * mode's rate (its messages over its summed time).
 */
async function interleaved(
  names: readonly string[],
  prefetch: number,
  total: number,
  poolSize: number | ((name: string) => number),
  label: string,
): Promise<Map<string, number>> {
  const slice = Math.ceil(total / SLICES);
  const seconds = new Map<string, number>(names.map((name) => [name, 0]));
  for (let part = 0; part < SLICES; part++) {
    const count = Math.min(slice, total - part * slice);
    if (count <= 0) break;
    const order = names.map((_, i) => names[(i + part) % names.length] as string);
    for (const name of order) {
      await reset();
      const queue = await fill(count);
      const pool = typeof poolSize === 'number' ? poolSize : poolSize(name);
      const mode = modes[name.replace(/ \(pool \d+\)$/, '')] as Mode;
      const rate = await mode(queue, prefetch, count, pool);
      await publisher.deleteQueue(queue);
      const { rows } = await admin.query<{ n: string }>('SELECT count(*) AS n FROM bench_rows');
      if (Number(rows[0]?.n) !== count) throw new Error(`${name}: ${rows[0]?.n} rows, expected ${count}`);
      seconds.set(name, (seconds.get(name) ?? 0) + count / rate);
      console.error(
        `${label}, prefetch ${prefetch}, pool ${pool}, slice ${part + 1}/${SLICES}: ${name} ${Math.round(rate)} msg/s`,
      );
    }
  }
  return new Map(names.map((name) => [name, Math.round(total / (seconds.get(name) ?? Number.NaN))]));
}

const twinRatios = new Map<string, number[]>(); // `${mode} @${prefetch}` -> inboxkit/twin rate ratio per round
const loads: number[] = [loadavg()[0] ?? Number.NaN];
for (let round = 1; round <= ROUNDS; round++) {
  for (const prefetch of PREFETCHES) {
    const names = selected.filter((name) => applies(name, prefetch));
    const thisRound = await interleaved(names, prefetch, N, POOL, `round ${round}`);
    for (const [name, rate] of thisRound) {
      const key = `${name} @${prefetch}`;
      rates.set(key, [...(rates.get(key) ?? []), rate]);
    }
    const plain = thisRound.get('plain amqplib');
    for (const name of ['inboxkit subscribe', 'inboxkit subscribe, batched', 'inboxkit subscribe, bulk']) {
      const twin = TWINS[name];
      const inboxkit = thisRound.get(name);
      if (inboxkit === undefined) continue;
      const key = `${name} @${prefetch}`;
      if (plain !== undefined) perRoundRatios.set(key, [...(perRoundRatios.get(key) ?? []), plain / inboxkit]);
      const twinRate = twin === undefined ? undefined : thisRound.get(twin);
      if (twinRate !== undefined) twinRatios.set(key, [...(twinRatios.get(key) ?? []), inboxkit / twinRate]);
    }
  }
  loads.push(loadavg()[0] ?? Number.NaN);
}

// The pool-size sweep: the per-message consumers at one prefetch on pools of each size.
const sweep: Array<{ poolSize: number; prefetch: number; twin: number; inboxkit: number; ratio: number }> = [];
if (SWEEP_POOLS.length > 0) {
  // Every pool size and both consumers take turns in one interleaved run, so that a load
  // that drifts over the minutes falls on all pool sizes alike.
  const names = SWEEP_POOLS.flatMap((size) => [
    `hand-written dedup (pool ${size})`,
    `inboxkit subscribe (pool ${size})`,
  ]);
  const result = await interleaved(
    names,
    SWEEP_PREFETCH,
    SWEEP_N,
    (name) => Number(/\(pool (\d+)\)$/.exec(name)?.[1]),
    'sweep',
  );
  for (const poolSize of SWEEP_POOLS) {
    const twin = result.get(`hand-written dedup (pool ${poolSize})`) ?? Number.NaN;
    const inboxkit = result.get(`inboxkit subscribe (pool ${poolSize})`) ?? Number.NaN;
    sweep.push({ poolSize, prefetch: SWEEP_PREFETCH, twin, inboxkit, ratio: Number((inboxkit / twin).toFixed(2)) });
  }
}
loads.push(loadavg()[0] ?? Number.NaN);
await connection.close();
await admin.end();

// ---- report ---------------------------------------------------------------------------------

const figures: Figure[] = [];
for (const prefetch of PREFETCHES) {
  for (const name of selected) {
    if (!applies(name, prefetch)) continue;
    const values = rates.get(`${name} @${prefetch}`) ?? [];
    figures.push({ name: `${name} (prefetch ${prefetch})`, concurrency: prefetch, messagesPerSec: median(values) });
  }
}
const rateOf = (name: string, prefetch: number) => median(rates.get(`${name} @${prefetch}`) ?? []);
const targets: Target[] = PREFETCHES.flatMap((prefetch) =>
  ['inboxkit subscribe', ...BATCHED]
    .filter((name) => name.startsWith('inboxkit') && selected.includes(name) && applies(name, prefetch))
    .map((name) => ({
      target: `${name === 'inboxkit subscribe' ? 'inboxkit (a transaction per message)' : `inboxkit ${name === 'inboxkit subscribe, bulk' ? 'bulk' : 'batched'} (maxBatchSize ${Math.floor(prefetch / 2)})`} within 1.3x of plain amqplib at prefetch ${prefetch}`,
      value: median(perRoundRatios.get(`${name} @${prefetch}`) ?? []),
      limit: 1.3,
      higherIsBetter: false,
    })),
);
for (const prefetch of PREFETCHES) {
  for (const [name, twin] of Object.entries(TWINS)) {
    if (!selected.includes(name) || !selected.includes(twin) || !applies(name, prefetch)) continue;
    targets.push({
      target: `${name} at least 0.9x of its hand-written twin (${twin}) at prefetch ${prefetch}`,
      value: median(twinRatios.get(`${name} @${prefetch}`) ?? []),
      limit: 0.9,
      higherIsBetter: true,
    });
  }
}
const x = (value: number) => (Number.isFinite(value) ? `${value.toFixed(2)}x` : 'n/a');
const notes = [
  ...(PREFETCHES.length === 0
    ? []
    : [
        `${N} messages per mode and prefetch (in ${SLICES} interleaved slices), pg pool of ${POOL}, ${ROUNDS} round(s), median rates; ratios are medians of per-round ratios`,
      ]),
  ...PREFETCHES.map(
    (prefetch) =>
      `where the gap goes at prefetch ${prefetch}: dedup statement (hand-written) ${x(rateOf('plain amqplib', prefetch) / rateOf('hand-written dedup', prefetch))}, ` +
      `inbox.process over that ${x(rateOf('hand-written dedup', prefetch) / rateOf('amqplib + inbox.process', prefetch))}, ` +
      `adapter over inbox.process ${x(rateOf('amqplib + inbox.process', prefetch) / rateOf('inboxkit subscribe', prefetch))}`,
  ),
  ...sweep.map(
    (row) =>
      `pool ${row.poolSize} at prefetch ${row.prefetch}: hand-written dedup ${row.twin} msg/s, inboxkit subscribe ${row.inboxkit} msg/s (${row.ratio.toFixed(2)}x of the twin)`,
  ),
  `load average ${loads.map((l) => l.toFixed(1)).join(' -> ')}`,
];
printTable(figures, targets, notes);
saveResults(PREFETCHES.length === 0 ? 'rabbitmq-pool-sweep' : 'rabbitmq', {
  settings: {
    messages: N,
    prefetch: PREFETCHES,
    poolSize: POOL,
    rounds: ROUNDS,
    slices: SLICES,
    sweepPools: SWEEP_POOLS,
    sweepPrefetch: SWEEP_PREFETCH,
    sweepMessages: SWEEP_N,
    broker: AMQP_URL.replace(/\/\/[^@]*@/, '//'),
    command: `node bench/rabbitmq.ts${process.argv.slice(2).length > 0 ? ` ${process.argv.slice(2).join(' ')}` : ''}`,
  },
  figures,
  poolSweep: sweep,
  targets,
  notes,
  loadAverage: loads.map((l) => Number(l.toFixed(2))),
});
