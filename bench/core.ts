// Core benchmark: what the inbox costs over the SQL it cannot avoid.
//
//   npm run bench -- core            (or, after `pnpm run build`: node bench/core.ts
//                                    [--messages 5000] [--batch-messages 50000] [--rounds 3]
//                                    [--pools 2,4,8,16] [--only 'regexp of case names'])
//
// Each mode processes deliveries whose handler inserts one business row, against the
// Postgres in DATABASE_URL (default: the local server), beside its twin: the same SQL
// written by hand with the same driver (pg) on the same pool, over the same deliveries:
// BEGIN, the dedup insert (ON CONFLICT DO NOTHING RETURNING), the business insert when the
// key is new, COMMIT (ROLLBACK on an error).
// - The realistic mix: `messages` deliveries of which 30% are redeliveries of ids already
//   processed (each at least 64 deliveries after its first, so never in flight twice);
//   `inbox.process` by default, with `duplicateFastPath`, without `fingerprintPayloads`,
//   and on a table migrated only to 0001 (no claim function: a duplicate's claim is two
//   statements).
// - No redeliveries: every delivery new.
// - A pool-size sweep at c=8 on the mix (`--pools`), twin and inbox side by side.
// - Batches: `processBatch` / `processBulk` beside their hand-written twins.
// Every case runs `rounds` times, interleaved (the order rotates each round), and the
// median is kept: these are shared 2-core machines. Ratios are inboxkit's rate over its
// twin's (>= 1.0: inboxkit at least as fast), the median of the per-round ratios. Prints a
// table and saves
// bench/results/core.json.
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { createInbox, type Inbox } from '@inboxkit/core';
import { createPgPool } from '@inboxkit/core/pg';
import { CompiledQuery, Kysely, PostgresDialect } from 'kysely';
import type pg from 'pg';
import { benchDatabase, type Figure, median, met, saveResults, type Target } from './support.ts';

const { values: args } = parseArgs({
  options: {
    messages: { type: 'string', default: '5000' },
    'batch-messages': { type: 'string', default: '50000' },
    rounds: { type: 'string', default: '3' },
    pools: { type: 'string', default: '2,4,8,16' },
    only: { type: 'string', default: '' },
  },
});
const N = Number(args.messages);
const NB = Number(args['batch-messages']);
const ROUNDS = Number(args.rounds);
const SWEEP = args.pools === '' ? [] : args.pools.split(',').map(Number);
const ONLY = args.only === '' ? undefined : new RegExp(args.only);
const DUPLICATE_SHARE = 0.3;

interface BenchDB {
  bench_rows: { id: string; amount: number };
}

const url = await benchDatabase('inboxkit_bench_core');
const setupPool = createPgPool({ connectionString: url, max: 1 });
await setupPool.query(
  `DROP TABLE IF EXISTS bench_rows; CREATE TABLE bench_rows (id text PRIMARY KEY, amount integer NOT NULL)`,
);
/** The schema of an inbox table migrated only to 0001, as plain-SQL users who have not applied 0002 have it. */
const ONLY_0001 = 'inbox_0001';
{
  const { migrateInbox, inboxMigrations } = await import('@inboxkit/core');
  const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: setupPool }) });
  const { error } = await migrateInbox(db);
  if (error) throw error;
  await inboxMigrations({ schema: ONLY_0001 }).inboxkit_0001_processed_messages?.up(db);
}

async function reset(): Promise<void> {
  await setupPool.query(`TRUNCATE bench_rows, processed_messages, ${ONLY_0001}.processed_messages`);
  await setupPool.query('VACUUM ANALYZE bench_rows');
  await setupPool.query('VACUUM ANALYZE processed_messages');
  await setupPool.query(`VACUUM ANALYZE ${ONLY_0001}.processed_messages`);
}

async function rowCount(): Promise<number> {
  const { rows } = await setupPool.query<{ n: string }>('SELECT count(*) AS n FROM bench_rows');
  return Number(rows[0]?.n);
}

let run = 0;
function ids(count: number): string[] {
  run++;
  return Array.from({ length: count }, (_, i) => `r${run}-m${i}`);
}

/** A delivery: an id and the payload a producer would send (about 80 bytes of JSON). */
interface Delivery {
  readonly id: string;
  readonly payload: string;
}

/**
 * `count` deliveries, `share` of them redeliveries of an id delivered at least 64 places
 * earlier. Seeded, so every mode of every round sees the same sequence (tables are
 * truncated between modes).
 */
