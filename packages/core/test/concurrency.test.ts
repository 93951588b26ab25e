import { createInbox, LockTimeoutError } from '@inboxkit/core';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/support/postgres.ts';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('core_concurrency');
});
afterAll(async () => {
  await t?.dispose();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('concurrent deliveries of one id', () => {
  it('8 deliveries on separate connections give exactly one business row; the losers report duplicate', async () => {
    // Eight inboxes, each over its own pool: eight real connections racing on one key.
    const inboxes = Array.from({ length: 8 }, () => createInbox({ db: t.connect(1).db, consumer: 'race' }));
    let started = 0;
    const outcomes = await Promise.all(
      inboxes.map((inbox) =>
        inbox.process({ id: 'race-1', payload: 'same' }, async (trx, message) => {
          started++;
          await trx.insertInto('charges').values({ id: message.id, user_id: 'u', amount_cents: 100 }).execute();
          await sleep(150); // hold the key while the others queue up behind it
          return 'winner';
        }),
      ),
    );
    const statuses = outcomes.map((o) => o.status).sort();
    expect(statuses).toEqual([
      'duplicate',
      'duplicate',
      'duplicate',
      'duplicate',
      'duplicate',
      'duplicate',
      'duplicate',
      'processed',
    ]);
    expect(started).toBe(1);
    for (const outcome of outcomes) {
      if (outcome.status === 'duplicate') expect(outcome.result).toBe('winner');
    }
    expect(await t.db.selectFrom('charges').selectAll().where('id', '=', 'race-1').execute()).toHaveLength(1);
  });

  it('a first delivery that rolls back lets the waiting one process', async () => {
    const first = createInbox({ db: t.connect(1).db, consumer: 'rollback', retry: { retries: 0 } });
    const second = createInbox({ db: t.connect(1).db, consumer: 'rollback' });
    let releaseFirst!: () => void;
    const firstHolding = new Promise<void>((resolve) => {
      releaseFirst = resolve;
    });
    let firstClaimed!: () => void;
    const claimed = new Promise<void>((resolve) => {
      firstClaimed = resolve;
    });
    const a = first.process({ id: 'rb-1' }, async (trx, message) => {
      await trx.insertInto('charges').values({ id: message.id, user_id: 'first', amount_cents: 1 }).execute();
      firstClaimed();
      await firstHolding;
      throw new Error('first delivery fails');
    });
    await claimed;
    const b = second.process({ id: 'rb-1' }, async (trx, message) => {
      await trx.insertInto('charges').values({ id: message.id, user_id: 'second', amount_cents: 2 }).execute();
    });
    await sleep(200);
    releaseFirst();
    const [outA, outB] = await Promise.all([a, b]);
    expect(outA.status).toBe('dead_letter');
    expect(outB.status).toBe('processed');
    const rows = await t.db.selectFrom('charges').selectAll().where('id', '=', 'rb-1').execute();
    expect(rows.map((r) => r.user_id)).toEqual(['second']);
  });

  it('a delivery that waits longer than lockTimeoutMs is handed back as retry_later, never done', async () => {
    const holder = createInbox({ db: t.connect(1).db, consumer: 'timeout' });
    const waiter = createInbox({ db: t.connect(1).db, consumer: 'timeout', lockTimeoutMs: 200 });
    let claimed!: () => void;
    const holding = new Promise<void>((resolve) => {
      claimed = resolve;
    });
    const a = holder.process({ id: 'lt-1' }, async (trx, message) => {
      await trx.insertInto('charges').values({ id: message.id, user_id: 'u', amount_cents: 1 }).execute();
      claimed();
      await sleep(4000);
    });
    await holding;
    let ran = false;
    const started = Date.now();
    const out = await waiter.process({ id: 'lt-1' }, async () => {
      ran = true;
    });
    expect(out).toMatchObject({ status: 'retry_later', reason: 'lock_timeout' });
    expect(out.status === 'retry_later' && out.error).toBeInstanceOf(LockTimeoutError);
    expect(Date.now() - started).toBeLessThan(3000); // the lock timeout fired; it did not wait for the holder (4 s)
    expect(ran).toBe(false);
    expect((await a).status).toBe('processed');
    // after the first committed, the same delivery is a duplicate
    expect((await waiter.process({ id: 'lt-1' }, async () => {})).status).toBe('duplicate');
  });

  it('sets lockTimeoutMs for the transaction only: the handler sees it, the pooled connection does not keep it', async () => {
    const { db } = t.connect(1); // one connection, so the check after the transaction runs on it
    const inbox = createInbox({ db, consumer: 'local-setting', lockTimeoutMs: 1234 });
    const { rows: before } = await sql<{ value: string }>`SELECT current_setting('lock_timeout') AS value`.execute(db);
    const out = await inbox.process({ id: 'ls-1' }, async (trx) => {
      const { rows } = await sql<{ value: string }>`SELECT current_setting('lock_timeout') AS value`.execute(trx);
      return rows[0]?.value;
    });
    expect(out).toMatchObject({ status: 'processed', result: '1234ms' });
    const { rows: after } = await sql<{ value: string }>`SELECT current_setting('lock_timeout') AS value`.execute(db);
    expect(after[0]?.value).toBe(before[0]?.value);
    expect(after[0]?.value).not.toBe('1234ms');
  });
});
