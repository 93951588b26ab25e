import { CrashLoopError, createInbox, type InboxEvents, NonRetryableError, PayloadConflictError } from '@inboxkit/core';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/support/postgres.ts';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('core_inbox');
});
afterAll(async () => {
  await t?.dispose();
});

const fastRetry = { retries: 3, minTimeout: 1, maxTimeout: 5, randomize: false } as const;

function charge(id: string, amount = 100) {
  return { id, payload: JSON.stringify({ id, amount }) };
}

async function keyRow(consumer: string, id: string) {
  const { rows } = await sql<{ status: string; result: unknown }>`
    SELECT status, result FROM processed_messages WHERE consumer = ${consumer} AND message_id = ${id}`.execute(t.db);
  return rows[0];
}

describe('a new message', () => {
  it('commits the business row and the key together, and a redelivery gets the stored result without running the handler', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'new-message' });
    let runs = 0;
    const handler = async (trx: typeof t.db, message: { id: string }) => {
      runs++;
      await trx.insertInto('charges').values({ id: message.id, user_id: 'u1', amount_cents: 1200 }).execute();
      return { chargeId: message.id, charged: 1200 };
    };
    const first = await inbox.process(charge('c-1'), handler);
    expect(first).toMatchObject({ status: 'processed', messageId: 'c-1', attempts: 1, result: { charged: 1200 } });
    expect(await keyRow('new-message', 'c-1')).toEqual({
      status: 'processed',
      result: { chargeId: 'c-1', charged: 1200 },
    });

    const again = await inbox.process(charge('c-1'), handler);
    expect(again).toMatchObject({
      status: 'duplicate',
      previousStatus: 'processed',
      result: { chargeId: 'c-1', charged: 1200 },
    });
    expect(runs).toBe(1);
    const rows = await t.db.selectFrom('charges').selectAll().where('id', '=', 'c-1').execute();
    expect(rows).toHaveLength(1);
  });

  it('with duplicateFastPath, a duplicate is answered from one look-up without a transaction', async () => {
    const statements: string[] = [];
    const query = pg.Client.prototype.query;
    const spy = vi.spyOn(pg.Client.prototype, 'query').mockImplementation(function (
      this: pg.Client,
      ...args: unknown[]
    ) {
      const text = args[0];
      statements.push(typeof text === 'string' ? text : String((text as { text?: string }).text));
      return (query as (...a: unknown[]) => unknown).apply(this, args) as never;
    });
    try {
      for (const duplicateFastPath of [false, true]) {
        const inbox = createInbox({ db: t.db, consumer: `fast-path-${duplicateFastPath}`, duplicateFastPath });
        expect(await inbox.process(charge('fp-1'), async () => 'first')).toMatchObject({ status: 'processed' });
        statements.length = 0;
        expect(await inbox.process(charge('fp-1'), async () => 'again')).toMatchObject({
          status: 'duplicate',
          result: 'first',
        });
        const kinds = statements.map((text) => text.trim().split(/\s+/)[0]?.toLowerCase());
        // By default a duplicate costs what a hand-written consumer's does: BEGIN, the claim
        // (one call of the claim function, which returns the stored row), COMMIT.
        expect(kinds).toEqual(duplicateFastPath ? ['select'] : ['start', 'select', 'commit']);
      }
    } finally {
      spy.mockRestore();
    }
  });

  it('is keyed by consumer: two consumers each process the same message once', async () => {
    const a = createInbox({ db: t.db, consumer: 'consumer-a' });
    const b = createInbox({ db: t.db, consumer: 'consumer-b' });
    const writes: string[] = [];
    const handler = (name: string) => async (trx: typeof t.db, message: { id: string }) => {
      writes.push(name);
      await trx.insertInto('ledger').values({ charge_id: message.id, amount_cents: 1 }).execute();
    };
    for (const inbox of [a, b, a, b]) {
      await inbox.process(charge('shared-1'), handler(inbox.consumer));
    }
    expect(writes).toEqual(['consumer-a', 'consumer-b']);
    const ledger = await t.db.selectFrom('ledger').selectAll().where('charge_id', '=', 'shared-1').execute();
    expect(ledger).toHaveLength(2);
  });

  it('stores no result when the handler returns nothing, and storeResults: false stores none at all', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'no-results', storeResults: false });
    await inbox.process(charge('nr-1'), async () => ({ big: 'value' }));
    expect(await keyRow('no-results', 'nr-1')).toEqual({ status: 'processed', result: null });
    const dup = await inbox.process(charge('nr-1'), async () => 'never');
    expect(dup).toMatchObject({ status: 'duplicate', result: undefined });
  });
});

