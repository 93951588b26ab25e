// `inboxkit status` on a big inbox table: what it costs beside the counts it avoids.
//
//   npm run bench -- cli-status     (or, after a build: node bench/cli-status.ts [--keys 2000000] [--rounds 3])
//
// Fills a table of its own with `keys` keys over three consumers (90%, 9%, 1%), 0.1% of them
// dead-lettered, analyzes it, then times (median of `rounds`, wall clock):
//
//   inboxkit --help         the process start-up alone
//   inboxkit status         the built bin as a process (connect, consumers, bounded counts,
//                           estimates, oldest key, attempts), start-up included
//   count(*) per consumer   what an exact status would run: SELECT consumer, count(*),
//                           count(*) FILTER (dead-lettered), min(processed_at) GROUP BY consumer
//
// Prints a table and saves bench/results/cli-status.json.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { migrateInbox } from '@inboxkit/core';
import { createPgKysely } from '@inboxkit/core/pg';
import pg from 'pg';
import { benchDatabase, median, saveResults } from './support.ts';

const run = promisify(execFile);
const { values: args } = parseArgs({
  options: {
    keys: { type: 'string', default: '2000000' },
    rounds: { type: 'string', default: '3' },
    // Time again on the table a previous run filled (same --keys), without filling it.
    reuse: { type: 'boolean', default: false },
  },
});
const keys = Number(args.keys);
const rounds = Number(args.rounds);
const BIN = fileURLToPath(new URL('../packages/cli/dist/bin.js', import.meta.url));

const DATABASE = 'inboxkit_bench_cli_status';
let url: string;
if (args.reuse) {
  const reused = new URL(process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
  reused.pathname = `/${DATABASE}`;
  url = reused.toString();
} else {
  url = await benchDatabase(DATABASE);
  const db = createPgKysely({ connectionString: url });
  const migrated = await migrateInbox(db);
  if (migrated.error) throw migrated.error;
  await db.destroy();
}

const client = new pg.Client({ connectionString: url });
await client.connect();
let started = Date.now();
if (!args.reuse) {
  await client.query(
    `INSERT INTO processed_messages (consumer, message_id, processed_at, payload_hash, status)
     SELECT CASE WHEN g % 100 < 90 THEN 'payments' WHEN g % 100 < 99 THEN 'ledger' ELSE 'refunds' END,
            md5(g::text), now() - (g % 604800) * interval '1 second', sha256(g::text::bytea),
            CASE WHEN g % 1000 = 0 THEN 'dead_lettered' ELSE 'processed' END
     FROM generate_series(1, $1) g`,
    [keys],
  );
  await client.query('ANALYZE processed_messages');
  console.log(`filled ${keys} keys in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

const startupMs: number[] = [];
const statusMs: number[] = [];
const countMs: number[] = [];
let output = '';
for (let round = 0; round < rounds; round++) {
  started = performance.now();
  await run(process.execPath, [BIN, '--help']);
  startupMs.push(performance.now() - started);
  started = performance.now();
  output = (await run(process.execPath, [BIN, 'status', '--json'], { env: { ...process.env, DATABASE_URL: url } }))
    .stdout;
  statusMs.push(performance.now() - started);
  started = performance.now();
  await client.query(
    `SELECT consumer, count(*), count(*) FILTER (WHERE status = 'dead_lettered'), min(processed_at)
     FROM processed_messages GROUP BY consumer`,
  );
  countMs.push(performance.now() - started);
}
const { rows } = await client.query<{ size: string }>(
  `SELECT pg_size_pretty(pg_total_relation_size('processed_messages')) AS size`,
);
await client.end();

const figures = {
  keys,
  tableSize: rows[0]?.size,
  startupMs: Math.round(median(startupMs)),
  statusMs: Math.round(median(statusMs)),
  exactCountMs: Math.round(median(countMs)),
  consumers: JSON.parse(output).consumers,
};
console.log(`\ntable: ${keys} keys, ${figures.tableSize}`);
console.log(`inboxkit --help (process start-up):            ${figures.startupMs} ms`);
console.log(`inboxkit status (process, median of ${rounds}):   ${figures.statusMs} ms`);
console.log(`exact counts per consumer (median of ${rounds}): ${figures.exactCountMs} ms`);
for (const c of figures.consumers) {
  console.log(
    `  ${c.consumer}: keys ${c.keysEstimated ? '~' : ''}${c.keys}, dead-lettered ${c.deadLetteredEstimated ? '~' : ''}${c.deadLettered}`,
  );
}
saveResults('cli-status', { args: { keys, rounds }, ...figures });