function deliveries(count: number, share: number): { list: Delivery[]; unique: number } {
  let seed = 42;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const list: Delivery[] = [];
  const fresh: Delivery[] = [];
  for (let i = 0; i < count; i++) {
    if (fresh.length > 64 && random() < share) {
      list.push(fresh[Math.floor(random() * (fresh.length - 64))] as Delivery);
    } else {
      const id = `m-${i}`;
      const delivery = {
        id,
        payload: JSON.stringify({ id, amount: i % 1000, currency: 'EUR', account: `acct-${i % 97}` }),
      };
      fresh.push(delivery);
      list.push(delivery);
    }
  }
  return { list, unique: fresh.length };
}
const MIX = deliveries(N, DUPLICATE_SHARE);
const NEW_ONLY = deliveries(N, 0);

/** Runs `work` over `items` with `concurrency` workers pulling from one queue. */
async function drain<T>(items: readonly T[], concurrency: number, work: (item: T) => Promise<void>): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (;;) {
        const i = next++;
        if (i >= items.length) return;
        await work(items[i] as T);
      }
    }),
  );
  return (items.length / (performance.now() - started)) * 1000;
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

const DEDUP = `INSERT INTO processed_messages (consumer, message_id, payload_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1`;
const BUSINESS = 'INSERT INTO bench_rows (id, amount) VALUES ($1, $2)';
const DEDUP_MANY = `INSERT INTO processed_messages (consumer, message_id) SELECT $1, id FROM unnest($2::text[]) AS k(id) ORDER BY 1 ON CONFLICT DO NOTHING RETURNING message_id`;
const BUSINESS_MANY = 'INSERT INTO bench_rows (id, amount) SELECT id, 1 FROM unnest($1::text[]) AS r(id)';

async function withClient(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<void>): Promise<void> {
  const client = await pool.connect();
  try {
    await work(client);
    client.release();
  } catch (error) {
    client.release(error as Error);
    throw error;
  }
}

/** The hand-written twin of `inbox.process`: one transaction, the dedup insert, the business insert when new. */
async function twin(pool: pg.Pool, delivery: Delivery): Promise<void> {
  await withClient(pool, async (client) => {
    await client.query('BEGIN');
    try {
      const { rowCount } = await client.query(DEDUP, ['bench', delivery.id, null]);
      if (rowCount === 1) await client.query(BUSINESS, [delivery.id, 1]);
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      throw error;
    }
  });
}

async function viaInbox(inbox: Inbox<BenchDB>, delivery: Delivery): Promise<void> {
  const outcome = await inbox.process(delivery, async (trx) => {
    await trx.executeQuery(CompiledQuery.raw(BUSINESS, [delivery.id, 1]));
  });
  if (outcome.status !== 'processed' && outcome.status !== 'duplicate') {
    throw new Error(`unexpected ${outcome.status}: ${outcome.status === 'dead_letter' ? outcome.error.stack : ''}`);
  }
}

/** One pg pool of `max` connections, its Kysely instance and the inboxes the cases use. */
interface Setup {
  readonly pool: pg.Pool;
  readonly db: Kysely<BenchDB>;
  readonly inbox: Inbox<BenchDB>;
  readonly fastPath: Inbox<BenchDB>;
  readonly noFingerprint: Inbox<BenchDB>;
  readonly only0001: Inbox<BenchDB>;
}
const setups = new Map<number, Setup>();
function setup(max: number): Setup {
  let found = setups.get(max);
  if (found === undefined) {
    const pool = createPgPool({ connectionString: url, max });
    const db = new Kysely<BenchDB>({ dialect: new PostgresDialect({ pool }) });
    found = {
      pool,
      db,
      inbox: createInbox({ db, consumer: 'bench' }),
      fastPath: createInbox({ db, consumer: 'bench', duplicateFastPath: true }),
      noFingerprint: createInbox({ db, consumer: 'bench', fingerprintPayloads: false }),
      only0001: createInbox({ db, consumer: 'bench', schema: ONLY_0001 }),
    };
    setups.set(max, found);
  }
  return found;
}

/** One measured case: `run` returns msg/s; `rows`, when set, is the business row count it must leave. */
interface Case {
  readonly name: string;
  readonly concurrency: number;
  readonly poolSize: number;
  /** The twin's case name, for the ratio. */
  readonly twin?: string;
  readonly rows?: number;
  readonly run: () => Promise<number>;
}

