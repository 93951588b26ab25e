// Core benchmark: what the inbox costs over the SQL it cannot avoid.
//
//   npm run bench -- core            (or: node bench/core.ts [--messages 5000] [--rounds 3])
//
// Each mode processes messages whose handler inserts one business row, against the
// Postgres in DATABASE_URL (default: the local server), and is set beside the same SQL
// written by hand with the same driver (pg). Every mode runs `rounds` times, interleaved,
// and the median is kept: these are shared 2-core machines. Prints a table and saves
// bench/results/core.json.
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { createInbox } from '@inboxkit/core';
import { createPgPool } from '@inboxkit/core/pg';
import { CompiledQuery, Kysely, PostgresDialect } from 'kysely';
import type pg from 'pg';
import { benchDatabase, type Figure, median, printTable, saveResults } from './support.ts';

const { values: args } = parseArgs({
  options: {
    messages: { type: 'string', default: '4000' },
    'batch-messages': { type: 'string', default: '50000' },
    rounds: { type: 'string', default: '3' },
  },
});
const N = Number(args.messages);
const NB = Number(args['batch-messages']);
const ROUNDS = Number(args.rounds);

interface BenchDB {
  bench_rows: { id: string; amount: number };
}

const url = await benchDatabase('inboxkit_bench_core');
const setupPool = createPgPool({ connectionString: url, max: 1 });
await setupPool.query(
  `DROP TABLE IF EXISTS bench_rows; CREATE TABLE bench_rows (id text PRIMARY KEY, amount integer NOT NULL)`,
);
{
  const { migrateInbox } = await import('@inboxkit/core');
  const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: setupPool }) });
  const { error } = await migrateInbox(db);
  if (error) throw error;
}

async function reset(): Promise<void> {
  await setupPool.query('TRUNCATE bench_rows, processed_messages');
  await setupPool.query('VACUUM ANALYZE bench_rows');
  await setupPool.query('VACUUM ANALYZE processed_messages');
}

let run = 0;
function ids(count: number): string[] {
  run++;
  return Array.from({ length: count }, (_, i) => `r${run}-m${i}`);
}

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

type Mode = (concurrency: number) => Promise<number>;

