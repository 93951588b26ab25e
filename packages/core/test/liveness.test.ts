// Liveness: while Postgres answers, every delivery ends as processed, duplicate or
// dead-lettered within the retry policy's span; only a database that does not answer
// holds a message back (docs/design.md, "Liveness"). Each case below once made a message
// come back forever, or ended it wrongly; each runs against a real Postgres.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInbox } from '@inboxkit/core';
import { createPgPool } from '@inboxkit/core/pg';
import { Kysely, PostgresDialect, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase, type TestDB } from '../../../test/support/postgres.ts';
import { classifyFailure } from '../src/error-classification.ts';
import { DEFAULT_RETRY } from '../src/retry-policy.ts';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('core_liveness');
});
afterAll(async () => {
  await t?.dispose();
});

const fastRetry = { retries: 2, minTimeout: 1, maxTimeout: 5, randomize: false } as const;
type Trx = Kysely<TestDB>;

const insertCharge = (trx: Trx, id: string) =>
  trx.insertInto('charges').values({ id, user_id: 'u', amount_cents: 1 }).execute();

async function keyRow(consumer: string, id: string) {
  const { rows } = await sql<{ status: string; result: unknown }>`
    SELECT status, result FROM processed_messages WHERE consumer = ${consumer} AND message_id = ${id}`.execute(t.db);
  return rows[0];
}

async function chargeIds(prefix: string): Promise<string[]> {
  const rows = await t.db.selectFrom('charges').select('id').where('id', 'like', `${prefix}%`).orderBy('id').execute();
  return rows.map((row) => row.id);
}

function sqlError(code: string, message = `error ${code}`): Error {
  return Object.assign(new Error(message), { code });
}

describe('"unavailable" is asked of the database, not read from an error code', () => {
  // What each error means when the database answers the probe, and when it does not.
  const table: [string, unknown, string, string][] = [
    ['08P01 protocol violation (a statement binding 70,000 parameters)', sqlError('08P01'), 'transient', 'unavailable'],
    ['08006 connection failure', sqlError('08006'), 'transient', 'unavailable'],
    ['53200 out of shared memory', sqlError('53200'), 'transient', 'unavailable'],
    ['53300 too many connections', sqlError('53300'), 'transient', 'unavailable'],
    ['53400 configuration limit exceeded', sqlError('53400'), 'transient', 'unavailable'],
    ['58P01 undefined file', sqlError('58P01'), 'transient', 'unavailable'],
    ['57P01 admin shutdown', sqlError('57P01'), 'transient', 'unavailable'],
    ['57P03 cannot connect now', sqlError('57P03'), 'transient', 'unavailable'],
    [
      "another client's 'Connection terminated'",
      new Error('Connection terminated unexpectedly'),
      'transient',
      'unavailable',
    ],
    ['ECONNRESET from some socket', sqlError('ECONNRESET'), 'transient', 'unavailable'],
    ["a handler statement's lock timeout 55P03", sqlError('55P03'), 'contention', 'contention'],
    ['40001 serialization failure', sqlError('40001'), 'contention', 'contention'],
    ['40P01 deadlock', sqlError('40P01'), 'contention', 'contention'],
    ['57014 statement timeout', sqlError('57014'), 'transient', 'transient'],
    ['23505 unique violation', sqlError('23505'), 'transient', 'transient'],
    ['a plain error', new Error('boom'), 'transient', 'transient'],
  ];
  it.each(table)('%s', async (_name, error, whenUp, whenDown) => {
    expect(await classifyFailure(error, DEFAULT_RETRY, async () => true)).toBe(whenUp);
    expect(await classifyFailure(error, DEFAULT_RETRY, async () => false)).toBe(whenDown);
  });

  it('a statement binding 70,000 parameters (08P01 from a live server) is dead-lettered, not handed back forever', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'bind-70k', retry: fastRetry });
    let runs = 0;
    const outcome = await inbox.process({ id: 'huge-1' }, async (trx) => {
      runs++;
      const values = Array.from({ length: 70_000 }, (_, i) => sql`${i}`);
      await sql`SELECT 1 WHERE 1 IN (${sql.join(values)})`.execute(trx);
    });
    expect(outcome).toMatchObject({ status: 'dead_letter', reason: 'retries_exhausted', attempts: 3 });
    expect(outcome.status === 'dead_letter' && (outcome.error as { code?: string }).code).toBe('08P01');
    expect(runs).toBe(3);
  });

  it.each([
    ['53200', () => sqlError('53200', 'out of shared memory')],
    ['Connection terminated', () => new Error('Connection terminated unexpectedly (redis)')],
  ])(
    'a handler error %s while Postgres answers counts as an attempt and ends in the dead letters',
    async (_n, make) => {
      const inbox = createInbox({ db: t.db, consumer: `thrown-${_n}`, retry: fastRetry });
      const outcome = await inbox.process({ id: 'm-1' }, async () => {
        throw make();
      });
      expect(outcome).toMatchObject({ status: 'dead_letter', reason: 'retries_exhausted', attempts: 3 });
    },
  );
});

