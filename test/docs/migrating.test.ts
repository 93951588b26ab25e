// docs/migrating.md's SQL recipes, run as written against Postgres: old-style tables are
// filled (a hand-written dedup table; pg-transactional-outbox's inbox and outbox, made by that
// library's own DatabaseSetup and message storage), the page's recipe is run, and then an
// inbox must find the old ids as duplicates (under the consumer name the page's TypeScript
// gives createInbox) and the relay engine must publish the copied outbox rows, each key in
// the old table's order.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createInbox, createOutbox, migrateOutbox, type OutboxRecord } from '@inboxkit/core';
import { createOutboxRelay, type OutboxPublish } from '@inboxkit/core/adapter';
import { type Kysely, sql, type Transaction } from 'kysely';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase, type TestDB } from '../support/postgres.ts';

const PAGE = 'docs/migrating.md';
const ROOT = new URL('../../', import.meta.url);

/**
 * The ```lang blocks of the section under the line `heading` (up to the next heading of any
 * level outside a code block), in order.
 */
function sectionBlocks(heading: string, lang: string): string[] {
  const lines = readFileSync(new URL(PAGE, ROOT), 'utf8').split('\n');
  const start = lines.findIndex((line) => line.trim() === heading);
  if (start < 0) throw new Error(`${PAGE} has no heading ${JSON.stringify(heading)}`);
  const blocks: string[] = [];
  let open: { lang: string; body: string[] } | undefined;
  for (const line of lines.slice(start + 1)) {
    if (open === undefined) {
      if (/^#{1,6} /.test(line)) break;
      const fence = /^```(\w*)\s*$/.exec(line.trim());
      if (fence) open = { lang: fence[1] ?? '', body: [] };
    } else if (line.trim() === '```') {
      if (open.lang === lang) blocks.push(open.body.join('\n'));
      open = undefined;
    } else {
      open.body.push(line);
    }
  }
  if (blocks.length === 0) throw new Error(`${PAGE} has no \`\`\`${lang} block under ${JSON.stringify(heading)}`);
  return blocks;
}

/** The consumer name a TypeScript block of the page gives createInbox. */
function consumerOf(block: string): string {
  const match = /createInbox\(\{ db, consumer: '([^']+)' \}\)/.exec(block);
  if (match?.[1] === undefined) throw new Error(`no createInbox({ db, consumer: '...' }) in:\n${block}`);
  return match[1];
}

// pg-transactional-outbox, as the bench installs it (CommonJS).
interface PtxSetupConfig {
  outboxOrInbox: 'inbox' | 'outbox';
  database: string;
  schema: string;
  table: string;
  listenerRole: string;
}
interface PtxMessage {
  id: string;
  aggregateType: string;
  aggregateId: string;
  messageType: string;
  segment?: string;
  payload: unknown;
  createdAt?: string;
}
interface Ptx {
  DatabaseSetup: { dropAndCreateTable(config: PtxSetupConfig): string };
  initializeMessageStorage(
    config: { outboxOrInbox: 'inbox' | 'outbox'; settings: { dbSchema: string; dbTable: string } },
    logger: unknown,
  ): (message: PtxMessage, client: pg.PoolClient) => Promise<void>;
  getDisabledLogger(): unknown;
}
const ptx = createRequire(new URL('bench/package.json', ROOT))('pg-transactional-outbox') as Ptx;

/** Makes pg-transactional-outbox's table `table` with its own DDL and stores `messages` with its own storage. */
async function ptxTable(t: TestDatabase, outboxOrInbox: 'inbox' | 'outbox', messages: readonly PtxMessage[]) {
  const setup = { outboxOrInbox, database: t.name, schema: 'public', table: outboxOrInbox, listenerRole: 'unused' };
  await sql.raw(ptx.DatabaseSetup.dropAndCreateTable(setup)).execute(t.db);
  const store = ptx.initializeMessageStorage(
    { outboxOrInbox, settings: { dbSchema: 'public', dbTable: outboxOrInbox } },
    ptx.getDisabledLogger(),
  );
  const client = await t.pool.connect();
  try {
    for (const message of messages) {
      await client.query('BEGIN');
      await store(message, client);
      await client.query('COMMIT');
    }
  } finally {
    client.release();
  }
}

/** Marks rows as the library's listener does when it finishes (processed) or gives up (abandoned). */
async function ptxMark(t: TestDatabase, table: string, column: 'processed_at' | 'abandoned_at', ids: string[]) {
  await t.pool.query(
    `UPDATE public.${table} SET ${column} = clock_timestamp(), finished_attempts = finished_attempts + 1 WHERE id = ANY($1::uuid[])`,
    [ids],
  );
}

function runSql(db: Kysely<unknown>, text: string) {
  return sql.raw(text).execute(db);
}

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('docs_migrating');
});
afterAll(async () => {
  await t?.dispose();
});