const TWIN_MIX = 'hand-written twin, 30% redeliveries';
const TWIN_NEW = 'hand-written twin, no redeliveries';
const cases: Case[] = [];
for (const c of [1, 8]) {
  const s = () => setup(c);
  const add = (name: string, run: () => Promise<number>, twinName?: string, rows?: number) =>
    cases.push({
      name,
      concurrency: c,
      poolSize: c,
      run,
      ...(twinName === undefined ? {} : { twin: twinName }),
      ...(rows === undefined ? {} : { rows }),
    });
  add(
    'bare transaction (business insert only), no redeliveries',
    () =>
      drain(NEW_ONLY.list, c, (d) =>
        withClient(s().pool, async (client) => {
          await client.query('BEGIN');
          await client.query(BUSINESS, [d.id, 1]);
          await client.query('COMMIT');
        }),
      ),
    undefined,
    NEW_ONLY.unique,
  );
  add(TWIN_MIX, () => drain(MIX.list, c, (d) => twin(s().pool, d)), undefined, MIX.unique);
  add('inbox.process, 30% redeliveries', () => drain(MIX.list, c, (d) => viaInbox(s().inbox, d)), TWIN_MIX, MIX.unique);
  add(
    'inbox.process duplicateFastPath, 30% redeliveries',
    () => drain(MIX.list, c, (d) => viaInbox(s().fastPath, d)),
    TWIN_MIX,
    MIX.unique,
  );
  add(
    'inbox.process fingerprintPayloads: false, 30% redeliveries',
    () => drain(MIX.list, c, (d) => viaInbox(s().noFingerprint, d)),
    TWIN_MIX,
    MIX.unique,
  );
  add(
    'inbox.process without the claim function (migrated to 0001 only), 30% redeliveries',
    () => drain(MIX.list, c, (d) => viaInbox(s().only0001, d)),
    TWIN_MIX,
    MIX.unique,
  );
  add(TWIN_NEW, () => drain(NEW_ONLY.list, c, (d) => twin(s().pool, d)), undefined, NEW_ONLY.unique);
  add(
    'inbox.process, no redeliveries',
    () => drain(NEW_ONLY.list, c, (d) => viaInbox(s().inbox, d)),
    TWIN_NEW,
    NEW_ONLY.unique,
  );
  add(
    'inbox.process duplicateFastPath, no redeliveries',
    () => drain(NEW_ONLY.list, c, (d) => viaInbox(s().fastPath, d)),
    TWIN_NEW,
    NEW_ONLY.unique,
  );
}
// The pool-size sweep: 8 concurrent deliveries on pools of each size (8 is already above).
for (const size of SWEEP.filter((size) => size !== 8)) {
  const twinName = `pool ${size}: ${TWIN_MIX}`;
  cases.push(
    {
      name: twinName,
      concurrency: 8,
      poolSize: size,
      rows: MIX.unique,
      run: () => drain(MIX.list, 8, (d) => twin(setup(size).pool, d)),
    },
    {
      name: `pool ${size}: inbox.process, 30% redeliveries`,
      concurrency: 8,
      poolSize: size,
      twin: twinName,
      rows: MIX.unique,
      run: () => drain(MIX.list, 8, (d) => viaInbox(setup(size).inbox, d)),
    },
  );
}
if (NB > 0) {
  for (const c of [1, 8]) {
    const s = () => setup(c);
    for (const size of [100, 500]) {
      const perMessageTwin = `hand-written batch ${size}, a statement per message`;
      const bulkTwin = `hand-written batch ${size}, one bulk insert`;
      cases.push(
        {
          name: perMessageTwin,
          concurrency: c,
          poolSize: c,
          run: () =>
            drainBatches(ids(NB), size, c, (batch) =>
              withClient(s().pool, async (client) => {
                await client.query('BEGIN');
                const { rows } = await client.query(DEDUP_MANY, ['bench', batch]);
                const fresh = new Set(rows.map((r: { message_id: string }) => r.message_id));
                for (const id of batch) if (fresh.has(id)) await client.query(BUSINESS, [id, 1]);
                await client.query('COMMIT');
              }),
            ),
        },
        {
          name: `inbox.processBatch ${size} (per-message handler)`,
          concurrency: c,
          poolSize: c,
          twin: perMessageTwin,
          run: () =>
            drainBatches(ids(NB), size, c, async (batch) => {
              await s().inbox.processBatch(
                batch.map((id) => ({ id, payload: id })),
                async (trx, message) => {
                  await trx.executeQuery(CompiledQuery.raw(BUSINESS, [message.id, 1]));
                },
              );
            }),
        },
        {
          name: bulkTwin,
          concurrency: c,
          poolSize: c,
          run: () =>
            drainBatches(ids(NB), size, c, (batch) =>
              withClient(s().pool, async (client) => {
                await client.query('BEGIN');
                const { rows } = await client.query(DEDUP_MANY, ['bench', batch]);
                await client.query(BUSINESS_MANY, [rows.map((r: { message_id: string }) => r.message_id)]);
                await client.query('COMMIT');
              }),
            ),
        },
        {
          name: `inbox.processBulk ${size} (per-batch handler)`,
          concurrency: c,
          poolSize: c,
          twin: bulkTwin,
          run: () =>
            drainBatches(ids(NB), size, c, async (batch) => {
              await s().inbox.processBulk(
                batch.map((id) => ({ id, payload: id })),
                async (trx, messages) => {
                  await trx.executeQuery(CompiledQuery.raw(BUSINESS_MANY, [messages.map((m) => m.id)]));
                },
              );
            }),
        },
      );
    }
  }
}