describe('what inboxkit stores itself is storable', () => {
  it('recording the dead letter of an id holding NUL settles (nothing to record: it cannot be a key)', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'nul-id', retry: fastRetry });
    const outcome = await inbox.process({ id: 'a\u0000b' }, async () => {});
    expect(outcome).toMatchObject({ status: 'dead_letter', reason: 'invalid_message' });
    if (outcome.status !== 'dead_letter') throw new Error('unreachable');
    await expect(inbox.recordDeadLetter({ id: 'a\u0000b' }, outcome)).resolves.toBeUndefined();
  });

  it('an error message holding NUL (and a lone surrogate) is recorded with them replaced', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'nul-error', retry: fastRetry });
    const outcome = await inbox.process({ id: 'e-1', payload: '{"a":"\\u0000"}' }, async (_trx, message) => {
      JSON.parse(String(message.payload));
      throw new Error('bad byte \u0000 and \ud800 in the payload');
    });
    expect(outcome).toMatchObject({ status: 'dead_letter' });
    if (outcome.status !== 'dead_letter') throw new Error('unreachable');
    await inbox.recordDeadLetter({ id: 'e-1' }, outcome);
    const row = await keyRow('nul-error', 'e-1');
    expect(row?.status).toBe('dead_lettered');
    expect((row?.result as { error: { message: string } } | undefined)?.error.message).toBe(
      'bad byte \ufffd and \ufffd in the payload',
    );
    // A redelivery is a duplicate of the dead letter, not dead-lettered again.
    expect(await inbox.process({ id: 'e-1', payload: '{"a":"\\u0000"}' }, async () => {})).toMatchObject({
      status: 'duplicate',
      previousStatus: 'dead_lettered',
    });
  });

  it('a result holding NUL (in a value or a key) is stored with it replaced: the message is processed', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'nul-result', retry: fastRetry });
    const returned = { note: 'a\u0000b', 'k\u0000': ['\ud800'], amount: 10n };
    const outcome = await inbox.process({ id: 'r-1' }, async (trx) => {
      await insertCharge(trx, 'nul-result-r-1');
      return returned;
    });
    expect(outcome).toMatchObject({ status: 'processed', attempts: 1 });
    expect(outcome.status === 'processed' && outcome.result).toBe(returned);
    expect(await chargeIds('nul-result-')).toEqual(['nul-result-r-1']);
    expect((await keyRow('nul-result', 'r-1'))?.result).toEqual({
      note: 'a\ufffdb',
      'k\ufffd': ['\ufffd'],
      amount: '10',
    });
  });

  it('an id over 2,000 bytes of UTF-8 is an invalid message, in a batch and alone, and the rest of its batch commits', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'long-id', maxIdLength: 2000, retry: fastRetry });
    // 1,500 random CJK characters: about 4,500 bytes that do not compress below a btree entry.
    const long = Array.from(randomBytes(1500), (b, i) => String.fromCharCode(0x4e00 + b * 64 + (i % 64))).join('');
    const alone = await inbox.process({ id: long }, async () => {});
    expect(alone).toMatchObject({ status: 'dead_letter', reason: 'invalid_message', messageId: undefined });
    const batch = await inbox.processBatch([{ id: 'long-id-1' }, { id: long }, { id: 'long-id-2' }], (trx, m) =>
      insertCharge(trx, m.id),
    );
    expect(batch.outcomes.map((o) => o.status)).toEqual(['processed', 'dead_letter', 'processed']);
    expect(await chargeIds('long-id-')).toEqual(['long-id-1', 'long-id-2']);
  });
});