describe('a failing handler', () => {
  it('leaves neither the business row nor the key, and a later attempt succeeds once the fault clears', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'flaky', retry: fastRetry });
    let calls = 0;
    const retries: InboxEvents['retry'][] = [];
    inbox.on('retry', (event) => retries.push(event));
    const outcome = await inbox.process(charge('f-1'), async (trx, message) => {
      calls++;
      await trx.insertInto('charges').values({ id: message.id, user_id: 'u', amount_cents: 5 }).execute();
      if (calls < 3) throw new Error(`transient fault ${calls}`);
    });
    expect(outcome).toMatchObject({ status: 'processed', attempts: 3 });
    expect(retries.map((r) => r.attempt)).toEqual([1, 2]);
    expect(await t.db.selectFrom('charges').selectAll().where('id', '=', 'f-1').execute()).toHaveLength(1);
  });

  it('rolls back every attempt and reports dead_letter with the last error when retries run out', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'always-fails', retry: { ...fastRetry, retries: 2 } });
    let calls = 0;
    const outcome = await inbox.process(charge('af-1'), async (trx, message) => {
      calls++;
      await trx.insertInto('charges').values({ id: message.id, user_id: 'u', amount_cents: 5 }).execute();
      throw new Error(`boom ${calls}`);
    });
    expect(outcome).toMatchObject({ status: 'dead_letter', reason: 'retries_exhausted', attempts: 3 });
    expect(outcome.status === 'dead_letter' && outcome.error.message).toBe('boom 3');
    expect(calls).toBe(3);
    expect(await t.db.selectFrom('charges').selectAll().where('id', '=', 'af-1').execute()).toHaveLength(0);
    expect(await keyRow('always-fails', 'af-1')).toBeUndefined();
  });

  it('dead-letters a NonRetryableError, a marked class and a refused predicate at once', async () => {
    class ValidationError extends Error {}
    const inbox = createInbox({
      db: t.db,
      consumer: 'permanent',
      retry: {
        ...fastRetry,
        nonRetryable: [ValidationError],
        shouldRetry: ({ error }) => !error.message.includes('refuse'),
      },
    });
    let calls = 0;
    const cases: Array<[string, Error]> = [
      ['p-1', new NonRetryableError('amount must be positive')],
      ['p-2', new ValidationError('bad currency')],
      ['p-3', new Error('please refuse')],
      ['p-4', new TypeError('undefined is not a function')],
    ];
    for (const [id, error] of cases) {
      calls = 0;
      const outcome = await inbox.process(charge(id), async () => {
        calls++;
        throw error;
      });
      expect(outcome).toMatchObject({ status: 'dead_letter', reason: 'non_retryable', attempts: 1 });
      expect(calls).toBe(1);
    }
  });

  it('stores BigInts as strings, and dead-letters a result that cannot be stored with a clear error', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'results', retry: fastRetry });
    expect(await inbox.process({ id: 'big-1' }, async () => ({ rows: 10n }))).toMatchObject({ status: 'processed' });
    expect(await keyRow('results', 'big-1')).toMatchObject({ result: { rows: '10' } });
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    let calls = 0;
    const outcome = await inbox.process({ id: 'cyc-1' }, async (trx, message) => {
      calls++;
      await trx.insertInto('charges').values({ id: message.id, user_id: 'u', amount_cents: 1 }).execute();
      return cyclic;
    });
    expect(outcome).toMatchObject({ status: 'dead_letter', reason: 'non_retryable' });
    expect(outcome.status === 'dead_letter' && outcome.error.message).toMatch(/cannot be stored as JSON/);
    expect(calls).toBe(1);
    expect(await t.db.selectFrom('charges').selectAll().where('id', '=', 'cyc-1').execute()).toHaveLength(0);
  });

  it('turns a thrown non-Error into a HandlerError', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'throws-string', retry: { retries: 0 } });
    const outcome = await inbox.process(charge('s-1'), async () => {
      throw 'just a string';
    });
    expect(outcome.status === 'dead_letter' && outcome.error).toMatchObject({ code: 'INBOX_HANDLER_FAILED' });
  });
});

