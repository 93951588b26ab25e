// The oldest and the newest Kysely of the peer range (`~0.28.19 || ^0.29.8`). Postgres
// answers COMMIT on an aborted transaction with a ROLLBACK tag and no error; Kysely reports
// it as an error from 0.28.19 and 0.29.8 on, which is why the range starts there. A
// handler that swallows a database error must never count as processed on either.
import { createInbox, migrateInbox } from '@inboxkit/core';
import { createPgPool } from '@inboxkit/core/pg';
import * as newest from 'kysely';
import * as oldest from 'kysely-oldest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase, type TestDB } from '../../../test/support/postgres.ts';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('core_kysely_versions');
});
afterAll(async () => {
  await t?.dispose();
});

const versions = [
  ['oldest (0.28.19)', oldest],
  ['newest', newest],
] as const;

describe.each(versions)('Kysely %s', (label, kysely) => {
  it('processes, deduplicates, and never records a handler that swallowed a database error as processed', async () => {
    const pool = createPgPool({ connectionString: t.url, max: 4 });
    // The two versions' classes have the same shape but are distinct types.
    const { Kysely, PostgresDialect } = kysely as unknown as typeof newest;
    const db = new Kysely<TestDB>({ dialect: new PostgresDialect({ pool }) });
    try {
      // Its own migration runner works on each version's Kysely (one transaction, no Migrator).
      const table = `keys_${label.slice(0, 6)}`;
      const migrated = await migrateInbox(db, { table });
      expect(migrated.error).toBeUndefined();
      expect(migrated.results?.map((r) => r.status)).toEqual(['Success', 'Success']);
      expect((await migrateInbox(db, { table })).results).toEqual([]);
      const consumer = `versions-${label}`;
      const inbox = createInbox({ db, consumer, retry: { retries: 1, minTimeout: 1, randomize: false } });
      const prefix = `${label.slice(0, 6)}-`;
      const handler = async (trx: newest.Transaction<TestDB>, message: { id: string }) => {
        if (message.id.endsWith('swallow')) {
          try {
            await newest.sql`SELECT 1 / 0`.execute(trx);
          } catch {
            // aborted transaction: COMMIT will answer ROLLBACK
          }
          return { swallowed: true };
        }
        await trx.insertInto('charges').values({ id: message.id, user_id: 'u', amount_cents: 1 }).execute();
        return { ok: true };
      };
      expect(await inbox.process({ id: `${prefix}1` }, handler)).toMatchObject({ status: 'processed' });
      expect(await inbox.process({ id: `${prefix}1` }, handler)).toMatchObject({
        status: 'duplicate',
        result: { ok: true },
      });
      const alone = await inbox.process({ id: `${prefix}swallow` }, handler);
      expect(alone.status).toBe('dead_letter');
      const storeless = createInbox({
        db,
        consumer: `${consumer}-nostore`,
        storeResults: false,
        retry: { retries: 0 },
      });
      expect((await storeless.process({ id: `${prefix}swallow` }, handler)).status).toBe('dead_letter');
      const batch = await storeless.processBatch(
        [{ id: `${prefix}b1` }, { id: `${prefix}b-swallow` }, { id: `${prefix}b2` }],
        handler,
      );
      expect(batch.outcomes.map((o) => o.status)).toEqual(['processed', 'dead_letter', 'processed']);
      const rows = await t.db
        .selectFrom('charges')
        .select('id')
        .where('id', 'like', `${prefix}%`)
        .orderBy('id')
        .execute();
      expect(rows.map((r) => r.id)).toEqual([`${prefix}1`, `${prefix}b1`, `${prefix}b2`]);
    } finally {
      await db.destroy();
    }
  });
});
