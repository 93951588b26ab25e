// What `outbox.enqueue` costs a transaction, and what its per-key lock costs (docs/outbox.md,
// "Ordering"): transactions of one business insert, alone and with an enqueue, interleaved
// rounds, medians, at c=1 and c=8.
//
//   node bench/outbox-enqueue.ts [--transactions 2000] [--rounds 3]
//
// Modes:
// - bare: BEGIN, INSERT INTO charges, COMMIT;
// - keyless: the same plus one enqueue without a key (no lock);
// - keyed: one enqueue with a key of its own per transaction (the lock, uncontended);
// - keyed-hot: keys drawn from 4, so at c=8 transactions of one key wait for each other;
// - keyed-10: ten messages of ten keys in one enqueue call;
// - keyless-quiet, keyed-quiet: as keyless and keyed on an outbox made with `notify: false`
//   (no NOTIFY at commit: the relays poll).
// Prints transactions per second and saves bench/results/outbox-enqueue.json.
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { createOutbox, migrateOutbox, type Outbox } from '@inboxkit/core';
import { createPgPool } from '@inboxkit/core/pg';
import { Kysely, PostgresDialect, sql } from 'kysely';
import { benchDatabase, median, saveResults } from './support.ts';

const { values } = parseArgs({
  options: { transactions: { type: 'string', default: '2000' }, rounds: { type: 'string', default: '3' } },
});
const transactions = Number(values.transactions);
const rounds = Number(values.rounds);

interface DB {
  charges: { id: string; amount_cents: number };
}

const url = await benchDatabase('inboxkit_bench_outbox_enqueue');
const pool = createPgPool({ connectionString: url, max: 10 });
const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
const migrated = await migrateOutbox(db);
if (migrated.error) throw migrated.error;
await sql`CREATE TABLE charges (id text PRIMARY KEY, amount_cents integer NOT NULL)`.execute(db);
const notifying: Outbox = createOutbox({ db });
const quiet: Outbox = createOutbox({ db, notify: false });

type Mode = 'bare' | 'keyless' | 'keyed' | 'keyed-hot' | 'keyed-10' | 'keyless-quiet' | 'keyed-quiet';
const modes: Mode[] = ['bare', 'keyless', 'keyed', 'keyed-hot', 'keyed-10', 'keyless-quiet', 'keyed-quiet'];

async function one(mode: Mode, i: number): Promise<void> {
  const id = randomUUID();
  await db.transaction().execute(async (trx) => {
    await trx.insertInto('charges').values({ id, amount_cents: i }).execute();
    if (mode === 'bare') return;
    const payload = { id, amountCents: i };
    const outbox = mode.endsWith('-quiet') ? quiet : notifying;
    if (mode === 'keyless' || mode === 'keyless-quiet') await outbox.enqueue(trx, { topic: 'charges', payload });
    else if (mode === 'keyed' || mode === 'keyed-quiet')
      await outbox.enqueue(trx, { topic: 'charges', key: id, payload });
    else if (mode === 'keyed-hot') await outbox.enqueue(trx, { topic: 'charges', key: `hot-${i % 4}`, payload });
    else {
      await outbox.enqueue(
        trx,
        Array.from({ length: 10 }, (_, k) => ({ topic: 'charges', key: `${id}-${k}`, payload })),
      );
    }
  });
}

async function run(mode: Mode, concurrency: number): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < transactions; i = next++) await one(mode, i);
    }),
  );
  const perSec = transactions / ((performance.now() - started) / 1000);
  await sql`TRUNCATE charges, outbox`.execute(db);
  return perSec;
}

const results: { mode: Mode; concurrency: number; transactionsPerSec: number; vsBare: number }[] = [];
for (const concurrency of [1, 8]) {
  const samples = new Map<Mode, number[]>(modes.map((m) => [m, []]));
  for (let r = 0; r < rounds; r++) {
    for (const mode of modes) samples.get(mode)?.push(await run(mode, concurrency));
  }
  const bare = median(samples.get('bare') ?? []);
  for (const mode of modes) {
    const perSec = median(samples.get(mode) ?? []);
    results.push({
      mode,
      concurrency,
      transactionsPerSec: Math.round(perSec),
      vsBare: Number((perSec / bare).toFixed(2)),
    });
  }
}
console.log(`\n${'mode'.padEnd(13)}  c  ${'tx/s'.padStart(7)}  vs bare`);
for (const r of results) {
  console.log(
    `${r.mode.padEnd(13)}  ${r.concurrency}  ${String(r.transactionsPerSec).padStart(7)}  ${r.vsBare.toFixed(2)}x`,
  );
}
saveResults('outbox-enqueue', { transactions, rounds, results });
await db.destroy();
