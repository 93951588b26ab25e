import { createInbox, DatabaseUnavailableError, type ProcessOutcome } from '@inboxkit/core';
import { createPgPool } from '@inboxkit/core/pg';
import { Kysely, PostgresDialect } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase, type TestDB } from '../../../test/support/postgres.ts';
import { freePort, type PrivatePostgres, startPrivatePostgres } from '../../../test/support/private-postgres.ts';

describe('Postgres unreachable', () => {
  it('a server that is not there (wrong port) yields retry_later, never done or dead-lettered', async () => {
    const port = await freePort();
    const pool = createPgPool({
      connectionString: `postgres://postgres@127.0.0.1:${port}/postgres`,
      connectionTimeoutMillis: 1000,
    });

    const db = new Kysely<TestDB>({ dialect: new PostgresDialect({ pool }) });
    const inbox = createInbox({ db, consumer: 'nowhere', retry: { retries: 5, minTimeout: 1, randomize: false } });
    let ran = false;
    const outcome = await inbox.process({ id: 'w-1' }, async () => {
      ran = true;
    });
    expect(outcome).toMatchObject({ status: 'retry_later', reason: 'database_unavailable', attempts: 1 });
    expect(outcome.status === 'retry_later' && outcome.error).toBeInstanceOf(DatabaseUnavailableError);
    expect(ran).toBe(false);
    const batch = await inbox.processBatch([{ id: 'w-2' }, { id: 'w-3' }], async () => {});
    expect(batch.outcomes.map((o) => o.status)).toEqual(['retry_later', 'retry_later']);
    await db.destroy();
  });

  describe('the server stopped and started again within the test', () => {
    let server: PrivatePostgres;
    let t: TestDatabase;
    beforeAll(async () => {
      server = await startPrivatePostgres();
      t = await createTestDatabase('core_restart', { url: server.url, poolSize: 4 });
    });
    afterAll(async () => {
      await t?.dispose().catch(() => {});
      server?.dispose();
    });

    it('while the server is down nothing is reported done; once it is back, processing resumes and totals are exact', async () => {
      const inbox = createInbox({
        db: t.db,
        consumer: 'restart',
        retry: { retries: 2, minTimeout: 10, randomize: false },
      });
      const handler = async (trx: typeof t.db, message: { id: string }) => {
        await trx.insertInto('charges').values({ id: message.id, user_id: 'u', amount_cents: 10 }).execute();
      };
      // Keep a redelivery loop like a broker would: retry_later means "deliver it again".
      const deliver = async (id: string): Promise<ProcessOutcome[]> => {
        const seen: ProcessOutcome[] = [];
        for (;;) {
          const outcome = await inbox.process({ id }, handler);
          seen.push(outcome);
          if (outcome.status !== 'retry_later') return seen;
          await new Promise((r) => setTimeout(r, 100));
        }
      };
      for (let i = 0; i < 20; i++) expect((await deliver(`before-${i}`)).at(-1)?.status).toBe('processed');

      server.stop();
      const whileDown = await inbox.process({ id: 'down-1' }, handler);
      expect(whileDown).toMatchObject({ status: 'retry_later', reason: 'database_unavailable' });
      const batchDown = await inbox.processBatch([{ id: 'down-2' }, { id: 'down-3' }], handler);
      expect(batchDown.outcomes.every((o) => o.status === 'retry_later')).toBe(true);

      // Deliveries keep coming while the server is restarted under them.
      const pending = Promise.all(Array.from({ length: 10 }, (_, i) => deliver(`during-${i}`)));
      await new Promise((r) => setTimeout(r, 500));
      server.start();
      const during = await pending;
      for (const seen of during) {
        expect(seen.at(-1)?.status).toBe('processed');
        expect(seen.slice(0, -1).every((o) => o.status === 'retry_later')).toBe(true);
      }
      for (const id of ['down-1', 'down-2', 'down-3']) expect((await deliver(id)).at(-1)?.status).toBe('processed');
      // Redeliver everything once more: all duplicates.
      for (let i = 0; i < 20; i++) expect((await deliver(`before-${i}`)).at(-1)?.status).toBe('duplicate');

      // A restart while a transaction is open (the connection is killed mid-handler). The
      // server is back when the failure is sorted, so the next attempt goes on at once (or,
      // if it is not back yet, the message is handed back); it is never dead-lettered.
      const midway = inbox.process({ id: 'mid-1' }, async (trx, message, { attempt }) => {
        await trx.insertInto('charges').values({ id: message.id, user_id: 'u', amount_cents: 10 }).execute();
        if (attempt === 1) server.restart();
      });
      expect(['processed', 'retry_later']).toContain((await midway).status);
      expect((await deliver('mid-1')).at(-1)?.status).toMatch(/^(processed|duplicate)$/);

      expect(await t.countCharges()).toBe(20 + 10 + 3 + 1);
    });
  });
});
