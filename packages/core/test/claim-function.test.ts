// The claim function (migration 0002) and the claim without it (a database migrated only to
// 0001): the same semantics on both, one statement for a duplicate's claim with the
// function, two without; the choice made once per inbox; the upgrade from 0001 to 0002.
import { randomBytes } from 'node:crypto';
import { createInbox, type InboxLogger, inboxMigrations, migrateInbox } from '@inboxkit/core';
import { createPgPool } from '@inboxkit/core/pg';
import { Kysely, PostgresDialect, sql } from 'kysely';
import { Migrator } from 'kysely/migration';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase, type TestDB } from '../../../test/support/postgres.ts';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('core_claim_function');
});
afterAll(async () => {
  await t?.dispose();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Migrates `schema`'s inbox tables with the inbox's migrations up to `last` (as migrateInbox would). */
async function migrateUpTo(schema: string, last: 'inboxkit_0001_processed_messages' | 'inboxkit_0002_claim_function') {
  const all = inboxMigrations({ schema });
  const names = Object.keys(all).filter((name) => name <= last);
  const migrator = new Migrator({
    db: t.db as Kysely<unknown>,
    provider: { getMigrations: async () => Object.fromEntries(names.map((name) => [name, all[name] as never])) },
    migrationTableSchema: schema,
    migrationTableName: 'processed_messages_migration',
    migrationLockTableName: 'processed_messages_migration_lock',
  });
  const { error } = await migrator.migrateToLatest();
  if (error) throw error;
}

/** A Kysely instance over a pool of its own that records the text of every statement it sends. */
function recorded(poolSize = 2): { db: Kysely<TestDB>; statements: string[] } {
  const { pool } = t.connect(poolSize);
  const statements: string[] = [];
  const db = new Kysely<TestDB>({
    dialect: new PostgresDialect({ pool }),
    log: (event) => {
      statements.push(event.query.sql);
    },
  });
  return { db, statements };
}

/** A logger that keeps its warnings. */
function warnings(): { logger: InboxLogger; warned: string[] } {
  const warned: string[] = [];
  const noop = () => {};
  return {
    logger: { debug: noop, info: noop, error: noop, warn: (_fields, message) => warned.push(String(message)) },
    warned,
  };
}

/** The inbox's own statements on its table (the claim, the read of a stored row), not BEGIN, COMMIT or the handler's. */
function claimStatements(statements: readonly string[], schema: string): string[] {
  return statements.filter((text) => text.includes(`"${schema}"."processed_messages`) && !text.includes('UPDATE'));
}

const modes = [
  {
    mode: 'with the claim function (0001 and 0002)',
    schema: 'claim_fn',
    upTo: 'inboxkit_0002_claim_function',
    statements: 1,
  },
  {
    mode: 'on a database migrated only to 0001',
    schema: 'claim_0001',
    upTo: 'inboxkit_0001_processed_messages',
    statements: 2,
  },
] as const;

beforeAll(async () => {
  for (const { schema, upTo } of modes) await migrateUpTo(schema, upTo);
});

describe.each(modes)('the claim $mode', ({ schema, statements: duplicateStatements }) => {
  it('processes a new message, replays its result to a duplicate, and reports conflicts and dead-lettered keys', async () => {
    const { db, statements } = recorded();
    const { logger, warned } = warnings();
    const inbox = createInbox({ db, consumer: 'semantics', schema, logger, retry: { retries: 0 } });
    let runs = 0;
    const handler = async (trx: Kysely<TestDB>, message: { id: string }) => {
      runs++;
      await trx
        .insertInto('charges')
        .values({ id: `${schema}-${message.id}`, user_id: 'u', amount_cents: 1 })
        .execute();
      return { charged: message.id };
    };
    expect(await inbox.process({ id: 'a', payload: 'one' }, handler)).toMatchObject({
      status: 'processed',
      attempts: 1,
    });
    statements.length = 0;
    const duplicate = await inbox.process({ id: 'a', payload: 'one' }, handler);
    expect(duplicate).toMatchObject({ status: 'duplicate', previousStatus: 'processed', result: { charged: 'a' } });
    expect(duplicate.status === 'duplicate' && duplicate.processedAt).toBeInstanceOf(Date);
    // With the function a duplicate's claim is one statement (the call); without, the insert and the read.
    expect(claimStatements(statements, schema)).toHaveLength(duplicateStatements);
    expect(runs).toBe(1);

    expect(await inbox.process({ id: 'a', payload: 'other' }, handler)).toMatchObject({ status: 'conflict' });

    const failed = await inbox.process({ id: 'b', payload: 'two' }, () => {
      throw new Error('permanently broken');
    });
    expect(failed.status).toBe('dead_letter');
    if (failed.status === 'dead_letter') await inbox.recordDeadLetter({ id: 'b', payload: 'two' }, failed);
    expect(await inbox.process({ id: 'b', payload: 'two' }, handler)).toMatchObject({
      status: 'duplicate',
      previousStatus: 'dead_lettered',
      result: undefined,
    });
    expect(runs).toBe(1);
    expect(warned.filter((w) => w.includes('0002'))).toHaveLength(duplicateStatements === 1 ? 0 : 1);
  });

  it('decides once per inbox, before the first claim, even for concurrent first messages', async () => {
    const { db, statements } = recorded(4);
    const { logger, warned } = warnings();
    const inbox = createInbox({ db, consumer: 'decide-once', schema, logger });
    const outcomes = await Promise.all(
      ['1', '2', '3', '4', '1', '2'].map((id, i) => inbox.process({ id }, async () => i)),
    );
    expect(outcomes.map((o) => o.status).sort()).toEqual([
      'duplicate',
      'duplicate',
      'processed',
      'processed',
      'processed',
      'processed',
    ]);
    for (let i = 0; i < 5; i++) await inbox.process({ id: `later-${i}` }, async () => i);
    expect(statements.filter((text) => text.includes('to_regprocedure'))).toHaveLength(1);
    expect(warned.filter((w) => w.includes('0002'))).toHaveLength(duplicateStatements === 1 ? 0 : 1);
  });

  it('gives a delivery that waited on the key the row its first delivery committed', async () => {
    const first = createInbox({ db: t.connect(1).db, consumer: 'waited', schema });
    const second = createInbox({ db: t.connect(1).db, consumer: 'waited', schema });
    let claimed!: () => void;
    const holding = new Promise<void>((resolve) => {
      claimed = resolve;
    });
    const a = first.process({ id: 'w-1', payload: 'p' }, async () => {
      claimed();
      await sleep(300); // the second delivery's claim waits on the key meanwhile
      return 'first result';
    });
    await holding;
    let ran = false;
    const b = await second.process({ id: 'w-1', payload: 'p' }, async () => {
      ran = true;
    });
    expect((await a).status).toBe('processed');
    expect(b).toMatchObject({ status: 'duplicate', previousStatus: 'processed', result: 'first result' });
    expect(ran).toBe(false);
  });

  it('hands a message back when another delivery holds its key past lockTimeoutMs', async () => {
    const holder = createInbox({ db: t.connect(1).db, consumer: 'held', schema });
    const waiter = createInbox({ db: t.connect(1).db, consumer: 'held', schema, lockTimeoutMs: 100 });
    let claimed!: () => void;
    const holding = new Promise<void>((resolve) => {
      claimed = resolve;
    });
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const a = holder.process({ id: 'h-1' }, async () => {
      claimed();
      await released;
    });
    await holding;
    const out = await waiter.process({ id: 'h-1' }, async () => {});
    release();
    expect(out).toMatchObject({ status: 'retry_later', reason: 'lock_timeout' });
    expect((await a).status).toBe('processed');
    expect((await waiter.process({ id: 'h-1' }, async () => {})).status).toBe('duplicate');
  });

  it('under serializable isolation, a delivery that waited on the key is retried into a duplicate, never run twice', async () => {
    const options = { consumer: 'serializable', schema, isolationLevel: 'serializable' } as const;
    const first = createInbox({ db: t.connect(1).db, ...options });
    const second = createInbox({ db: t.connect(1).db, ...options });
    let claimed!: () => void;
    const holding = new Promise<void>((resolve) => {
      claimed = resolve;
    });
    let runs = 0;
    const a = first.process({ id: 'z-1', payload: 'p' }, async () => {
      runs++;
      claimed();
      await sleep(200);
      return 'kept';
    });
    await holding;
    // The waiting claim fails serialization (40001) once the first commits: contention,
    // retried in a new transaction, which finds the stored row.
    const b = await second.process({ id: 'z-1', payload: 'p' }, async () => {
      runs++;
    });
    expect((await a).status).toBe('processed');
    expect(b).toMatchObject({ status: 'duplicate', result: 'kept' });
    expect(runs).toBe(1);
  });

  it('sets lock_timeout and statement_timeout for the transaction only', async () => {
    const { db } = t.connect(1); // one connection: the check after the transaction runs on it
    const inbox = createInbox({ db, consumer: 'settings', schema, lockTimeoutMs: 1234, handlerTimeoutMs: 5000 });
    const read = async (on: Kysely<TestDB>) => {
      const { rows } = await sql<{ lock: string; statement: string }>`
        SELECT current_setting('lock_timeout') AS lock, current_setting('statement_timeout') AS statement`.execute(on);
      return rows[0];
    };
    const before = await read(db);
    const out = await inbox.process({ id: 's-1' }, async (trx) => read(trx));
    // statement_timeout: the limit plus its grace of 10% (docs/design.md, "Failures").
    expect(out).toMatchObject({ status: 'processed', result: { lock: '1234ms', statement: '5500ms' } });
    expect(await read(db)).toEqual(before);
  });
});

describe('upgrading from 0001 to 0002', () => {
  it('an inbox keeps claiming without the function until it is created anew; a new inbox uses it', async () => {
    const schema = 'claim_upgrade';
    await migrateUpTo(schema, 'inboxkit_0001_processed_messages');
    const before = recorded();
    const old = createInbox({ db: before.db, consumer: 'upgrade', schema });
    expect((await old.process({ id: 'u-1' }, async () => 'stored')).status).toBe('processed');

    const { error, results } = await migrateInbox(t.db as Kysely<unknown>, { schema });
    expect(error).toBeUndefined();
    expect(results?.map((r) => [r.migrationName, r.status])).toEqual([['inboxkit_0002_claim_function', 'Success']]);

    const after = recorded();
    const upgraded = createInbox({ db: after.db, consumer: 'upgrade', schema });
    expect(await upgraded.process({ id: 'u-1' }, async () => 'again')).toMatchObject({
      status: 'duplicate',
      result: 'stored',
    });
    expect(claimStatements(after.statements, schema)).toHaveLength(1);
    expect(after.statements.some((text) => text.includes('"processed_messages_claim"('))).toBe(true);

    before.statements.length = 0;
    expect((await old.process({ id: 'u-1' }, async () => 'again')).status).toBe('duplicate');
    expect(claimStatements(before.statements, schema)).toHaveLength(2);
    // Running the whole migration set again changes nothing (CREATE OR REPLACE, IF NOT EXISTS).
    expect((await migrateInbox(t.db as Kysely<unknown>, { schema })).results).toEqual([]);
  });

  it('a claim function dropped under a running inbox is neither a retry nor a dead letter: the claim goes on without it', async () => {
    const schema = 'claim_dropped';
    await migrateUpTo(schema, 'inboxkit_0002_claim_function');
    const { db, statements } = recorded();
    const { logger, warned } = warnings();
    // No retries: a missing function counted as a failed attempt would dead-letter at once.
    const inbox = createInbox({ db, consumer: 'dropped', schema, logger, retry: { retries: 0 } });
    const retries: unknown[] = [];
    inbox.on('retry', (event) => retries.push(event));
    expect((await inbox.process({ id: 'd-1' }, async () => 1)).status).toBe('processed');
    expect(warned).toEqual([]);

    await sql.raw(`DROP FUNCTION "${schema}"."processed_messages_claim"(text, text, bytea, text, text)`).execute(t.db);
    statements.length = 0;
    expect(await inbox.process({ id: 'd-2' }, async () => 2)).toMatchObject({ status: 'processed', attempts: 1 });
    expect(await inbox.process({ id: 'd-1' }, async () => 3)).toMatchObject({ status: 'duplicate', result: 1 });
    expect(retries).toEqual([]);
    expect(warned.filter((w) => w.includes('0002'))).toHaveLength(1);
    // The failed call was tried once; the claims after it went without the function.
    expect(statements.filter((text) => text.includes('"processed_messages_claim"('))).toHaveLength(1);
  });

  it('a role that may not execute the function claims without it, also when EXECUTE is revoked under a running inbox', async () => {
    const schema = 'claim_noexec';
    const fn = `${schema}.processed_messages_claim(text, text, bytea, text, text)`;
    await migrateUpTo(schema, 'inboxkit_0002_claim_function');
    const role = `ik_noexec_${randomBytes(4).toString('hex')}`;
    await sql
      .raw(`CREATE ROLE ${role} LOGIN;
GRANT USAGE ON SCHEMA ${schema} TO ${role};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${schema} TO ${role};
REVOKE EXECUTE ON FUNCTION ${fn} FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ${fn} TO ${role};`)
      .execute(t.db);
    const url = new URL(t.url);
    url.username = role;
    const pool = createPgPool({ connectionString: url.toString(), max: 2 });
    try {
      const db = new Kysely<TestDB>({ dialect: new PostgresDialect({ pool }) });
      // No retries: a claim refused for want of privilege, counted as a failed attempt,
      // would dead-letter at once.
      const running = warnings();
      const inbox = createInbox({ db, consumer: 'noexec', schema, logger: running.logger, retry: { retries: 0 } });
      expect(await inbox.process({ id: 'n-0' }, async () => 'zero')).toMatchObject({ status: 'processed' });
      expect(running.warned).toEqual([]);

      await sql.raw(`REVOKE EXECUTE ON FUNCTION ${fn} FROM ${role}`).execute(t.db);
      expect(await inbox.process({ id: 'n-1' }, async () => 'one')).toMatchObject({ status: 'processed', attempts: 1 });
      expect(await inbox.process({ id: 'n-0' }, async () => 'again')).toMatchObject({
        status: 'duplicate',
        result: 'zero',
      });
      expect(running.warned.filter((w) => w.includes('0002'))).toHaveLength(1);

      const fresh = warnings();
      const later = createInbox({ db, consumer: 'noexec', schema, logger: fresh.logger, retry: { retries: 0 } });
      expect(await later.process({ id: 'n-2' }, async () => 'two')).toMatchObject({ status: 'processed' });
      expect(await later.process({ id: 'n-1' }, async () => 'again')).toMatchObject({
        status: 'duplicate',
        result: 'one',
      });
      expect(fresh.warned.filter((w) => w.includes('0002'))).toHaveLength(1);
    } finally {
      await pool.end();
      await sql.raw(`DROP OWNED BY ${role}; DROP ROLE ${role}`).execute(t.db);
    }
  });

  it('fits the function name of the longest table name in 63 bytes', async () => {
    const table = `t${'x'.repeat(53)}`; // 54 bytes: the longest a table name may be
    // migrateInbox, twice: its history table's name (`<table>_migration`) is cut to 63 bytes
    // by Postgres the same way each time.
    for (const expected of [2, 0]) {
      const migrated = await migrateInbox(t.db, { schema: 'claim_long', table });
      expect(migrated.error).toBeUndefined();
      expect(migrated.results).toHaveLength(expected);
    }
    const { rows } = await sql<{ found: boolean }>`
      SELECT to_regprocedure(${`"claim_long"."${table}_claim"(text, text, bytea, text, text)`}) IS NOT NULL AS found`.execute(
      t.db,
    );
    expect(rows[0]?.found).toBe(true);
    const { db, statements } = recorded();
    const inbox = createInbox({ db, consumer: 'long', schema: 'claim_long', table });
    await inbox.process({ id: 'l-1' }, async () => 1);
    expect((await inbox.process({ id: 'l-1' }, async () => 1)).status).toBe('duplicate');
    expect(statements.some((text) => text.includes(`"${table}_claim"(`))).toBe(true);
  });
});
