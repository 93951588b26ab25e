// The core demo: a payments consumer fed at-least-once, checked to charge exactly once.
// `demo_charges` has no unique constraint on purpose: only the inbox stands between a
// redelivery and a second charge, and the final query would see one.
//
//   npm run demo -- --core         (or: node examples/demo/core-demo.ts [--charges 2000])
//
// A "broker" made of plain arrays delivers N charge requests with 30% re-sends (a client
// retrying after a timeout), shuffled, to four concurrent workers; a tenth of the
// deliveries crash half-way (the transaction dies before commit) and are redelivered; one
// request is poison. At the end a query checks that every charge was applied exactly once.
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { createInbox, migrateInbox, NonRetryableError } from '@inboxkit/core';
import { createPgKysely } from '@inboxkit/core/pg';
import { sql } from 'kysely';
import pg from 'pg';

const { values: args } = parseArgs({
  options: { charges: { type: 'string', default: '2000' }, url: { type: 'string' } },
});
const CHARGES = Number(args.charges);
const serverUrl = args.url ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

// A database of the demo's own, dropped at the end.
const database = `inboxkit_core_demo_${randomBytes(3).toString('hex')}`;
const admin = new pg.Client({ connectionString: serverUrl });
await admin.connect();
await admin.query(`CREATE DATABASE "${database}"`);
const dbUrl = new URL(serverUrl);
dbUrl.pathname = `/${database}`;
const url = dbUrl.toString();

interface DB {
  demo_charges: { charge_id: string; user_id: string; amount_cents: number };
}
interface ChargeRequest {
  chargeId: string;
  userId: string;
  amountCents: number;
}

const db = createPgKysely<DB>({ connectionString: url, max: 4 });
const { error } = await migrateInbox(db as never);
if (error) throw error;
await sql`CREATE TABLE demo_charges (charge_id text NOT NULL, user_id text NOT NULL, amount_cents integer NOT NULL)`.execute(
  db,
);

// The requests, the re-sends, and one poison request (a negative amount).
const requests: ChargeRequest[] = Array.from({ length: CHARGES }, (_, i) => ({
  chargeId: `ch_${String(i).padStart(6, '0')}`,
  userId: `user_${i % 97}`,
  amountCents: 100 + ((i * 37) % 5000),
}));
const poison: ChargeRequest = { chargeId: 'ch_poison', userId: 'user_0', amountCents: -500 };
const deliveries = [...requests, ...requests.slice(0, Math.floor(CHARGES * 0.3)), poison];
for (let i = deliveries.length - 1; i > 0; i--) {
  const j = Math.floor(Math.random() * (i + 1));
  [deliveries[i], deliveries[j]] = [deliveries[j] as ChargeRequest, deliveries[i] as ChargeRequest];
}
const expectedCents = requests.reduce((sum, r) => sum + r.amountCents, 0);

const inbox = createInbox({ db, consumer: 'demo.payments', retry: { retries: 2, minTimeout: 5 } });
const counts = { delivered: 0, processed: 0, duplicates: 0, crashed: 0, deadLettered: 0 };
const tty = process.stdout.isTTY;
let lastLine = 0;
function progress(final = false): void {
  const done = counts.processed + counts.duplicates + counts.deadLettered;
  const total = deliveries.length;
  if (tty) {
    const width = 30;
    const filled = Math.round((done / total) * width);
    process.stdout.write(
      `\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} processed ${counts.processed}, duplicates ${counts.duplicates}, crashes ${counts.crashed}${final ? '\n' : ''}`,
    );
  } else if (final || Date.now() - lastLine > 1000) {
    lastLine = Date.now();
    console.log(`progress: ${done}/${total} deliveries settled`);
  }
}

class SimulatedCrash extends Error {}
const queue = [...deliveries];
await Promise.all(
  Array.from({ length: 4 }, async () => {
    for (let request = queue.shift(); request !== undefined; request = queue.shift()) {
      counts.delivered++;
      const crash = Math.random() < 0.1;
      const body = Buffer.from(JSON.stringify(request));
      const outcome = await inbox.process({ id: request.chargeId, payload: body, request }, async (trx, message) => {
        if (message.request.amountCents <= 0) throw new NonRetryableError('amount must be positive');
        await trx
          .insertInto('demo_charges')
          .values({
            charge_id: message.request.chargeId,
            user_id: message.request.userId,
            amount_cents: message.request.amountCents,
          })
          .execute();
        // The process "dies" after its write, before the commit: nothing may be left behind.
        if (crash) throw new NonRetryableError('simulated crash', { cause: new SimulatedCrash() });
        return { charged: message.request.amountCents };
      });
      if (outcome.status === 'dead_letter' && outcome.error.cause instanceof SimulatedCrash) {
        counts.crashed++;
        queue.push(request); // the broker redelivers what was never acked
      } else if (outcome.status === 'processed') counts.processed++;
      else if (outcome.status === 'duplicate') counts.duplicates++;
      else if (outcome.status === 'dead_letter') {
        counts.deadLettered++;
        await inbox.recordDeadLetter({ id: request.chargeId, payload: body }, outcome);
      } else queue.push(request);
      progress();
    }
  }),
);
progress(true);

const check = await sql<{ rows: string; distinct_ids: string; total: string }>`
  SELECT count(*) AS rows, count(DISTINCT charge_id) AS distinct_ids, coalesce(sum(amount_cents), 0) AS total FROM demo_charges`.execute(
  db,
);
const row = check.rows[0];
const rows = Number(row?.rows);
const total = Number(row?.total);
const exact =
  rows === CHARGES && Number(row?.distinct_ids) === CHARGES && total === expectedCents && counts.deadLettered === 1;
console.log('');
console.table({
  'messages delivered': counts.delivered,
  'crashed before commit (redelivered)': counts.crashed,
  'duplicates suppressed': counts.duplicates,
  'charges written': rows,
  'total charged (cents)': total,
  'expected (cents)': expectedCents,
  'dead-lettered': counts.deadLettered,
});
console.log(
  exact ? 'OK: every charge was applied exactly once (checked by query).' : 'FAILED: the charges do not match.',
);
await db.destroy();
await admin.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
await admin.end();
process.exitCode = exact ? 0 : 1;