async function drainBatches(
  all: string[],
  size: number,
  concurrency: number,
  work: (batch: string[]) => Promise<void>,
): Promise<number> {
  const batches = chunks(all, size);
  const rate = await drain(batches, concurrency, work);
  return rate * size;
}

/** New messages against redeliveries of messages already processed, c=1. */
async function duplicateCost(
  db: Kysely<BenchDB>,
  duplicateFastPath: boolean,
): Promise<{ newPerSec: number; duplicatePerSec: number }> {
  const inbox = createInbox({ db, consumer: `bench-dup-${duplicateFastPath}`, duplicateFastPath });
  const batch = ids(N);
  const newPerSec = await drain(batch, 1, async (id) => {
    await inbox.process({ id, payload: id }, async (trx) => {
      await trx.executeQuery(CompiledQuery.raw(BUSINESS, [id, 1]));
    });
  });
  const duplicatePerSec = await drain(batch, 1, async (id) => {
    const outcome = await inbox.process({ id, payload: id }, () => {
      throw new Error('a duplicate must not run');
    });
    if (outcome.status !== 'duplicate') throw new Error(`unexpected ${outcome.status}`);
  });
  return { newPerSec, duplicatePerSec };
}

const key = (c: Case) => `${c.name} @c=${c.concurrency}`;
const selected = cases.filter((c) => ONLY === undefined || ONLY.test(c.name) || ONLY.test(key(c)));
const samples = new Map<string, number[]>();
const loads: number[] = [];
const duplicates: Array<{ newPerSec: number; duplicatePerSec: number }> = [];
const duplicatesFast: Array<{ newPerSec: number; duplicatePerSec: number }> = [];

// Warm-up (not measured): the JIT, each pool's connections, the inbox's statements.
for (const size of new Set(selected.map((c) => c.poolSize))) {
  const { pool, inbox, fastPath, noFingerprint, only0001 } = setup(size);
  const warm = MIX.list.slice(0, 500);
  for (const work of [
    (d: Delivery) => twin(pool, d),
    ...[inbox, fastPath, noFingerprint, only0001].map((i) => (d: Delivery) => viaInbox(i, d)),
  ]) {
    await reset();
    await drain(warm, Math.min(8, size), work);
  }
}

for (let round = 0; round < ROUNDS; round++) {
  loads.push(loadavg()[0] ?? Number.NaN);
  // The order rotates each round, so that drifting load does not always fall on the same cases.
  const shift = Math.floor((round * selected.length) / ROUNDS);
  const order = selected.map((_, i) => selected[(i + shift) % selected.length] as Case);
  for (const c of order) {
    await reset();
    const rate = await c.run();
    if (c.rows !== undefined && (await rowCount()) !== c.rows) {
      throw new Error(`${key(c)}: ${await rowCount()} business rows, expected ${c.rows}`);
    }
    samples.set(key(c), [...(samples.get(key(c)) ?? []), rate]);
    process.stderr.write(`  round ${round + 1}/${ROUNDS} ${key(c)} (pool ${c.poolSize}): ${Math.round(rate)} msg/s\n`);
  }
  if (ONLY === undefined) {
    await reset();
    duplicates.push(await duplicateCost(setup(1).db, false));
    await reset();
    duplicatesFast.push(await duplicateCost(setup(1).db, true));
  }
}
loads.push(loadavg()[0] ?? Number.NaN);
for (const { db } of setups.values()) await db.destroy();
await setupPool.end();