describe('a batch that fails outside any handler call narrows down to the culprit', () => {
  const ids = (prefix: string) => Array.from({ length: 5 }, (_, i) => ({ id: `${prefix}-${i}` }));

  /** A charge per message, returning `result(id)`: one handler call each, or one bulk call. */
  const chargeEach = (
    shape: 'processBatch' | 'processBulk',
    inbox: ReturnType<typeof createInbox<TestDB>>,
    messages: { id: string }[],
    result: (id: string) => unknown,
  ) =>
    shape === 'processBatch'
      ? inbox.processBatch(messages, async (trx, m) => {
          await insertCharge(trx, m.id);
          return result(m.id);
        })
      : inbox.processBulk(messages, async (trx, batch) => {
          for (const m of batch) await insertCharge(trx, m.id);
          return batch.map((m) => result(m.id));
        });

  it.each(['processBatch', 'processBulk'] as const)(
    '%s: a result holding NUL is stored made storable; the whole batch commits',
    async (shape) => {
      const inbox = createInbox({ db: t.db, consumer: `nul-results-${shape}`, retry: fastRetry });
      const messages = ids(`nr-${shape}`);
      const result = (id: string) => ({ id, note: id.endsWith('-2') ? 'x\u0000' : 'ok' });
      const { outcomes } = await chargeEach(shape, inbox, messages, result);
      expect(outcomes.map((o) => o.status)).toEqual(Array(5).fill('processed'));
      expect(await chargeIds(`nr-${shape}`)).toEqual([0, 1, 2, 3, 4].map((i) => `nr-${shape}-${i}`));
      expect((await keyRow(`nul-results-${shape}`, `nr-${shape}-2`))?.result).toEqual({
        id: `nr-${shape}-2`,
        note: 'x\ufffd',
      });
    },
  );

  it.each(['processBatch', 'processBulk'] as const)(
    '%s: a result that cannot be serialized fails only its own message; the rest commits in order',
    async (shape) => {
      const inbox = createInbox({ db: t.db, consumer: `cyclic-${shape}`, retry: fastRetry });
      const messages = ids(`cy-${shape}`);
      const result = (id: string) => {
        const value: Record<string, unknown> = { id };
        if (id.endsWith('-2')) value.self = value;
        return value;
      };
      const { outcomes } = await chargeEach(shape, inbox, messages, result);
      expect(outcomes.map((o) => o.status)).toEqual([
        'processed',
        'processed',
        'dead_letter',
        'processed',
        'processed',
      ]);
      expect(outcomes[2]).toMatchObject({ reason: 'non_retryable' });
      expect(await chargeIds(`cy-${shape}`)).toEqual([0, 1, 3, 4].map((i) => `cy-${shape}-${i}`));
    },
  );

  it('a handler that swallows a database error never counts as processed (its commit rolls back)', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'swallow', retry: fastRetry, storeResults: false });
    const swallow = async (trx: Trx, id: string) => {
      if (id.endsWith('-3')) {
        try {
          await sql`SELECT 1 / 0`.execute(trx);
        } catch {
          // the transaction is aborted now; COMMIT will answer ROLLBACK
        }
        return;
      }
      await insertCharge(trx, id);
    };
    const alone = await inbox.process({ id: 'swallow-alone-3' }, (trx, m) => swallow(trx, m.id));
    expect(alone).toMatchObject({ status: 'dead_letter', reason: 'retries_exhausted' });
    const { outcomes } = await inbox.processBatch(ids('swallow-b'), (trx, m) => swallow(trx, m.id));
    expect(outcomes.map((o) => o.status)).toEqual(['processed', 'processed', 'processed', 'dead_letter', 'processed']);
    expect(await chargeIds('swallow-b')).toEqual(['swallow-b-0', 'swallow-b-1', 'swallow-b-2', 'swallow-b-4']);
    expect(await keyRow('swallow', 'swallow-b-3')).toBeUndefined();
  });

  it('a failing message of a batch commits in its place: effects keep the order of the messages', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'order', retry: { ...fastRetry, minTimeout: 20, maxTimeout: 20 } });
    let failures = 0;
    let hooks = 0;
    const messages = ids('order');
    const { outcomes } = await inbox.processBatch(
      messages,
      async (trx, m) => {
        // Fails in the optimistic pass, in the savepoint pass and in its first attempt alone.
        if (m.id === 'order-1' && failures < 3) {
          failures++;
          throw new Error('fails three times');
        }
        await trx.insertInto('ledger').values({ charge_id: m.id, amount_cents: 1 }).execute();
      },
      { beforeMessage: () => void hooks++ },
    );
    expect(outcomes.map((o) => o.status)).toEqual(Array(5).fill('processed'));
    const rows = await t.db
      .selectFrom('ledger')
      .select('charge_id')
      .where('charge_id', 'like', 'order-%')
      .orderBy('id')
      .execute();
    expect(rows.map((r) => r.charge_id)).toEqual(messages.map((m) => m.id));
    // beforeMessage (the adapter's heartbeat and ownership check) also ran for the message
    // that was set aside and retried alone: 2 optimistic + 2 savepoint + 2 attempts + 3 rest.
    expect(hooks).toBeGreaterThanOrEqual(9);
  });

  it('a set-aside message handed back (retry_later) hands back everything after it too', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'handback', retry: fastRetry, lockTimeoutMs: 100 });
    // Another delivery holds the key of handback-1 for the whole test.
    const holder = await t.pool.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`INSERT INTO processed_messages (consumer, message_id) VALUES ('handback', 'handback-1')`);
      const { outcomes } = await inbox.processBatch(ids('handback'), (trx, m) => insertCharge(trx, m.id));
      expect(outcomes.map((o) => o.status)).toEqual(Array(5).fill('retry_later'));
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
    }
    expect(await chargeIds('handback')).toEqual([]);
  });
});

