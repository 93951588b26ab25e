// Where one Postgres node tops out (docs/scaling.md, "Measured here"):
//
//   npm run bench -- scaling   (or, after `pnpm run build`: node bench/scaling.ts [--messages 200000]
//                               [--per-message 10000] [--batch 500] [--rounds 5] [--concurrency 1,2,4,8])
//
// A longer run: `--messages 1000000 --per-message 20000 --rounds 5` (tens of minutes here).
//
// 1. `inbox.processBulk` in batches of `batch` messages (a UUID id, a ~90-byte JSON payload
//    fingerprinted as by default), its handler one bulk business insert
//    (`INSERT ... SELECT FROM unnest`), with 1, 2, 4, 8 concurrent consumers, each on a pool
//    connection of its own (pool size = consumers). Beside it the same bulk business insert
//    with no inbox at all (`bare`), to tell what the inbox adds from what the machine allows.
// 2. `inbox.process` at c=8, a transaction per message with one business insert, for
//    comparison.
// Every case runs on emptied tables (TRUNCATE), `rounds` times, interleaved; the median is
// kept. For each: messages/s, rows/s (inbox keys and business rows written), WAL bytes per
// message (`pg_wal_lsn_diff` of `pg_current_wal_lsn()` around the run; it holds the business
// row's WAL too, and full-page images whenever a checkpoint fell inside the run), and the
// inbox table's bytes per key (`pg_total_relation_size` over its rows: heap, primary key,
// `processed_at` index). `uptime` is recorded before and after: this is a shared 2-core
// machine and the client runs on the same cores as Postgres. Saves bench/results/scaling.json.
import { execSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { createInbox, type Inbox, migrateInbox } from '@inboxkit/core';
import { createPgPool } from '@inboxkit/core/pg';
import { CompiledQuery, Kysely, PostgresDialect } from 'kysely';
import { benchDatabase, median, saveResults } from './support.ts';

const { values: args } = parseArgs({
  options: {
    messages: { type: 'string', default: '200000' },
    'per-message': { type: 'string', default: '10000' },
    batch: { type: 'string', default: '500' },
    rounds: { type: 'string', default: '5' },
    concurrency: { type: 'string', default: '1,2,4,8' },
  },
});
const MESSAGES = Number(args.messages);
const PER_MESSAGE = Number(args['per-message']);
const BATCH = Number(args.batch);
const ROUNDS = Number(args.rounds);
const LEVELS = args.concurrency.split(',').map(Number);
const CONSUMER = 'payments-ledger';

interface BenchDB {
  bench_rows: { id: string; amount: number };
}

const uptime = () => execSync('uptime').toString().trim();
const uptimeBefore = uptime();
console.log(uptimeBefore);

const url = await benchDatabase('inboxkit_bench_scaling');
const admin = createPgPool({ connectionString: url, max: 1 });
const adminDb = new Kysely<BenchDB>({ dialect: new PostgresDialect({ pool: admin }) });
{
  const { error } = await migrateInbox(adminDb);
  if (error) throw error;
}
await admin.query('CREATE TABLE bench_rows (id text PRIMARY KEY, amount integer NOT NULL)');
/** The server settings that bound these figures (a commit waits for its WAL flush: synchronous_commit on). */
const { rows: serverRows } = await admin.query<{ name: string; setting: string }>(
  `SELECT 'version' AS name, current_setting('server_version') AS setting
   UNION ALL SELECT name, current_setting(name) FROM unnest(ARRAY['fsync', 'synchronous_commit', 'full_page_writes',
     'wal_compression', 'shared_buffers', 'max_wal_size', 'checkpoint_timeout']) AS s(name)`,
);
const server = Object.fromEntries(serverRows.map((r) => [r.name, r.setting]));

/** A pool of `max` connections and an inbox on it, one per concurrency level. */
const setups = new Map<number, { db: Kysely<BenchDB>; inbox: Inbox<BenchDB> }>();
function setup(max: number): { db: Kysely<BenchDB>; inbox: Inbox<BenchDB> } {
  let found = setups.get(max);
  if (found === undefined) {
    const db = new Kysely<BenchDB>({
      dialect: new PostgresDialect({ pool: createPgPool({ connectionString: url, max }) }),
    });
    found = { db, inbox: createInbox({ db, consumer: CONSUMER }) };
    setups.set(max, found);
  }
  return found;
}

interface Message {
  readonly id: string;
  readonly payload: string;
}
function messages(count: number): Message[] {
  return Array.from({ length: count }, (_, i) => {
    const id = randomUUID();
    return { id, payload: JSON.stringify({ id, amount: i % 1000, currency: 'EUR', account: `acct-${i % 97}` }) };
  });
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** Runs `work` over `items` with `concurrency` workers pulling from one queue; returns seconds. */
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
  return (performance.now() - started) / 1000;
}

const BULK = 'INSERT INTO bench_rows (id, amount) SELECT id, 1 FROM unnest($1::text[]) AS r(id)';
const ONE = 'INSERT INTO bench_rows (id, amount) VALUES ($1, 1)';

async function reset(): Promise<void> {
  await admin.query('TRUNCATE bench_rows, processed_messages');
}

async function walLsn(): Promise<string> {
  const { rows } = await admin.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
  return rows[0]?.lsn ?? '0/0';
}

async function walSince(lsn: string): Promise<number> {
  const { rows } = await admin.query<{ bytes: string }>(
    'SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::text AS bytes',
    [lsn],
  );
  return Number(rows[0]?.bytes);
}

async function counts(): Promise<{ keys: number; businessRows: number; inboxBytes: number }> {
  const { rows } = await admin.query<{ keys: string; business: string; bytes: string }>(
    `SELECT (SELECT count(*) FROM processed_messages)::text AS keys,
            (SELECT count(*) FROM bench_rows)::text AS business,
            pg_total_relation_size('processed_messages')::text AS bytes`,
  );
  const row = rows[0];
  return { keys: Number(row?.keys), businessRows: Number(row?.business), inboxBytes: Number(row?.bytes) };
}

interface Sample {
  readonly messagesPerSec: number;
  readonly rowsPerSec: number;
  readonly walBytesPerMessage: number;
  readonly inboxBytesPerKey: number | null;
  /** CPU seconds this (single-threaded) client process used per second of the run. */
  readonly clientCpuShare: number;
}

interface Case {
  readonly name: string;
  readonly mode: 'processBulk' | 'bare bulk insert' | 'process';
  readonly concurrency: number;
  readonly messages: number;
  readonly run: (list: Message[]) => Promise<number>;
}

const cases: Case[] = [];
for (const c of LEVELS) {
  cases.push(
    {
      name: `processBulk ${BATCH}, c=${c}`,
      mode: 'processBulk',
      concurrency: c,
      messages: MESSAGES,
      run: (list) =>
        drain(chunks(list, BATCH), c, async (batch) => {
          const result = await setup(c).inbox.processBulk(batch, async (trx, fresh) => {
            await trx.executeQuery(CompiledQuery.raw(BULK, [fresh.map((m) => m.id)]));
          });
          for (const outcome of result.outcomes) {
            if (outcome.status !== 'processed') throw new Error(`unexpected ${outcome.status}`);
          }
        }),
    },
    {
      name: `bare bulk insert ${BATCH} (no inbox), c=${c}`,
      mode: 'bare bulk insert',
      concurrency: c,
      messages: MESSAGES,
      run: (list) =>
        drain(chunks(list, BATCH), c, async (batch) => {
          await setup(c)
            .db.transaction()
            .execute(async (trx) => {
              await trx.executeQuery(CompiledQuery.raw(BULK, [batch.map((m) => m.id)]));
            });
        }),
    },
  );
}
if (PER_MESSAGE > 0) {
  cases.push({
    name: 'process (a transaction per message), c=8',
    mode: 'process',
    concurrency: 8,
    messages: PER_MESSAGE,
    run: (list) =>
      drain(list, 8, async (message) => {
        const outcome = await setup(8).inbox.process(message, async (trx) => {
          await trx.executeQuery(CompiledQuery.raw(ONE, [message.id]));
        });
        if (outcome.status !== 'processed') throw new Error(`unexpected ${outcome.status}`);
      }),
  });
}

async function measure(one: Case): Promise<Sample> {
  await reset();
  const list = messages(one.messages);
  const lsn = await walLsn();
  const cpu = process.cpuUsage();
  const seconds = await one.run(list);
  const { user, system } = process.cpuUsage(cpu);
  const walBytes = await walSince(lsn);
  const { keys, businessRows, inboxBytes } = await counts();
  if (businessRows !== one.messages) throw new Error(`${one.name}: ${businessRows} business rows, not ${one.messages}`);
  return {
    messagesPerSec: Math.round(one.messages / seconds),
    rowsPerSec: Math.round((keys + businessRows) / seconds),
    walBytesPerMessage: Math.round(walBytes / one.messages),
    inboxBytesPerKey: keys > 0 ? Math.round(inboxBytes / keys) : null,
    clientCpuShare: (user + system) / 1e6 / seconds,
  };
}

// Warm up: the pools, the inboxes' first look-up, Postgres' caches.
for (const one of cases) await measure({ ...one, messages: Math.min(one.messages, 2 * BATCH) });

const samples = new Map<string, Sample[]>(cases.map((c) => [c.name, []]));
for (let round = 0; round < ROUNDS; round++) {
  const order = cases.map((_, i) => cases[(i + round) % cases.length] as Case);
  for (const one of order) {
    const sample = await measure(one);
    samples.get(one.name)?.push(sample);
    console.log(
      `round ${round + 1}  ${one.name.padEnd(44)} ${String(sample.messagesPerSec).padStart(7)} msg/s  ${String(sample.walBytesPerMessage).padStart(5)} B WAL/msg`,
    );
  }
}

const figures = cases.map((one) => {
  const list = samples.get(one.name) ?? [];
  const mid = (pick: (s: Sample) => number) => Math.round(median(list.map(pick)));
  const perKey = list.map((s) => s.inboxBytesPerKey).filter((b): b is number => b !== null);
  return {
    name: one.name,
    mode: one.mode,
    concurrency: one.concurrency,
    messages: one.messages,
    messagesPerSec: mid((s) => s.messagesPerSec),
    rowsPerSec: mid((s) => s.rowsPerSec),
    walBytesPerMessage: mid((s) => s.walBytesPerMessage),
    inboxBytesPerKey: perKey.length > 0 ? Math.round(median(perKey)) : null,
    clientCpuShare: Math.round(median(list.map((s) => s.clientCpuShare)) * 100) / 100,
    samples: list.map((s) => s.messagesPerSec),
  };
});

// Where throughput stops growing: each level's median over the previous level's.
const growth = LEVELS.slice(1).map((c, i) => {
  const rate = (mode: string, level: number) =>
    figures.find((f) => f.mode === mode && f.concurrency === level)?.messagesPerSec ?? Number.NaN;
  const previous = LEVELS[i] as number;
  return {
    from: previous,
    to: c,
    processBulk: Math.round((rate('processBulk', c) / rate('processBulk', previous)) * 100) / 100,
    bare: Math.round((rate('bare bulk insert', c) / rate('bare bulk insert', previous)) * 100) / 100,
  };
});

console.log(
  `\n${'case'.padEnd(44)} ${'msg/s'.padStart(8)} ${'rows/s'.padStart(8)} ${'WAL B/msg'.padStart(10)} ${'B/key'.padStart(6)} ${'client CPU'.padStart(10)}`,
);
for (const f of figures) {
  console.log(
    `${f.name.padEnd(44)} ${String(f.messagesPerSec).padStart(8)} ${String(f.rowsPerSec).padStart(8)} ${String(f.walBytesPerMessage).padStart(10)} ${String(f.inboxBytesPerKey ?? '-').padStart(6)} ${f.clientCpuShare.toFixed(2).padStart(10)}`,
  );
}
console.log('\ngrowth (median msg/s at c over the level before):');
for (const g of growth) console.log(`  c=${g.from} -> c=${g.to}: processBulk ${g.processBulk}x, bare ${g.bare}x`);
const uptimeAfter = uptime();
console.log(uptimeAfter);

saveResults('scaling', {
  command: `node bench/scaling.ts ${process.argv.slice(2).join(' ')}`.trim(),
  uptimeBefore,
  uptimeAfter,
  loadAverage1mAtEnd: loadavg()[0] ?? Number.NaN,
  server,
  settings: { messages: MESSAGES, perMessage: PER_MESSAGE, batch: BATCH, rounds: ROUNDS, concurrency: LEVELS },
  figures,
  growth,
});

for (const { db } of setups.values()) await db.destroy();
await adminDb.destroy();