describe('dead letters', () => {
  it('recordDeadLetter makes a redelivery a duplicate of a dead-lettered message', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'dlq', retry: { retries: 0 } });
    const message = charge('d-1');
    const outcome = await inbox.process(message, async () => {
      throw new NonRetryableError('no');
    });
    if (outcome.status !== 'dead_letter') throw new Error('expected dead_letter');
    await inbox.recordDeadLetter(message, outcome);
    let ran = false;
    const again = await inbox.process(message, async () => {
      ran = true;
    });
    expect(again).toMatchObject({ status: 'duplicate', previousStatus: 'dead_lettered', result: undefined });
    expect(ran).toBe(false);
    const stored = await keyRow('dlq', 'd-1');
    expect(stored?.status).toBe('dead_lettered');
    expect(stored?.result).toMatchObject({
      reason: 'non_retryable',
      attempts: 1,
      error: { name: 'NonRetryableError' },
    });
  });
});

describe('conflicts', () => {
  it('reports the same id with a different payload as a conflict, not a duplicate', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'conflicts' });
    await inbox.process({ id: 'x-1', payload: 'amount=100' }, async () => {});
    let ran = false;
    const outcome = await inbox.process({ id: 'x-1', payload: 'amount=999' }, async () => {
      ran = true;
    });
    expect(outcome.status).toBe('conflict');
    expect(outcome.status === 'conflict' && outcome.error).toBeInstanceOf(PayloadConflictError);
    expect(ran).toBe(false);
    expect(await inbox.process({ id: 'x-1', payload: 'amount=100' }, async () => {})).toMatchObject({
      status: 'duplicate',
    });
  });

  it('with fingerprintPayloads: false, a different payload is a plain duplicate', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'no-fingerprint', fingerprintPayloads: false });
    await inbox.process({ id: 'y-1', payload: 'a' }, async () => {});
    expect(await inbox.process({ id: 'y-1', payload: 'b' }, async () => {})).toMatchObject({ status: 'duplicate' });
  });
});

describe('bad messages', () => {
  it('dead-letters missing, empty, too long, NUL-holding ids and bad payloads without running the handler', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'bad-input', maxIdLength: 16 });
    let ran = 0;
    const handler = async () => {
      ran++;
    };
    const bad: unknown[] = [
      {},
      { id: '' },
      { id: 42 },
      { id: 'x'.repeat(17) },
      { id: 'nul\u0000id' },
      { id: 'ok-id', payload: { not: 'bytes' } },
      null,
    ];
    for (const message of bad) {
      const outcome = await inbox.process(message as { id: string }, handler);
      expect(outcome).toMatchObject({ status: 'dead_letter', reason: 'invalid_message' });
      expect(outcome.status === 'dead_letter' && outcome.error).toMatchObject({ code: 'INBOX_INVALID_MESSAGE' });
    }
    expect(ran).toBe(0);
    const long = await inbox.process({ id: 'x'.repeat(17) }, handler);
    expect(long.status === 'dead_letter' && long.error.message).toMatch(/17 characters long, over the limit of 16/);
    // Its outcome names no id: recording a truncated one would dead-letter another message.
    expect(long.messageId).toBeUndefined();
    if (long.status === 'dead_letter') await inbox.recordDeadLetter({ id: 'x'.repeat(17) }, long);
    expect(await inbox.find('x'.repeat(16))).toBeUndefined();
    // and the inbox still works
    expect(await inbox.process({ id: 'x'.repeat(16) }, handler)).toMatchObject({ status: 'processed' });
  });
});