/** An inbox's outcomes for ids, and how many times its handler ran. */
async function processAll(consumer: string, messages: readonly { id: string; payload: string }[]) {
  const inbox = createInbox({ db: t.db, consumer });
  let ran = 0;
  const outcomes = [];
  for (const message of messages) {
    outcomes.push(
      await inbox.process(message, () => {
        ran++;
        return undefined;
      }),
    );
  }
  return { inbox, ran, outcomes };
}

describe('docs/migrating.md, from a hand-written dedup table', () => {
  // The old table and the old claim, as the page shows them.
  let claim: string;
  beforeAll(async () => {
    const [old] = sectionBlocks('## From a hand-written dedup table', 'sql');
    const create = /CREATE TABLE processed \([^;]*\);/.exec(old ?? '')?.[0];
    const insert = /INSERT INTO processed \(id\)[^;]*;/.exec(old ?? '')?.[0];
    if (create === undefined || insert === undefined) throw new Error('the page no longer shows the old table');
    await runSql(t.db as Kysely<unknown>, create);
    claim = insert;
  });

  it("copies the old table's ids so that the page's consumer finds them as duplicates (never conflicts)", async () => {
    for (const id of ['charge-1', 'charge-2', 'charge-3', 'charge-old', 'charge-1']) {
      await t.pool.query(claim, [id]);
    }
    expect((await t.pool.query('SELECT id FROM processed')).rowCount).toBe(4);
    await t.pool.query(`UPDATE processed SET processed_at = now() - interval '30 days' WHERE id = 'charge-old'`);

    const [recipe] = sectionBlocks('### Copying the processed ids', 'sql');
    await runSql(t.db as Kysely<unknown>, recipe!);
    await runSql(t.db as Kysely<unknown>, recipe!); // runs again without harm

    // The consumer name of the page's "after" handler.
    const [, after] = sectionBlocks('### The handler, before and after', 'ts');
    const consumer = consumerOf(after!);
    expect(consumer).toBe('payments.charges');

    const old3 = ['charge-1', 'charge-2', 'charge-3'];
    const { inbox, ran, outcomes } = await processAll(consumer, [
      ...old3.map((id) => ({ id, payload: `{"id":"${id}"}` })),
      { id: 'charge-1', payload: 'other bytes: no fingerprint was copied, so not a conflict' },
      { id: 'charge-new', payload: '{"id":"charge-new"}' },
    ]);
    expect(outcomes.map((o) => o.status)).toEqual(['duplicate', 'duplicate', 'duplicate', 'duplicate', 'processed']);
    expect(ran).toBe(1);
    for (const outcome of outcomes.slice(0, 4)) {
      expect(outcome).toMatchObject({ previousStatus: 'processed', result: undefined });
    }

    // Keys are per consumer: another name sees the old ids as new.
    const other = await processAll('payments.other', [{ id: 'charge-1', payload: '' }]);
    expect(other.outcomes[0]?.status).toBe('processed');

    // processed_at was copied: the 30-day-old key goes at the next purge, the others stay.
    const purged = await inbox.purge();
    expect(purged.deleted).toBe(1);
    expect(await inbox.find('charge-old')).toBeUndefined();
    expect((await inbox.find('charge-1'))?.status).toBe('processed');
  });

  it('rolling switch: an old and a bridged new delivery of one id meet on the old key; effects apply once', async () => {
    // The page's bridged handler: the old claim inside the inbox's transaction.
    let effects = 0;
    const bridged = async (trx: Transaction<TestDB>, message: { id: string }) => {
      const { rows } = await sql<{ id: string }>`
        INSERT INTO processed (id) VALUES (${message.id}) ON CONFLICT (id) DO NOTHING RETURNING id`.execute(trx);
      if (rows.length === 0) return 'skipped';
      effects++;
      return 'applied';
    };
    const inbox = createInbox({ db: t.db, consumer: 'payments.bridge' });

    // Old first: the new delivery waits for the old transaction, then skips the effects.
    const old = await t.pool.connect();
    try {
      await old.query('BEGIN');
      expect((await old.query(claim, ['bridge-1'])).rowCount).toBe(1);
      let settled = false;
      const pending = inbox.process({ id: 'bridge-1', payload: 'x' }, bridged).finally(() => {
        settled = true;
      });
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(settled).toBe(false);
      await old.query('COMMIT');
      expect(await pending).toMatchObject({ status: 'processed', result: 'skipped' });
      expect(effects).toBe(0);

      // New first: the old delivery waits for the inbox's transaction, then finds the id.
      let release = () => {};
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      const first = inbox.process({ id: 'bridge-2', payload: 'x' }, async (trx, message) => {
        const result = await bridged(trx, message);
        await gate;
        return result;
      });
      await new Promise((resolve) => setTimeout(resolve, 200));
      await old.query('BEGIN');
      const oldClaim = old.query(claim, ['bridge-2']);
      await new Promise((resolve) => setTimeout(resolve, 200));
      release();
      expect(await first).toMatchObject({ status: 'processed', result: 'applied' });
      expect((await oldClaim).rowCount).toBe(0);
      await old.query('COMMIT');
      expect(effects).toBe(1);
    } finally {
      old.release();
    }
    expect((await inbox.process({ id: 'bridge-1', payload: 'x' }, bridged)).status).toBe('duplicate');
  });

  it('copies ids kept on business rows', async () => {
    await t.pool.query(`CREATE TABLE refunds (
      id text PRIMARY KEY, message_id text, amount_cents integer NOT NULL, processed_at timestamptz)`);
    await t.pool.query(`INSERT INTO refunds VALUES
      ('r1', 'refund-msg-1', 100, now()), ('r2', 'refund-msg-2', 200, now()),
      ('r3', NULL, 300, now()), ('r4', 'refund-msg-4', 400, NULL)`);
    const [, recipe] = sectionBlocks('### Copying the processed ids', 'sql');
    expect(recipe).toContain("'payments.refunds'");
    await runSql(t.db as Kysely<unknown>, recipe!);
    const { ran, outcomes } = await processAll('payments.refunds', [
      { id: 'refund-msg-1', payload: 'x' },
      { id: 'refund-msg-2', payload: 'x' },
      { id: 'refund-msg-4', payload: 'x' }, // no processed_at: not copied, runs
    ]);
    expect(outcomes.map((o) => o.status)).toEqual(['duplicate', 'duplicate', 'processed']);
    expect(ran).toBe(1);
  });
});