describe('only a real crash counts towards a crash loop', () => {
  it('a suspect waiting on a key held by another delivery is handed back, never counted or dead-lettered as crash_loop', async () => {
    const consumer = 'suspect-wait';
    const inbox = createInbox({ db: t.db, consumer, crashLoopLimit: 2, lockTimeoutMs: 100, retry: fastRetry });
    const holder = await t.pool.connect();
    let runs = 0;
    const deliver = () =>
      inbox.process(
        { id: 's-1' },
        async (trx, m) => {
          runs++;
          await insertCharge(trx, `suspect-wait-${m.id}`);
        },
        { suspect: true },
      );
    try {
      await holder.query('BEGIN');
      await holder.query(`INSERT INTO processed_messages (consumer, message_id) VALUES ($1, 's-1')`, [consumer]);
      await holder.query(`INSERT INTO charges (id, user_id, amount_cents) VALUES ('suspect-wait-s-1', 'old', 1)`);
      for (let i = 0; i < 5; i++)
        expect(await deliver()).toMatchObject({ status: 'retry_later', reason: 'lock_timeout' });
      const { rows } = await t.pool.query(
        'SELECT coalesce(max(attempts), 0) AS n FROM processed_messages_attempts WHERE consumer = $1',
        [consumer],
      );
      expect(Number(rows[0].n)).toBe(0);
      await holder.query('COMMIT');
    } finally {
      holder.release();
    }
    // The old owner committed: the suspect is a duplicate, applied once, never in the DLQ.
    expect(await deliver()).toMatchObject({ status: 'duplicate', previousStatus: 'processed' });
    expect(runs).toBe(0);
  });

  it('a suspect whose handler keeps crashing the process is still stopped at crashLoopLimit', async () => {
    const consumer = 'suspect-crash';
    // A "process" whose handler dies: its own pool and inbox; the attempt never returns and
    // its connection is cut, as when the process is killed (the pool is abandoned with it).
    const crash = async () => {
      const db = new Kysely<TestDB>({
        dialect: new PostgresDialect({ pool: createPgPool({ connectionString: t.url, max: 2 }) }),
      });
      const inbox = createInbox({ db, consumer, crashLoopLimit: 2, retry: fastRetry });
      const pid = await new Promise<number>((resolve) => {
        void inbox.process(
          { id: 'c-1' },
          async (trx) => {
            const { rows } = await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(trx);
            resolve(rows[0]?.pid ?? 0);
            await new Promise(() => {});
          },
          { suspect: true },
        );
      });
      await t.pool.query('SELECT pg_terminate_backend($1)', [pid]);
    };
    await crash();
    await crash();
    const inbox = createInbox({ db: t.db, consumer, crashLoopLimit: 2, retry: fastRetry });
    let ran = false;
    const third = await inbox.process(
      { id: 'c-1' },
      async () => {
        ran = true;
      },
      { suspect: true },
    );
    expect(third).toMatchObject({ status: 'dead_letter', reason: 'crash_loop', attempts: 2 });
    expect(ran).toBe(false);
  });
});