describe('crash loops', () => {
  it('counts attempts of suspect deliveries and dead-letters past crashLoopLimit without running the handler', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'crash-loop', crashLoopLimit: 2 });
    const consumer = 'crash-loop';
    // Simulate two deliveries that killed the process: the attempt is committed before the
    // handler runs, then the "process" dies (the handler never returns; we abandon it).
    for (let i = 0; i < 2; i++) {
      await sql`INSERT INTO processed_messages_attempts (consumer, message_id, attempts) VALUES (${consumer}, 'poison', 1)
        ON CONFLICT (consumer, message_id) DO UPDATE SET attempts = processed_messages_attempts.attempts + 1`.execute(
        t.db,
      );
    }
    let ran = false;
    const outcome = await inbox.process(
      { id: 'poison' },
      async () => {
        ran = true;
      },
      { suspect: true },
    );
    expect(ran).toBe(false);
    expect(outcome).toMatchObject({ status: 'dead_letter', reason: 'crash_loop', attempts: 2 });
    expect(outcome.status === 'dead_letter' && outcome.error).toBeInstanceOf(CrashLoopError);
    if (outcome.status === 'dead_letter') await inbox.recordDeadLetter({ id: 'poison' }, outcome);
    const { rows } = await sql`SELECT * FROM processed_messages_attempts WHERE message_id = 'poison'`.execute(t.db);
    expect(rows).toHaveLength(0);
  });

  it('a suspect that succeeds clears its attempts; a suspect duplicate records none', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'suspects' });
    expect(await inbox.process({ id: 's-ok' }, async () => 'done', { suspect: true })).toMatchObject({
      status: 'processed',
    });
    expect(await inbox.process({ id: 's-ok' }, async () => 'again', { suspect: true })).toMatchObject({
      status: 'duplicate',
      result: 'done',
    });
    const { rows } = await sql`SELECT * FROM processed_messages_attempts WHERE consumer = 'suspects'`.execute(t.db);
    expect(rows).toHaveLength(0);
  });

  it('runs a suspect alone: no other handler of the inbox is in flight beside it', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'alone' });
    let inFlight = 0;
    let maxBesideSuspect = 0;
    let suspectRunning = false;
    const slow = (isSuspect: boolean) => async () => {
      inFlight++;
      if (isSuspect) suspectRunning = true;
      if (suspectRunning) maxBesideSuspect = Math.max(maxBesideSuspect, inFlight);
      await new Promise((r) => setTimeout(r, 30));
      if (isSuspect) suspectRunning = false;
      inFlight--;
    };
    await Promise.all([
      inbox.process({ id: 'n-1' }, slow(false)),
      inbox.process({ id: 'n-2' }, slow(false)),
      inbox.process({ id: 's-1' }, slow(true), { suspect: true }),
      inbox.process({ id: 'n-3' }, slow(false)),
      inbox.process({ id: 's-2' }, slow(true), { suspect: true }),
    ]);
    expect(maxBesideSuspect).toBe(1);
  });
});

describe('events', () => {
  it('emits processed, duplicate and deadLetter, and a throwing listener never breaks processing', async () => {
    const errors: unknown[] = [];
    const logger = { debug() {}, info() {}, warn() {}, error: (fields: object) => errors.push(fields) };
    const inbox = createInbox({ db: t.db, consumer: 'events', logger, retry: { retries: 0 } });
    const seen: string[] = [];
    inbox.on('processed', (e) => seen.push(`processed:${e.messageId}`));
    inbox.on('duplicate', (e) => seen.push(`duplicate:${e.messageId}`));
    inbox.on('deadLetter', (e) => seen.push(`deadLetter:${e.messageId}:${e.reason}`));
    inbox.on('processed', () => {
      throw new Error('listener bug');
    });
    expect(await inbox.process({ id: 'e-1' }, async () => {})).toMatchObject({ status: 'processed' });
    await inbox.process({ id: 'e-1' }, async () => {});
    await inbox.process({ id: 'e-2' }, async () => {
      throw new NonRetryableError('x');
    });
    expect(seen).toEqual(['processed:e-1', 'duplicate:e-1', 'deadLetter:e-2:non_retryable']);
    expect(errors).toHaveLength(1);
    expect(() => inbox.on('nope' as 'processed', () => {})).toThrow(/Unknown inbox event/);
  });
});

describe('payloadHashId: a message id for producers that send none', () => {
  it('is the same for the same bytes (string or Buffer), differs for other bytes, and is undefined without a payload', async () => {
    const { payloadHashId } = await import('@inboxkit/core');
    const body = '{"chargeId":"c-1","amountCents":1200}';
    expect(payloadHashId(body)).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(payloadHashId(Buffer.from(body))).toBe(payloadHashId(body));
    expect(payloadHashId(`${body} `)).not.toBe(payloadHashId(body));
    expect(payloadHashId(null)).toBeUndefined();
    expect(payloadHashId(undefined)).toBeUndefined();
    expect(payloadHashId('')).toBeUndefined();
    expect(payloadHashId(Buffer.alloc(0))).toBeUndefined();
    // A re-publish of the same content is a duplicate: the handler runs once.
    const inbox = createInbox({ db: t.db, consumer: 'payload-hash' });
    let runs = 0;
    const deliver = () =>
      inbox.process({ id: payloadHashId(body) as string, payload: body }, async () => {
        runs++;
      });
    expect((await deliver()).status).toBe('processed');
    expect((await deliver()).status).toBe('duplicate');
    expect(runs).toBe(1);
  });
});