describe('docs/migrating.md, from pg-transactional-outbox', () => {
  it("copies its inbox's processed and abandoned ids for the page's consumer", async () => {
    const message = (messageType: string): PtxMessage => ({
      id: randomUUID(),
      aggregateType: 'movie',
      aggregateId: randomUUID(),
      messageType,
      payload: { title: 'a movie' },
    });
    const processed = [message('movie_created'), message('movie_created')];
    const abandoned = message('movie_created');
    const pending = message('movie_created');
    await ptxTable(t, 'inbox', [...processed, abandoned, pending]);
    await ptxMark(
      t,
      'inbox',
      'processed_at',
      processed.map((m) => m.id),
    );
    await ptxMark(t, 'inbox', 'abandoned_at', [abandoned.id]);

    const [recipe] = sectionBlocks('### Moving the inbox', 'sql');
    await runSql(t.db as Kysely<unknown>, recipe!);
    await runSql(t.db as Kysely<unknown>, recipe!);

    const [handler] = sectionBlocks('### Moving the inbox', 'ts');
    const consumer = consumerOf(handler!);
    expect(consumer).toBe('movies.published');
    const fresh = randomUUID();
    const { ran, outcomes } = await processAll(consumer, [
      ...processed.map((m) => ({ id: m.id, payload: JSON.stringify(m) })),
      { id: abandoned.id, payload: JSON.stringify(abandoned) },
      // Neither processed nor abandoned: not copied. It would run again, which is why the page
      // drains the old inbox first (the old receiver acked it already).
      { id: pending.id, payload: JSON.stringify(pending) },
      { id: fresh, payload: '{}' },
    ]);
    expect(outcomes.map((o) => o.status)).toEqual(['duplicate', 'duplicate', 'duplicate', 'processed', 'processed']);
    expect(outcomes.slice(0, 3).map((o) => (o.status === 'duplicate' ? o.previousStatus : o.status))).toEqual([
      'processed',
      'processed',
      'dead_lettered',
    ]);
    expect(ran).toBe(2);
  });

  it('copies its unsent outbox rows, which the relay publishes once, each key in created_at order', async () => {
    const t0 = Date.parse('2026-12-01T10:00:00Z');
    const row = (segment: string | undefined, second: number): PtxMessage => ({
      id: randomUUID(),
      aggregateType: 'movie',
      aggregateId: segment ?? 'none',
      messageType: `movie_changed_${second}`,
      ...(segment === undefined ? {} : { segment }),
      payload: { segment: segment ?? null, second, title: 'Ünïcode "quoted"', tags: ['a', 'b'] },
      createdAt: new Date(t0 + second * 1000).toISOString(),
    });
    const a = [row('movie-a', 1), row('movie-a', 2), row('movie-a', 3), row('movie-a', 4)];
    const b = [row('movie-b', 2), row('movie-b', 5)];
    const keyless = row(undefined, 6);
    const sent = row('movie-a', 0);
    const abandoned = row('movie-b', 1);
    // Stored out of created_at order: the copy must order them, not the heap.
    await ptxTable(t, 'outbox', [a[2]!, b[1]!, a[0]!, keyless, a[3]!, b[0]!, a[1]!, sent, abandoned]);
    await ptxMark(t, 'outbox', 'processed_at', [sent.id]);
    await ptxMark(t, 'outbox', 'abandoned_at', [abandoned.id]);

    // Both default to public.outbox: inboxkit's migration refuses the old table.
    const clash = await migrateOutbox(t.db);
    expect(String(clash.error)).toContain('column "status" does not exist');
    const columns = await t.pool.query(
      `SELECT count(*)::int AS n FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'outbox'`,
    );
    expect(columns.rows[0].n).toBe(14); // pg-transactional-outbox's columns, untouched
    const migrated = await migrateOutbox(t.db, { table: 'inboxkit_outbox' });
    expect(migrated.error).toBeUndefined();

    const [recipe] = sectionBlocks('### Moving the outbox', 'sql');
    await runSql(t.db as Kysely<unknown>, recipe!);
    await runSql(t.db as Kysely<unknown>, recipe!); // hands over nothing the second time
    const unsent = [...a, ...b, keyless];
    const copied = await t.pool.query('SELECT count(*)::int AS n FROM inboxkit_outbox');
    expect(copied.rows[0].n).toBe(unsent.length);
    const left = await t.pool.query('SELECT count(*)::int AS n FROM outbox WHERE processed_at IS NULL');
    expect(left.rows[0].n).toBe(1); // the abandoned row only

    const published: OutboxRecord[] = [];
    const publish: OutboxPublish = async (records) => {
      published.push(...records);
      return records.map(() => undefined);
    };
    const relay = createOutboxRelay({
      outbox: createOutbox({ db: t.db, table: 'inboxkit_outbox' }),
      publish,
      pollIntervalMs: 50,
      batchSize: 3,
    });
    try {
      const deadline = Date.now() + 20_000;
      while (published.length < unsent.length && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      await new Promise((resolve) => setTimeout(resolve, 300)); // nothing more comes
    } finally {
      await relay.close();
    }

    expect(published.map((r) => r.messageId).sort()).toEqual(unsent.map((m) => m.id).sort());
    const order = (key: string) => published.filter((r) => r.key === key).map((r) => r.messageId);
    expect(order('movie-a')).toEqual(a.map((m) => m.id));
    expect(order('movie-b')).toEqual(b.map((m) => m.id));
    for (const message of unsent) {
      const record = published.find((r) => r.messageId === message.id)!;
      expect(record.destination).toBe('movie');
      expect(record.key).toBe(message.segment ?? null);
      expect(record.headers).toEqual({ 'message-type': message.messageType });
      expect(JSON.parse(record.payload.toString('utf8'))).toEqual(message.payload);
    }
    const remaining = await t.pool.query('SELECT count(*)::int AS n FROM inboxkit_outbox');
    expect(remaining.rows[0].n).toBe(0);
  });
});