function modes(pool: pg.Pool, db: Kysely<BenchDB>): Record<string, Mode> {
  const inbox = createInbox({ db, consumer: 'bench' });
  const insertRow = async (trx: Kysely<BenchDB>, id: string): Promise<void> => {
    await trx.executeQuery(CompiledQuery.raw(BUSINESS, [id, 1]));
  };
  return {
    'bare transaction (business insert only)': (c) =>
      drain(ids(N), c, (id) =>
        withClient(pool, async (client) => {
          await client.query('BEGIN');
          await client.query(BUSINESS, [id, 1]);
          await client.query('COMMIT');
        }),
      ),
    'hand-written floor (BEGIN, dedup insert, business insert, COMMIT)': (c) =>
      drain(ids(N), c, (id) =>
        withClient(pool, async (client) => {
          await client.query('BEGIN');
          const { rowCount } = await client.query(DEDUP, ['bench', id, null]);
          if (rowCount === 1) await client.query(BUSINESS, [id, 1]);
          await client.query('COMMIT');
        }),
      ),
    'inbox.process': (c) =>
      drain(ids(N), c, async (id) => {
        const outcome = await inbox.process({ id, payload: id }, (trx) => insertRow(trx, id));
        if (outcome.status !== 'processed')
          throw new Error(
            `unexpected ${outcome.status}: ${outcome.status === 'dead_letter' ? outcome.error.stack : ''}`,
          );
      }),
    ...Object.fromEntries(
      [100, 500].flatMap((size) => [
        [
          `hand-written batch ${size}, a statement per message`,
          (c: number) =>
            drainBatches(ids(NB), size, c, (batch) =>
              withClient(pool, async (client) => {
                await client.query('BEGIN');
                const { rows } = await client.query(DEDUP_MANY, ['bench', batch]);
                const fresh = new Set(rows.map((r: { message_id: string }) => r.message_id));
                for (const id of batch) if (fresh.has(id)) await client.query(BUSINESS, [id, 1]);
                await client.query('COMMIT');
              }),
            ),
        ],
        [
          `inbox.processBatch ${size} (per-message handler)`,
          (c: number) =>
            drainBatches(ids(NB), size, c, async (batch) => {
              await inbox.processBatch(
                batch.map((id) => ({ id, payload: id })),
                (trx, message) => insertRow(trx, message.id),
              );
            }),
        ],
        [
          `hand-written batch ${size}, one bulk insert`,
          (c: number) =>
            drainBatches(ids(NB), size, c, (batch) =>
              withClient(pool, async (client) => {
                await client.query('BEGIN');
                const { rows } = await client.query(DEDUP_MANY, ['bench', batch]);
                await client.query(BUSINESS_MANY, [rows.map((r: { message_id: string }) => r.message_id)]);
                await client.query('COMMIT');
              }),
            ),
        ],
        [
          `inbox.processBulk ${size} (per-batch handler)`,
          (c: number) =>
            drainBatches(ids(NB), size, c, async (batch) => {
              await inbox.processBulk(
                batch.map((id) => ({ id, payload: id })),
                async (trx, messages) => {
                  await trx.executeQuery(CompiledQuery.raw(BUSINESS_MANY, [messages.map((m) => m.id)]));
                },
              );
            }),
        ],
      ]),
    ),
  };
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

/** New messages against redeliveries of messages already processed. */
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

const results: Figure[] = [];
const duplicates: Array<{ newPerSec: number; duplicatePerSec: number }> = [];
const duplicatesFast: Array<{ newPerSec: number; duplicatePerSec: number }> = [];
for (const concurrency of [1, 8]) {
  const pool = createPgPool({ connectionString: url, max: concurrency });
  const db = new Kysely<BenchDB>({ dialect: new PostgresDialect({ pool }) });
  const table = modes(pool, db);
  const samples = new Map<string, number[]>();
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, mode] of Object.entries(table)) {
      await reset();
      const rate = await mode(concurrency);
      samples.set(name, [...(samples.get(name) ?? []), rate]);
      process.stderr.write(`  c=${concurrency} round ${round + 1}/${ROUNDS} ${name}: ${Math.round(rate)} msg/s\n`);
    }
    if (concurrency === 1) {
      await reset();
      duplicates.push(await duplicateCost(db, false));
      await reset();
      duplicatesFast.push(await duplicateCost(db, true));
    }
  }
  for (const [name, rates] of samples) results.push({ name, concurrency, messagesPerSec: Math.round(median(rates)) });
  await db.destroy();
}
await setupPool.end();

const rate = (name: string, c: number) =>
  results.find((r) => r.name === name && r.concurrency === c)?.messagesPerSec ?? NaN;
const dupNew = median(duplicates.map((d) => d.newPerSec));
const dupDup = median(duplicates.map((d) => d.duplicatePerSec));
const fastNew = median(duplicatesFast.map((d) => d.newPerSec));
const fastDup = median(duplicatesFast.map((d) => d.duplicatePerSec));
const targets = [1, 8].flatMap((c) => [
  {
    target: `c=${c}: inbox.process within 1.10x of the hand-written floor`,
    value: rate('hand-written floor (BEGIN, dedup insert, business insert, COMMIT)', c) / rate('inbox.process', c),
    limit: 1.1,
    higherIsBetter: false,
  },
]);
targets.push(
  {
    target: 'c=1: per-batch shape (processBulk 500) at least 20x inbox.process',
    value: rate('inbox.processBulk 500 (per-batch handler)', 1) / rate('inbox.process', 1),
    limit: 20,
    higherIsBetter: true,
  },
  {
    target: 'c=1: per-message shape (processBatch 500) at least 4x inbox.process',
    value: rate('inbox.processBatch 500 (per-message handler)', 1) / rate('inbox.process', 1),
    limit: 4,
    higherIsBetter: true,
  },
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

printTable(results, targets, [
  `default:           duplicate ${Math.round(dupDup)} msg/s, new ${Math.round(dupNew)} msg/s (c=1)`,
  `duplicateFastPath: duplicate ${Math.round(fastDup)} msg/s, new ${Math.round(fastNew)} msg/s (c=1)`,
]);
saveResults('core', {
  settings: { messages: N, batchMessages: NB, rounds: ROUNDS, cpus: cpus().length },
  figures: results,
  duplicate: {
    default: { newPerSec: Math.round(dupNew), duplicatePerSec: Math.round(dupDup) },
    duplicateFastPath: { newPerSec: Math.round(fastNew), duplicatePerSec: Math.round(fastDup) },
  },
  targets,
});
