// Retention benchmark: the inbox table at scale, plain against partitioned by day
// (docs/retention.md).
//
//   npm run bench -- retention       (or, after `pnpm run build`: node bench/retention.ts
//                                    [--keys 10000000] [--day-keys 1700000] [--messages 3000]
//                                    [--concurrency 4] [--rounds 5] [--window-ms 5000]
//                                    [--layouts plain,partitioned])
//
// For each layout (`plain`: the default table; `partitioned`: by day) it
// 1. fills a table with `keys` keys (ids like UUIDs) spread over consecutive days of
//    `day-keys` each, the oldest first, with one INSERT ... SELECT FROM generate_series
//    (indexes built after the rows, as a restore would), and times it;
// 2. measures the hot path, `inbox.process` with a handler inserting one business row, on
//    that table and on an empty one of the same layout: throughput at `concurrency`, and the
//    p99 latency of one call, `rounds` times interleaved, medians kept;
// 3. expires one day's keys (the oldest day) alone: `inbox.purge()` with its default
//    batches of 1,000 deletes on the plain table, a partition drop on the partitioned one:
//    the time it takes and the WAL it writes (pg_current_wal_lsn before and after);
// 4. expires more days while the hot path runs, and compares the hot path's p99 during the
//    expiry with its p99 without: on the plain table the next day's purge against the hot
//    path just before it; on the partitioned one, whose drop takes milliseconds, up to three
//    rounds of three `window-ms` windows, the middle one with a day's drop in its middle,
//    its p99 against the mean of the two others (median of the rounds' ratios; the third
//    window against the first shows the noise).
// Prints the figures and saves bench/results/retention.json. The machine is shared: the
// load average is printed beside the figures.
import { execSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { createInbox, type Inbox, migrateInbox } from '@inboxkit/core';
import { createPgPool } from '@inboxkit/core/pg';
import { Kysely, PostgresDialect, sql } from 'kysely';
import { benchDatabase, median, met, saveResults, type Target } from './support.ts';

const { values: args } = parseArgs({
  options: {
    keys: { type: 'string', default: '10000000' },
    'day-keys': { type: 'string', default: '1700000' },
    messages: { type: 'string', default: '3000' },
    concurrency: { type: 'string', default: '4' },
    rounds: { type: 'string', default: '5' },
    'window-ms': { type: 'string', default: '5000' },
    layouts: { type: 'string', default: 'plain,partitioned' },
  },
});
const KEYS = Number(args.keys);
const DAY_KEYS = Number(args['day-keys']);
const MESSAGES = Number(args.messages);
const CONCURRENCY = Number(args.concurrency);
const ROUNDS = Number(args.rounds);
const LAYOUTS = args.layouts.split(',') as ('plain' | 'partitioned')[];
const DAY_MS = 86_400_000;
const CONSUMER = 'bench';
const WINDOW_MS = Number(args['window-ms']);
const DROP_ROUNDS = 3;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface BenchDB {
  bench_rows: { id: string; amount: number };
}

const url = await benchDatabase('inboxkit_bench_retention');
const pool = createPgPool({ connectionString: url, max: CONCURRENCY + 4 });
const db = new Kysely<BenchDB>({ dialect: new PostgresDialect({ pool }) });
await sql`CREATE TABLE bench_rows (id text PRIMARY KEY, amount integer NOT NULL)`.execute(db);
const uptime = () => execSync('uptime').toString().trim();
console.log(uptime());

/** Days the fill spans: `DAY_KEYS` keys each (the last day takes the rest), ending with today (UTC). */
const DAYS = Math.ceil(KEYS / DAY_KEYS);

async function migrate(schema: string, layout: 'plain' | 'partitioned'): Promise<void> {
  const { error } = await migrateInbox(db, {
    schema,
    ...(layout === 'partitioned' && { partitioned: { intervalMs: DAY_MS, premake: 2, retentionMs: DAY_MS } }),
  });
  if (error) throw error;
}

/**
 * Fills `schema`'s table: key g (1..KEYS) of day floor((g-1)/DAY_KEYS), evenly spread over
 * that UTC day, the first day `DAYS - 1` days before today. The partitioned table gets its
 * past days' partitions first (as days of operation would have left them).
 */
async function fill(schema: string, layout: 'plain' | 'partitioned'): Promise<number> {
  const table = sql.table(`${schema}.processed_messages`);
  const started = performance.now();
  await db.connection().execute(async (c) => {
    await sql`SET maintenance_work_mem = '512MB'`.execute(c);
    if (layout === 'partitioned') {
      for (let day = 0; day < DAYS; day++) {
        const name = `processed_messages_p${dayName(day)}`;
        await sql
          .raw(`CREATE TABLE IF NOT EXISTS "${schema}"."${name}" PARTITION OF "${schema}"."processed_messages"
            FOR VALUES FROM ('${dayStart(day).toISOString()}') TO ('${dayStart(day + 1).toISOString()}')`)
          .execute(c);
      }
    }
    const pkey = layout === 'plain' ? '(consumer, message_id)' : '(consumer, message_id, processed_at)';
    await sql.raw(`ALTER TABLE "${schema}"."processed_messages" DROP CONSTRAINT processed_messages_pkey`).execute(c);
    if (layout === 'plain') await sql.raw(`DROP INDEX "${schema}".processed_messages_processed_at_idx`).execute(c);
    await sql`INSERT INTO ${table} (consumer, message_id, processed_at)
      SELECT ${CONSUMER}, md5(g::text)::uuid::text,
             ${dayStart(0)}::timestamptz + ((g - 1) / ${DAY_KEYS}) * interval '1 day'
               + (((g - 1) % ${DAY_KEYS})::float8 / ${DAY_KEYS}) * interval '1 day'
      FROM generate_series(1, ${KEYS}) AS g`.execute(c);
    await sql
      .raw(`ALTER TABLE "${schema}"."processed_messages" ADD CONSTRAINT processed_messages_pkey PRIMARY KEY ${pkey}`)
      .execute(c);
    if (layout === 'plain') {
      await sql
        .raw(`CREATE INDEX processed_messages_processed_at_idx ON "${schema}"."processed_messages" (processed_at)`)
        .execute(c);
    }
    await sql.raw(`VACUUM ANALYZE "${schema}"."processed_messages"`).execute(c);
  });
  return (performance.now() - started) / 1000;
}

function dayStart(day: number): Date {
  const today = Math.floor(Date.now() / DAY_MS) * DAY_MS;
  return new Date(today - (DAYS - 1 - day) * DAY_MS);
}

function dayName(day: number): string {
  return `${dayStart(day).toISOString().slice(0, 10).replaceAll('-', '')}000000`;
}

let sequence = 0;
interface HotPath {
  readonly messagesPerSec: number;
  readonly p99Ms: number;
  readonly messages: number;
}

/** `inbox.process` of new ids at CONCURRENCY: `count` messages, or until `until` resolves. */
async function hotPath(inbox: Inbox<BenchDB>, count: number, until?: Promise<unknown>): Promise<HotPath> {
  const latencies: number[] = [];
  let stop = false;
  until?.then(
    () => {
      stop = true;
    },
    () => {
      stop = true;
    },
  );
  const started = performance.now();
  let issued = 0;
  const worker = async () => {
    while (until === undefined ? issued < count : !stop) {
      issued++;
      const id = `hot-${process.pid}-${++sequence}`;
      const t0 = performance.now();
      const outcome = await inbox.process({ id, payload: id }, async (trx) => {
        await trx.insertInto('bench_rows').values({ id, amount: 1 }).execute();
      });
      latencies.push(performance.now() - t0);
      if (outcome.status !== 'processed') throw new Error(`unexpected outcome ${outcome.status}`);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    messagesPerSec: Math.round(latencies.length / seconds),
    p99Ms: round(latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * 0.99))] ?? NaN),
    messages: latencies.length,
  };
}