const rateOf = (c: Case) => median(samples.get(key(c)) ?? []);
const results: Array<Figure & { poolSize: number; ratioToTwin?: number }> = selected.map((c) => {
  const twinCase = selected.find((t) => t.name === c.twin && t.concurrency === c.concurrency);
  // The median of the per-round ratios: a case and its twin run back to back in each round,
  // so pairing them keeps out most of the drift of a shared machine.
  const own = samples.get(key(c)) ?? [];
  const twins = twinCase === undefined ? [] : (samples.get(key(twinCase)) ?? []);
  const ratio = twinCase === undefined ? undefined : median(own.map((rate, i) => rate / (twins[i] ?? Number.NaN)));
  return {
    name: c.name,
    concurrency: c.concurrency,
    poolSize: c.poolSize,
    messagesPerSec: Math.round(rateOf(c)),
    ...(ratio === undefined ? {} : { ratioToTwin: Number(ratio.toFixed(2)) }),
  };
});
const ratio = (name: string, concurrency: number) =>
  results.find((r) => r.name === name && r.concurrency === concurrency)?.ratioToTwin ?? Number.NaN;
const targets: Target[] = [1, 8].flatMap((c) => [
  {
    target: `c=${c}: inbox.process at least as fast as its hand-written twin, 30% redeliveries`,
    value: ratio('inbox.process, 30% redeliveries', c),
    limit: 1,
    higherIsBetter: true,
  },
  {
    target: `c=${c}: same, within 1.05x at worst`,
    value: ratio('inbox.process, 30% redeliveries', c),
    limit: Number((1 / 1.05).toFixed(3)),
    higherIsBetter: true,
  },
]);
const dupNew = median(duplicates.map((d) => d.newPerSec));
const dupDup = median(duplicates.map((d) => d.duplicatePerSec));
const fastNew = median(duplicatesFast.map((d) => d.newPerSec));
const fastDup = median(duplicatesFast.map((d) => d.duplicatePerSec));
if (duplicates.length > 0) {
  targets.push(
    {
      target: 'c=1: a duplicate costs at most half a new message (duplicateFastPath: true)',
      value: fastNew / fastDup,
      limit: 0.5,
      higherIsBetter: false,
    },
    {
      target: 'c=1: a duplicate costs at most half a new message (default, no fast path)',
      value: dupNew / dupDup,
      limit: 0.5,
      higherIsBetter: false,
    },
  );
}

const width = Math.max(...results.map((r) => r.name.length), 10);
console.log(`\n${'case'.padEnd(width)}   c  pool      msg/s  vs twin`);
for (const r of results) {
  console.log(
    `${r.name.padEnd(width)}  ${String(r.concurrency).padStart(2)}  ${String(r.poolSize).padStart(4)}  ${String(r.messagesPerSec).padStart(9)}  ${r.ratioToTwin === undefined ? '' : `${r.ratioToTwin.toFixed(2)}x`}`,
  );
}
const notes = [
  `${N} deliveries per case (${MIX.unique} distinct ids in the 30% mix), ${ROUNDS} interleaved rounds, medians; load average ${loads.map((l) => l.toFixed(1)).join(' -> ')}`,
  ...(duplicates.length > 0
    ? [
        `default:           duplicate ${Math.round(dupDup)} msg/s, new ${Math.round(dupNew)} msg/s (c=1)`,
        `duplicateFastPath: duplicate ${Math.round(fastDup)} msg/s, new ${Math.round(fastNew)} msg/s (c=1)`,
      ]
    : []),
];
for (const note of notes) console.log(note);
console.log('');
for (const t of targets) {
  console.log(
    `${met(t) ? 'MET   ' : 'MISSED'}  ${t.target}: ${t.value.toFixed(2)} (${t.higherIsBetter ? '>=' : '<='} ${t.limit})`,
  );
}
saveResults('core', {
  settings: {
    messages: N,
    duplicateShare: DUPLICATE_SHARE,
    batchMessages: NB,
    rounds: ROUNDS,
    pools: SWEEP,
    cpus: cpus().length,
    loadAverage: loads.map((l) => Number(l.toFixed(2))),
    command: `node bench/core.ts${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}`,
  },
  figures: results,
  samples: Object.fromEntries([...samples].map(([name, rates]) => [name, rates.map((r) => Math.round(r))])),
  ...(duplicates.length > 0
    ? {
        duplicate: {
          default: { newPerSec: Math.round(dupNew), duplicatePerSec: Math.round(dupDup) },
          duplicateFastPath: { newPerSec: Math.round(fastNew), duplicatePerSec: Math.round(fastDup) },
        },
      }
    : {}),
  targets,
});
