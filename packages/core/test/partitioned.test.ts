// The inbox table partitioned by time (docs/retention.md): deduplication across partition
// boundaries under concurrency, partition maintenance from purge(), the conversion of a
// plain table, and the isolation levels it refuses.
import {
  ConfigurationError,
  createInbox,
  type Inbox,
  inboxPartitionSql,
  inboxSchemaSql,
  migrateInbox,
  NonRetryableError,
  type PartitionOptions,
  type ProcessOutcome,
} from '@inboxkit/core';
import { type Kysely, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase, type TestDB } from '../../../test/support/postgres.ts';

let t: TestDatabase;
let db: Kysely<TestDB>;
beforeAll(async () => {
  t = await createTestDatabase('core_partitioned');
  db = t.connect(12).db;
});
afterAll(async () => {
  await t?.dispose();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const DAY_MS = 86_400_000;

async function partitionedSchema(schema: string, partitioned: PartitionOptions): Promise<void> {
  const { error } = await migrateInbox(db, { schema, partitioned });
  if (error) throw error;
}

/** The partitions of `schema.processed_messages`, oldest first, with their bounds. */
async function partitions(schema: string): Promise<{ name: string; from: Date | null; to: Date }[]> {
  const { rows } = await sql<{ name: string; bound: string }>`
    SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = ${`${schema}.processed_messages`}::regclass`.execute(db);
  return rows
    .map((row) => {
      const [, from, to] = /FROM \((?:'([^']*)'|MINVALUE)\) TO \('([^']*)'\)/.exec(row.bound) ?? [];
      return { name: row.name, from: from === undefined ? null : new Date(from), to: new Date(String(to)) };
    })
    .sort((a, b) => a.to.getTime() - b.to.getTime());
}

/** Tables named like partitions in `schema`, attached or not. */
async function tablesLike(schema: string): Promise<number> {
  const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_tables
    WHERE schemaname = ${schema} AND tablename LIKE 'processed_messages\_p%'`.execute(db);
  return rows[0]?.n ?? 0;
}

/** The stored rows of a key, with the partition each lies in. */
async function keyRows(schema: string, id: string) {
  const { rows } = await sql<{ partition: string; processed_at: Date; status: string }>`
    SELECT tableoid::regclass::text AS partition, processed_at, status
    FROM ${sql.table(`${schema}.processed_messages`)} WHERE message_id = ${id}`.execute(db);
  return rows;
}

async function charges(id: string): Promise<number> {
  const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM charges WHERE id = ${id}`.execute(db);
  return rows[0]?.n ?? 0;
}

function charge(id: string) {
  return async (trx: Kysely<TestDB>) => {
    await trx.insertInto('charges').values({ id, user_id: 'u', amount_cents: 100 }).execute();
    return 'charged';
  };
}

/** The next start of a partition of `intervalMs` at least `marginMs` from now. */
function nextBoundary(intervalMs: number, marginMs: number): number {
  let boundary = (Math.floor(Date.now() / intervalMs) + 1) * intervalMs;
  if (boundary - Date.now() < marginMs) boundary += intervalMs;
  return boundary;
}

async function until(time: number): Promise<void> {
  while (Date.now() <= time) await sleep(Math.max(1, time - Date.now() + 5));
}

describe('a partitioned inbox table', () => {
  it('is opt-in: migrateInbox makes a plain table; with `partitioned` the current partition and `premake` more', async () => {
    const kinds = await sql<{ nspname: string; relkind: string }>`
      SELECT n.nspname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relname = 'processed_messages' AND n.nspname = 'public'`.execute(db);
    expect(kinds.rows).toEqual([{ nspname: 'public', relkind: 'r' }]);
    expect(inboxSchemaSql()).not.toContain('PARTITION BY');

    await partitionedSchema('part_fresh', { intervalMs: DAY_MS, premake: 3 });
    const made = await partitions('part_fresh');
    expect(made).toHaveLength(4);
    const now = Date.now();
    expect(made[0]?.from?.getTime()).toBeLessThanOrEqual(now);
    expect(made[0]?.to.getTime()).toBeGreaterThan(now);
    expect(made.every((p, i) => i === 0 || p.from?.getTime() === made[i - 1]?.to.getTime())).toBe(true);
    // Idempotent: run again, nothing changes.
    await partitionedSchema('part_fresh', { intervalMs: DAY_MS, premake: 3 });
    expect(await partitions('part_fresh')).toHaveLength(4);
  });

  it('8 concurrent deliveries of one id straddling a partition boundary: one applies, 7 are duplicates', async () => {
    const schema = 'part_straddle';
    const intervalMs = 2000;
    await partitionedSchema(schema, { intervalMs, premake: 60 });
    const inbox = createInbox({ db, consumer: 'straddle', schema, lockTimeoutMs: 20_000 });
    const id = 'straddle-1';
    const boundary = nextBoundary(intervalMs, 800);
    let lateStarted: () => void = () => {};
    const late = new Promise<void>((resolve) => {
      lateStarted = resolve;
    });
    let runs = 0;
    const handler = async (trx: Kysely<TestDB>) => {
      runs++;
      // Hold the key until the deliveries that began after the boundary wait on it.
      await late;
      await sleep(300);
      return charge(id)(trx);
    };
    const deliveries: Promise<ProcessOutcome<string>>[] = [];
    for (let i = 0; i < 4; i++) deliveries.push(inbox.process({ id, payload: 'pay' }, handler));
    await until(boundary);
    for (let i = 0; i < 4; i++) deliveries.push(inbox.process({ id, payload: 'pay' }, handler));
    lateStarted();
    const outcomes = await Promise.all(deliveries);

    expect(outcomes.filter((o) => o.status === 'processed')).toHaveLength(1);
    expect(outcomes.filter((o) => o.status === 'duplicate')).toHaveLength(7);
    expect(runs).toBe(1);
    expect(await charges(id)).toBe(1);
    const rows = await keyRows(schema, id);
    expect(rows).toHaveLength(1);
    // The winner began before the boundary: its key lies in the earlier partition, and the
    // four that began after it (whose own rows would go to the next one) found it there.
    expect(rows[0]?.processed_at.getTime()).toBeLessThan(boundary);
  });

  it('across a boundary, a delivery waiting on one that rolls back applies, in the later partition', async () => {
    const schema = 'part_rollback';
    const intervalMs = 2000;
    await partitionedSchema(schema, { intervalMs, premake: 60 });
    const inbox = createInbox({ db, consumer: 'rollback', schema, lockTimeoutMs: 20_000 });
    const id = 'rollback-1';
    const boundary = nextBoundary(intervalMs, 800);
    let lateStarted: () => void = () => {};
    const late = new Promise<void>((resolve) => {
      lateStarted = resolve;
    });
    const first = inbox.process({ id, payload: 'pay' }, async (trx) => {
      await charge(id)(trx);
      await late;
      await sleep(300);
      throw new NonRetryableError('card declined');
    });
    await until(boundary);
    const second = inbox.process({ id, payload: 'pay' }, charge(id));
    lateStarted();
    const [a, b] = await Promise.all([first, second]);

    expect(a.status).toBe('dead_letter');
    expect(b.status).toBe('processed');
    expect(await charges(id)).toBe(1);
    const rows = await keyRows(schema, id);
    expect(rows).toHaveLength(1);
    expect(rows[0]?.processed_at.getTime()).toBeGreaterThanOrEqual(boundary);
  });

  it('concurrent batches sharing ids apply each id once (ledger rows, no unique index to help)', async () => {
    const schema = 'part_batches';
    await partitionedSchema(schema, { intervalMs: 1000, premake: 60 });
    const inbox = createInbox({ db, consumer: 'batches', schema, lockTimeoutMs: 20_000 });
    const ids = Array.from({ length: 40 }, (_, i) => `b-${i}`);
    const shuffled = (seed: number) =>
      [...ids].sort((x, y) => ((x.charCodeAt(2) * seed) % 7) - ((y.charCodeAt(2) * seed) % 7));
    const results = await Promise.all(
      [1, 2, 3, 4, 5, 6].map((seed) =>
        inbox.processBulk(
          shuffled(seed).map((id) => ({ id, payload: 'p' })),
          async (trx, messages) => {
            await sleep(20);
            await trx
              .insertInto('ledger')
              .values(messages.map((m) => ({ charge_id: `${schema}:${m.id}`, amount_cents: 1 })))
              .execute();
            return messages.map(() => 'ok');
          },
        ),
      ),
    );
    const processed = results.flatMap((r) => r.outcomes).filter((o) => o.status === 'processed');
    expect(processed).toHaveLength(ids.length);
    const { rows } = await sql<{ n: number; distinct_ids: number }>`
      SELECT count(*)::int AS n, count(DISTINCT charge_id)::int AS distinct_ids FROM ledger
      WHERE charge_id LIKE ${`${schema}:%`}`.execute(db);
    expect(rows[0]).toEqual({ n: ids.length, distinct_ids: ids.length });
  });

  it('an id redelivered one partition later is a duplicate: one message, a batch, a dead letter', async () => {
    const schema = 'part_later';
    const intervalMs = 1000;
    await partitionedSchema(schema, { intervalMs, premake: 60 });
    const inbox = createInbox({ db, consumer: 'later', schema });
    expect((await inbox.process({ id: 'later-1', payload: 'p' }, charge('later-1'))).status).toBe('processed');
    const batch = await inbox.processBatch(
      [
        { id: 'later-2', payload: 'p' },
        { id: 'later-3', payload: 'p' },
      ],
      (trx, message) => charge(message.id)(trx),
    );
    expect(batch.outcomes.map((o) => o.status)).toEqual(['processed', 'processed']);
    await inbox.recordDeadLetter(
      { id: 'later-4', payload: 'p' },
      {
        status: 'dead_letter',
        messageId: 'later-4',
        reason: 'non_retryable',
        error: new Error('bad'),
        attempts: 1,
        firstSeenAt: new Date(),
      },
    );
    const before = (await keyRows(schema, 'later-1'))[0]?.partition;
    await until(nextBoundary(intervalMs, 0));

    const again = await inbox.process({ id: 'later-1', payload: 'p' }, charge('later-1'));
    expect(again).toMatchObject({ status: 'duplicate', result: 'charged' });
    const bulk = await inbox.processBulk(
      [
        { id: 'later-2', payload: 'p' },
        { id: 'later-5', payload: 'p' },
        { id: 'later-3', payload: 'p' },
        { id: 'later-4', payload: 'p' },
      ],
      async (trx, messages) => {
        for (const message of messages) await charge(message.id)(trx);
        return messages.map(() => 'charged');
      },
    );
    expect(bulk.outcomes.map((o) => o.status)).toEqual(['duplicate', 'processed', 'duplicate', 'duplicate']);
    expect(bulk.outcomes[3]).toMatchObject({ previousStatus: 'dead_lettered' });
    const conflict = await inbox.process({ id: 'later-1', payload: 'other content' }, charge('later-1'));
    expect(conflict.status).toBe('conflict');

    for (const id of ['later-1', 'later-2', 'later-3', 'later-5']) expect(await charges(id)).toBe(1);
    expect(await charges('later-4')).toBe(0);
    expect((await keyRows(schema, 'later-1'))[0]?.partition).toBe(before);
    expect((await keyRows(schema, 'later-5'))[0]?.partition).not.toBe(before);
  });

  it('purge() drops partitions whose keys are all expired and creates new ones ahead, one purger at a time', async () => {
    const schema = 'part_purge';
    const intervalMs = 1000;
    const table = `"${schema}"."processed_messages"`;
    await partitionedSchema(schema, { intervalMs, premake: 3, retentionMs: 2000 });
    const inbox = createInbox({ db, consumer: 'purger-a', schema });
    const other = createInbox({ db, consumer: 'purger-b', schema });
    expect((await inbox.process({ id: 'old-1', payload: 'p' }, async () => 1)).status).toBe('processed');
    const oldPartition = (await keyRows(schema, 'old-1'))[0]?.partition;
    await sleep(3500);

    // Another process holds the maintenance lock: this purge does nothing.
    const holder = t.connect(1).db;
    await holder.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(hashtextextended(${`inboxkit:partitions:${table}`}, 0))`.execute(trx);
      expect(await inbox.purge()).toMatchObject({ skipped: true, deleted: 0 });
    });

    // A retention shorter than the table's floor does not drop more.
    const [a, b] = await Promise.all([inbox.purge({ olderThanMs: 1 }), other.purge({ olderThanMs: 1 })]);
    const ran = [a, b].filter((r) => !r.skipped);
    expect(ran.length).toBeGreaterThanOrEqual(1);
    const dropped = ran.reduce((sum, r) => sum + (r.partitions?.dropped ?? 0), 0);
    const created = ran.reduce((sum, r) => sum + (r.partitions?.created ?? 0), 0);
    expect(dropped).toBeGreaterThanOrEqual(1);
    expect(created).toBeGreaterThanOrEqual(3);
    const left = await partitions(schema);
    const now = Date.now();
    expect(left.map((p) => p.name)).not.toContain(oldPartition?.split('.')[1]);
    expect(left.every((p) => p.to.getTime() > now - 2000 - 1000)).toBe(true);
    expect(Math.max(...left.map((p) => p.to.getTime()))).toBeGreaterThan(now + 2000);
    expect(await keyRows(schema, 'old-1')).toHaveLength(0);
    // Detached, then dropped: no table is left behind beside the partitions.
    expect(await tablesLike(schema)).toBe(left.length);
    // Its key expired with its partition: the id is new again, in the current partition.
    expect((await inbox.process({ id: 'old-1', payload: 'p' }, async () => 2)).status).toBe('processed');
    await holder.destroy();
  });

  it('a partition detached by a purge that stopped before its drop is dropped by the next purge', async () => {
    const schema = 'part_detached';
    await partitionedSchema(schema, { intervalMs: 1000, premake: 2, retentionMs: 1000 });
    const inbox = createInbox({ db, consumer: 'detached', schema });
    await inbox.process({ id: 'detached-1', payload: 'p' }, async () => 1);
    await sleep(2500);
    // The first step alone, as a purger that died after it would leave things.
    const { rows } = await sql<{ dropped: number }>`
      SELECT dropped FROM ${sql.raw(`"${schema}"."processed_messages_maintain"`)}(0, '1s')`.execute(db);
    expect(rows[0]?.dropped).toBeGreaterThanOrEqual(1);
    expect(await tablesLike(schema)).toBeGreaterThan((await partitions(schema)).length);
    expect(await keyRows(schema, 'detached-1')).toHaveLength(0);
    await inbox.purge();
    expect(await tablesLike(schema)).toBe((await partitions(schema)).length);
  });

  it('a claim that finds no partition for now (no purge ran for too long) makes them and goes on', async () => {
    const schema = 'part_missing';
    await partitionedSchema(schema, { intervalMs: DAY_MS, premake: 2 });
    const inbox = createInbox({ db, consumer: 'missing', schema });
    for (const batchFirst of [false, true]) {
      for (const p of await partitions(schema)) await sql.raw(`DROP TABLE "${schema}"."${p.name}"`).execute(db);
      expect(await partitions(schema)).toHaveLength(0);
      const id = `missing-${batchFirst}`;
      const outcome = batchFirst
        ? (await inbox.processBatch([{ id, payload: 'p' }], (trx, m) => charge(m.id)(trx))).outcomes[0]
        : await inbox.process({ id, payload: 'p' }, charge(id));
      expect(outcome?.status).toBe('processed');
      expect(await partitions(schema)).toHaveLength(3);
      expect(await charges(id)).toBe(1);
    }
  });

  it.each([
    ['part_convert', false],
    ['part_convert_prebuilt', true],
  ])(
    'converts a plain table with keys in place: old keys stay duplicates, a running inbox follows (%s)',
    async (schema, prebuilt) => {
      expect((await migrateInbox(db, { schema })).error).toBeUndefined();
      const inbox = createInbox({ db, consumer: 'convert', schema });
      await inbox.process({ id: `${schema}-conv-1`, payload: 'p' }, charge(`${schema}-conv-1`));
      await inbox.processBatch([{ id: `${schema}-conv-2`, payload: 'p' }], (trx, m) => charge(m.id)(trx));
      await sql`INSERT INTO ${sql.table(`${schema}.processed_messages`)} (consumer, message_id, processed_at)
      SELECT 'convert', ${`${schema}-bulk-`}::text || g, now() - interval '1 hour' FROM generate_series(1, 5000) AS g`.execute(
        db,
      );

      if (prebuilt) {
        // docs/retention.md: on a large table, the partitions' key is built beforehand.
        await sql
          .raw(`CREATE UNIQUE INDEX CONCURRENTLY processed_messages_partition_key
          ON "${schema}".processed_messages (consumer, message_id, processed_at)`)
          .execute(db);
      }
      const { error } = await migrateInbox(db, { schema, partitioned: { intervalMs: DAY_MS } });
      expect(error).toBeUndefined();
      const { rows: keyIndex } = await sql<{ indexname: string }>`
      SELECT indexname FROM pg_indexes WHERE schemaname = ${schema} AND tablename = 'processed_messages_plain'
      AND indexdef LIKE '%(consumer, message_id, processed_at)%'`.execute(db);
      expect(keyIndex.map((r) => r.indexname)).toEqual(['processed_messages_plain_pkey']);
      const made = await partitions(schema);
      expect(made[0]?.name).toBe('processed_messages_plain');
      expect(made[0]?.from).toBeNull();
      const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM ${sql.table(`${schema}.processed_messages`)}`.execute(db);
      expect(rows[0]?.n).toBe(5002);

      // The inbox created before the conversion: its single and batch claims follow the table.
      expect((await inbox.process({ id: `${schema}-conv-1`, payload: 'p' }, charge(`${schema}-conv-1`))).status).toBe(
        'duplicate',
      );
      const batch = await inbox.processBatch(
        [
          { id: `${schema}-conv-2`, payload: 'p' },
          { id: `${schema}-bulk-7`, payload: 'p' },
          { id: `${schema}-conv-3`, payload: 'p' },
        ],
        (trx, m) => charge(m.id)(trx),
      );
      expect(batch.outcomes.map((o) => o.status)).toEqual(['duplicate', 'duplicate', 'processed']);
      for (const id of [`${schema}-conv-1`, `${schema}-conv-2`, `${schema}-conv-3`]) expect(await charges(id)).toBe(1);
      expect(await charges(`${schema}-bulk-7`)).toBe(0);
      // A fresh inbox, too.
      const fresh = createInbox({ db, consumer: 'convert', schema });
      expect((await fresh.process({ id: `${schema}-bulk-9`, payload: 'p' }, charge(`${schema}-bulk-9`))).status).toBe(
        'duplicate',
      );
    },
  );

  it('goes back to a plain table with the procedure of docs/retention.md', async () => {
    const schema = 'part_back';
    await partitionedSchema(schema, { intervalMs: 1000, premake: 5 });
    const inbox = createInbox({ db, consumer: 'back', schema });
    await inbox.process({ id: 'back-1', payload: 'p' }, charge('back-1'));
    await until(nextBoundary(1000, 0));
    await inbox.process({ id: 'back-2', payload: 'p' }, charge('back-2'));

    // The procedure, as the docs give it (names for schema part_back).
    await db.transaction().execute(async (trx) => {
      await sql.raw(`LOCK TABLE ${schema}.processed_messages IN ACCESS EXCLUSIVE MODE`).execute(trx);
      await sql.raw(`ALTER TABLE ${schema}.processed_messages RENAME TO processed_messages_partitioned`).execute(trx);
      await sql.raw(inboxSchemaSql({ schema })).execute(trx);
      await sql
        .raw(`INSERT INTO ${schema}.processed_messages (consumer, message_id, processed_at, payload_hash, result, status)
        SELECT consumer, message_id, processed_at, payload_hash, result, status FROM ${schema}.processed_messages_partitioned
        ON CONFLICT (consumer, message_id) DO NOTHING`)
        .execute(trx);
      await sql.raw(`DROP TABLE ${schema}.processed_messages_partitioned`).execute(trx);
      // Again, now that no partition holds the name of the plain table's processed_at index.
      await sql.raw(inboxSchemaSql({ schema })).execute(trx);
      await sql
        .raw(`DROP FUNCTION ${schema}.processed_messages_claim(text, text[], bytea[], text, jsonb[], text, text);
        DROP FUNCTION ${schema}.processed_messages_maintain(bigint, text)`)
        .execute(trx);
    });

    const kind = await sql<{
      relkind: string;
    }>`SELECT relkind FROM pg_class WHERE oid = ${`${schema}.processed_messages`}::regclass`.execute(db);
    expect(kind.rows[0]?.relkind).toBe('r');
    const indexes = await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_indexes
      WHERE schemaname = ${schema} AND tablename = 'processed_messages' AND indexdef LIKE '%(processed_at)%'`.execute(
      db,
    );
    expect(indexes.rows[0]?.n).toBe(1);
    const fresh = createInbox({ db, consumer: 'back', schema });
    expect((await fresh.process({ id: 'back-1', payload: 'p' }, charge('back-1'))).status).toBe('duplicate');
    const batch = await fresh.processBatch(
      [
        { id: 'back-2', payload: 'p' },
        { id: 'back-3', payload: 'p' },
      ],
      (trx, m) => charge(m.id)(trx),
    );
    expect(batch.outcomes.map((o) => o.status)).toEqual(['duplicate', 'processed']);
    for (const id of ['back-1', 'back-2', 'back-3']) expect(await charges(id)).toBe(1);
  });

  it('refuses REPEATABLE READ and SERIALIZABLE, in the inbox and in the claim functions', async () => {
    const schema = 'part_isolation';
    await partitionedSchema(schema, { intervalMs: DAY_MS });
    for (const isolationLevel of ['repeatable read', 'serializable'] as const) {
      const inbox: Inbox<TestDB> = createInbox({ db, consumer: 'iso', schema, isolationLevel });
      await expect(inbox.process({ id: 'iso-1', payload: 'p' }, charge('iso-1'))).rejects.toBeInstanceOf(
        ConfigurationError,
      );
      await expect(
        inbox.processBatch([{ id: 'iso-2', payload: 'p' }], (trx, m) => charge(m.id)(trx)),
      ).rejects.toBeInstanceOf(ConfigurationError);
      await expect(
        db
          .transaction()
          .setIsolationLevel(isolationLevel)
          .execute((trx) =>
            sql`SELECT * FROM ${sql.raw(`"${schema}"."processed_messages_claim"`)}('iso', 'iso-3', NULL, '1s', NULL)`.execute(
              trx,
            ),
          ),
      ).rejects.toMatchObject({ code: '0A000' });
    }
    expect(await keyRows(schema, 'iso-1')).toHaveLength(0);
    expect(await charges('iso-1')).toBe(0);
  });

  it('is refused without its claim function rather than claimed with ON CONFLICT', async () => {
    const schema = 'part_nofunction';
    await partitionedSchema(schema, { intervalMs: DAY_MS });
    await sql.raw(`DROP FUNCTION "${schema}"."processed_messages_claim"(text, text, bytea, text, text)`).execute(db);
    const inbox = createInbox({ db, consumer: 'nofn', schema });
    await expect(inbox.process({ id: 'nofn-1', payload: 'p' }, charge('nofn-1'))).rejects.toBeInstanceOf(
      ConfigurationError,
    );
    expect(await charges('nofn-1')).toBe(0);
  });

  it('gives its SQL for other migration tools, and refuses a name too long for its partitions', async () => {
    const text = inboxPartitionSql({ schema: 'billing', partitioned: { intervalMs: 3600_000 } });
    expect(text).toContain('PARTITION BY RANGE (processed_at)');
    expect(text).toContain('"billing"."processed_messages_maintain"');
    expect(() => inboxPartitionSql({ table: 'x'.repeat(48) })).toThrow(ConfigurationError);
    expect(() => inboxPartitionSql({ partitioned: { intervalMs: 1500 } })).toThrow(/whole number of seconds/);
    const { error } = await migrateInbox(db, { schema: 'part_long', table: 'x'.repeat(48), partitioned: true });
    expect(error).toBeInstanceOf(ConfigurationError);
  });
});