async function walLsn(): Promise<string> {
  const { rows } = await sql<{ lsn: string }>`SELECT pg_current_wal_lsn()::text AS lsn`.execute(db);
  return rows[0]?.lsn ?? '0/0';
}

async function walSince(lsn: string): Promise<number> {
  const { rows } = await sql<{
    bytes: string;
  }>`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), ${lsn}::pg_lsn)::text AS bytes`.execute(db);
  return Number(rows[0]?.bytes);
}

async function keysBefore(schema: string, day: number): Promise<number> {
  const { rows } = await sql<{ n: string }>`SELECT count(*)::text AS n FROM ${sql.table(`${schema}.processed_messages`)}
    WHERE processed_at < ${dayStart(day)}`.execute(db);
  return Number(rows[0]?.n);
}

/** Expires the keys of the days before `day` with purge(); returns seconds and WAL bytes. */
async function expire(
  inbox: Inbox<BenchDB>,
  day: number,
  checkpoint: boolean,
): Promise<{ seconds: number; walBytes: number; purge: object }> {
  // Alone, from a checkpoint: the WAL then holds the full-page images a first change writes.
  if (checkpoint) await sql`CHECKPOINT`.execute(db);
  const lsn = await walLsn();
  const started = performance.now();
  const olderThanMs = Date.now() - dayStart(day).getTime();
  const purge = await inbox.purge({ olderThanMs });
  const seconds = (performance.now() - started) / 1000;
  return { seconds: round(seconds), walBytes: await walSince(lsn), purge };
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

const results: Record<string, unknown> = {};
const targets: Target[] = [];
for (const layout of LAYOUTS) {
  const full = `${layout}_full`;
  const empty = `${layout}_empty`;
  await migrate(full, layout);
  await migrate(empty, layout);
  console.log(`\n[${layout}] filling ${KEYS} keys over ${DAYS} days ...`);
  const fillSeconds = round(await fill(full, layout));
  const { rows: size } = await sql<{ bytes: string }>`
    SELECT (sum(pg_total_relation_size(c.oid)))::text AS bytes FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ${full} AND c.relname LIKE 'processed_messages%' AND c.relkind IN ('r', 'p')`.execute(db);
  const tableBytes = Number(size[0]?.bytes);
  console.log(`[${layout}] filled in ${fillSeconds} s, ${(tableBytes / 2 ** 20).toFixed(0)} MiB with indexes`);

  const onFull = createInbox({ db, consumer: CONSUMER, schema: full, retentionMs: 30 * DAY_MS });
  const onEmpty = createInbox({ db, consumer: CONSUMER, schema: empty, retentionMs: 30 * DAY_MS });
  await hotPath(onFull, 200);
  await hotPath(onEmpty, 200);
  const fullRuns: HotPath[] = [];
  const emptyRuns: HotPath[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    if (round % 2 === 0) {
      fullRuns.push(await hotPath(onFull, MESSAGES));
      emptyRuns.push(await hotPath(onEmpty, MESSAGES));
    } else {
      emptyRuns.push(await hotPath(onEmpty, MESSAGES));
      fullRuns.push(await hotPath(onFull, MESSAGES));
    }
  }
  const ratio = round(median(fullRuns.map((r, i) => r.messagesPerSec / (emptyRuns[i]?.messagesPerSec ?? NaN))));
  console.log(
    `[${layout}] hot path: full ${median(fullRuns.map((r) => r.messagesPerSec))} msg/s (p99 ${median(fullRuns.map((r) => r.p99Ms))} ms), empty ${median(emptyRuns.map((r) => r.messagesPerSec))} msg/s (p99 ${median(emptyRuns.map((r) => r.p99Ms))} ms): ${ratio}x`,
  );
  targets.push({
    target: `${layout}: hot path on ${KEYS} keys / on an empty table`,
    value: ratio,
    limit: 0.9,
    higherIsBetter: true,
  });

  // One day's expiry alone: the oldest day.
  const dayOneKeys = await keysBefore(full, 1);
  const alone = await expire(onFull, 1, true);
  console.log(
    `[${layout}] expiry of one day (${dayOneKeys} keys) alone: ${alone.seconds} s, WAL ${(alone.walBytes / 2 ** 20).toFixed(1)} MiB`,
  );

  // Expiry under the hot path. Plain: the next day's purge, with the hot path's p99 during it
  // against its p99 just before. Partitioned: a drop takes milliseconds, so rounds of three
  // windows of WINDOW_MS each, the middle one with a day's drop in its middle; the median of
  // the rounds' p99 ratios is kept.
  const underLoad: object[] = [];
  let p99Ratio: number;
  if (layout === 'plain') {
    const before = await hotPath(onFull, MESSAGES);
    const keys = (await keysBefore(full, 2)) - (await keysBefore(full, 1));
    const expiring = expire(onFull, 2, false);
    const [during, expired] = await Promise.all([hotPath(onFull, 0, expiring), expiring]);
    p99Ratio = round(during.p99Ms / before.p99Ms);
    underLoad.push({ keys, ...expired, hotPathBefore: before, hotPathDuring: during, p99Ratio });
    console.log(
      `[${layout}] expiry of one day (${keys} keys) under the hot path: ${expired.seconds} s, WAL ${(expired.walBytes / 2 ** 20).toFixed(1)} MiB (the hot path's own included); hot path p99 ${during.p99Ms} ms during, ${before.p99Ms} ms before: ${p99Ratio}x (${during.messagesPerSec} msg/s during, ${before.messagesPerSec} before)`,
    );
  } else {
    const ratios: number[] = [];
    const noise: number[] = [];
    for (let day = 2; day < DAYS - 1 && day < 2 + DROP_ROUNDS; day++) {
      const keys = (await keysBefore(full, day)) - (await keysBefore(full, day - 1));
      const before = await hotPath(onFull, 0, sleep(WINDOW_MS));
      const expiring = sleep(WINDOW_MS / 2).then(() => expire(onFull, day, false));
      const [during, expired] = await Promise.all([hotPath(onFull, 0, sleep(WINDOW_MS)), expiring]);
      const after = await hotPath(onFull, 0, sleep(WINDOW_MS));
      // Against the windows on both sides, so that a drift of the machine's load cancels out;
      // the two windows without a drop, one against the other, show the noise.
      const ratio = round((2 * during.p99Ms) / (before.p99Ms + after.p99Ms));
      const unchanged = round(after.p99Ms / before.p99Ms);
      ratios.push(ratio);
      noise.push(unchanged);
      underLoad.push({
        keys,
        ...expired,
        hotPathBefore: before,
        hotPathDuring: during,
        hotPathAfter: after,
        p99Ratio: ratio,
        p99RatioWithoutDrop: unchanged,
      });
      console.log(
        `[${layout}] drop of one day (${keys} keys) under the hot path: ${expired.seconds} s, WAL ${(expired.walBytes / 2 ** 20).toFixed(1)} MiB (the hot path's own included); hot path p99 ${during.p99Ms} ms in the window with the drop, ${before.p99Ms} ms before and ${after.p99Ms} ms after it: ${ratio}x (after/before, no drop in either: ${unchanged}x)`,
      );
    }
    console.log(`[${layout}] p99 ratios, median: with a drop ${median(ratios)}x, without (noise) ${median(noise)}x`);
    p99Ratio = round(median(ratios));
  }
  targets.push({
    target: `${layout}: hot path p99 during one day's expiry / without`,
    value: p99Ratio,
    limit: 1.1,
    higherIsBetter: false,
  });
  results[layout] = {
    fill: { keys: KEYS, days: DAYS, seconds: fillSeconds, tableBytes },
    hotPath: { full: fullRuns, empty: emptyRuns, ratio },
    expiryAlone: { keys: dayOneKeys, ...alone },
    expiryUnderLoad: { p99Ratio, rounds: underLoad },
  };
}

console.log('');
for (const t of targets) {
  console.log(
    `${met(t) ? 'MET   ' : 'MISSED'}  ${t.target}: ${t.value.toFixed(2)} (${t.higherIsBetter ? '>=' : '<='} ${t.limit})`,
  );
}
const load = loadavg()[0] ?? Number.NaN;
console.log(uptime());
saveResults('retention', {
  command: `node bench/retention.ts ${process.argv.slice(2).join(' ')}`.trim(),
  uptime: uptime(),
  loadAverage1m: load,
  settings: {
    keys: KEYS,
    dayKeys: DAY_KEYS,
    messages: MESSAGES,
    concurrency: CONCURRENCY,
    rounds: ROUNDS,
    windowMs: WINDOW_MS,
  },
  results,
  targets: targets.map((t) => ({ ...t, met: met(t) })),
});
await db.destroy();