describe('handlerTimeoutMs needs no free pool connection', () => {
  it('a handler stuck in a statement is cut at its limit with a pool of one connection and no connect timeout', async () => {
    const pool = createPgPool({ connectionString: t.url, max: 1 });
    const db = new Kysely<TestDB>({ dialect: new PostgresDialect({ pool }) });
    try {
      const inbox = createInbox({ db, consumer: 'one-slot', handlerTimeoutMs: 300, retry: { retries: 0 } });
      const started = Date.now();
      const outcome = await inbox.process({ id: 'stuck-1' }, async (trx) => {
        await sql`SELECT pg_sleep(600)`.execute(trx);
      });
      expect(outcome).toMatchObject({ status: 'dead_letter' });
      expect(outcome.status === 'dead_letter' && (outcome.error as { code?: string }).code).toBe(
        'INBOX_HANDLER_TIMEOUT',
      );
      // A liveness bound, not a timing: without the fix this waits for pg_sleep(600).
      expect(Date.now() - started).toBeLessThan(60_000);
    } finally {
      await db.destroy();
    }
  }, 90_000);
});

describe('lock contention does not spend the retry budget', () => {
  it('a handler blocked on a row another transaction holds for a while is processed once the lock is free', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'contention', lockTimeoutMs: 200, retry: { retries: 0 } });
    await sql`INSERT INTO ledger (charge_id, amount_cents) VALUES ('hot-row', 0)`.execute(t.db);
    const holder = await t.pool.connect();
    await holder.query('BEGIN');
    await holder.query(`SELECT * FROM ledger WHERE charge_id = 'hot-row' FOR UPDATE`);
    const released = new Promise<void>((resolve) =>
      setTimeout(() => {
        void holder
          .query('COMMIT')
          .finally(() => holder.release())
          .then(() => resolve());
      }, 1500),
    );
    let runs = 0;
    const outcome = await inbox.process({ id: 'hot-1' }, async (trx) => {
      runs++;
      await sql`UPDATE ledger SET amount_cents = amount_cents + 1 WHERE charge_id = 'hot-row'`.execute(trx);
    });
    await released;
    expect(outcome).toMatchObject({ status: 'processed', attempts: 1 });
    expect(runs).toBeGreaterThan(1);
  });
});

describe('retry options that would never end', () => {
  const construct = (retry: string) =>
    spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { createInbox } from '@inboxkit/core';
         try { createInbox({ db: { transaction() {}, executeQuery() {} }, consumer: 'c', retry: ${retry} }); console.log('created') }
         catch (error) { console.log(error.code + ': ' + error.message) }`,
      ],
      { cwd: new URL('..', import.meta.url), timeout: 20_000, encoding: 'utf8' },
    );

  it('retries: Infinity without maxRetryTime is refused at once with a message that says what to change', () => {
    const run = construct('{ retries: Infinity }');
    expect(run.error).toBeUndefined();
    expect(run.stdout).toMatch(/INBOX_CONFIGURATION: `retry.retries` is Infinity with no `retry.maxRetryTime`/);
  });

  it('retries: Infinity with a finite maxRetryTime is accepted at once', () => {
    const run = construct('{ retries: Infinity, maxRetryTime: 60000 }');
    expect(run.error).toBeUndefined();
    expect(run.stdout.trim()).toBe('created');
  });
});
