import { readFileSync } from 'node:fs';
import { ConfigurationError, createInbox, inboxMigrations, inboxSchemaSql, migrateInbox } from '@inboxkit/core';
import { createPgPool } from '@inboxkit/core/pg';
import { Kysely, PostgresDialect, sql } from 'kysely';
import { Migrator } from 'kysely/migration';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/support/postgres.ts';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('core_options');
});
afterAll(async () => {
  await t?.dispose();
});

describe('configuration', () => {
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['missing consumer', {}, /`consumer` to be a non-empty string/],
    ['blank consumer', { consumer: '  ' }, /`consumer`/],
    ['unknown option', { consumer: 'c', lockTimeout: 5 }, /Unknown option `lockTimeout`/],
    ['injected table', { consumer: 'c', table: 'x"; drop table charges; --' }, /`table` must be a plain identifier/],
    ['injected schema', { consumer: 'c', schema: 'public; drop' }, /`schema` must be a plain identifier/],
    ['long table', { consumer: 'c', table: 'x'.repeat(60) }, /`table` must be at most 54 bytes/],
    ['negative lock timeout', { consumer: 'c', lockTimeoutMs: -1 }, /`lockTimeoutMs` to be a positive whole number/],
    ['fractional id limit', { consumer: 'c', maxIdLength: 2.5 }, /`maxIdLength`/],
    ['bad isolation', { consumer: 'c', isolationLevel: 'snapshot' }, /`isolationLevel`/],
    ['unknown retry option', { consumer: 'c', retry: { attempts: 3 } }, /Unknown option `retry.attempts`/],
    [
      'negative minTimeout',
      { consumer: 'c', retry: { minTimeout: -5 } },
      /`retry.minTimeout` to be a non-negative number/,
    ],
    ['max below min', { consumer: 'c', retry: { minTimeout: 500, maxTimeout: 100 } }, /`retry.maxTimeout`/],
    [
      'retention shorter than retries',
      { consumer: 'c', retentionMs: 10_000, retry: { retries: 10, minTimeout: 1000, maxTimeout: 60_000 } },
      /`retentionMs` \(10000 ms\) is shorter than the longest retry span/,
    ],
    ['logger without methods', { consumer: 'c', logger: { info() {} } }, /`logger` to have a debug\(\) method/],
  ];
  for (const [name, options, message] of cases) {
    it(`rejects ${name} at construction with a ConfigurationError naming the option`, () => {
      let caught: unknown;
      try {
        createInbox({ db: t.db, ...options } as Parameters<typeof createInbox>[0]);
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(ConfigurationError);
      expect(caught).toMatchObject({ code: 'INBOX_CONFIGURATION', name: 'ConfigurationError' });
      expect((caught as Error).message).toMatch(message);
    });
  }

  it('rejects a missing db and a transaction as db', async () => {
    expect(() => createInbox({ consumer: 'c' } as never)).toThrow(/`db` to be a Kysely instance/);
    await t.db.transaction().execute(async (trx) => {
      expect(() => createInbox({ db: trx as never, consumer: 'c' })).toThrow(/not a transaction/);
    });
  });

  it('an injection attempt in a name never reaches SQL: the tables survive', async () => {
    expect(() => inboxSchemaSql({ table: 'x"; DROP TABLE charges; --' })).toThrow(ConfigurationError);
    const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM charges`.execute(t.db);
    expect(rows).toHaveLength(1);
  });
});

describe('migrations', () => {
  it('the shipped plain SQL files, in order, are what inboxSchemaSql() generates for the default names', () => {
    const file = (name: string) => readFileSync(new URL(`../sql/${name}`, import.meta.url), 'utf8');
    expect(`${file('0001_processed_messages.sql')}\n${file('0002_claim_function.sql')}`).toBe(inboxSchemaSql());
  });

  it('migrates a custom schema and table, concurrently from several processes, and the inbox works there', async () => {
    const results = await Promise.all(
      [1, 2, 3].map(() => migrateInbox(t.connect(1).db as never, { schema: 'billing', table: 'inbox_keys' })),
    );
    for (const result of results) expect(result.error).toBeUndefined();
    const applied = results.flatMap((r) => r.results ?? []).filter((r) => r.status === 'Success');
    // Each migration applied once, by one of the three.
    expect(applied.map((r) => r.migrationName).sort()).toEqual([
      'inboxkit_0001_processed_messages',
      'inboxkit_0002_claim_function',
    ]);
    const inbox = createInbox({ db: t.db, consumer: 'custom', schema: 'billing', table: 'inbox_keys' });
    expect((await inbox.process({ id: 'm-1' }, async () => 1)).status).toBe('processed');
    expect((await inbox.process({ id: 'm-1' }, async () => 1)).status).toBe('duplicate');
    const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM billing.inbox_keys`.execute(t.db);
    expect(Number(rows[0]?.n)).toBe(1);
  });

  it("reads the history of tables migrated by Kysely's Migrator, and refuses tables of a newer inboxkit", async () => {
    // Kysely's Migrator takes a session lock: on a direct connection, as docs/pgbouncer.md says.
    const direct = new Kysely({
      dialect: new PostgresDialect({ pool: createPgPool({ connectionString: t.directUrl }) }),
    });
    try {
      const migrator = new Migrator({
        db: direct,
        provider: { getMigrations: async () => inboxMigrations({ table: 'by_kysely' }) },
        migrationTableName: 'by_kysely_migration',
        migrationLockTableName: 'by_kysely_migration_lock',
      });
      expect((await migrator.migrateToLatest()).error).toBeUndefined();
    } finally {
      await direct.destroy();
    }
    expect(await migrateInbox(t.db, { table: 'by_kysely' })).toEqual({ results: [] });
    await sql`INSERT INTO by_kysely_migration (name, timestamp) VALUES ('inboxkit_9999_future', '')`.execute(t.db);
    const refused = await migrateInbox(t.db, { table: 'by_kysely' });
    expect(refused.error).toMatchObject({ code: 'INBOX_CONFIGURATION', message: /newer inboxkit/ });
  });

  it('leaves no lock behind: a migration from another connection afterwards is not kept waiting', async () => {
    // createTestDatabase migrated the default table already, through the test's pool.
    expect(await t.advisoryLocks()).toBe(0);
    for (let i = 0; i < 3; i++) {
      const { error, results } = await migrateInbox(t.connect(1).db as never);
      expect(error).toBeUndefined();
      expect(results).toEqual([]);
      expect(await t.advisoryLocks()).toBe(0);
    }
  });
});
