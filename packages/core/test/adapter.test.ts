// @inboxkit/core/adapter: the pieces every adapter shares. Settling an outcome (publish,
// record, ack; or hand back) runs against a real Postgres, so "recorded" means a row.
import { createInbox, type DeadLetterOutcome, type Inbox, type ProcessOutcome } from '@inboxkit/core';
import {
  backoffDelayMs,
  compileBackoff,
  forgetExpiredKey,
  invalidMessageOutcome,
  settleOutcome,
  settleOutcomes,
  truncateUtf8,
} from '@inboxkit/core/adapter';
import { createPgPool } from '@inboxkit/core/pg';
import { Kysely, PostgresDialect, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase, type TestDB } from '../../../test/support/postgres.ts';
import { freePort } from '../../../test/support/private-postgres.ts';

let t: TestDatabase;
let inbox: Inbox<TestDB>;
beforeAll(async () => {
  t = await createTestDatabase('core_adapter');
  inbox = createInbox({ db: t.db, consumer: 'adapter-test' });
});
afterAll(async () => {
  await t?.dispose();
});

async function statusOf(id: string): Promise<string | undefined> {
  const { rows } = await sql<{ status: string }>`
    SELECT status FROM processed_messages WHERE consumer = 'adapter-test' AND message_id = ${id}`.execute(t.db);
  return rows[0]?.status;
}

const failed = (id: string | undefined): DeadLetterOutcome => ({
  status: 'dead_letter',
  messageId: id,
  reason: 'non_retryable',
  error: new Error('bad'),
  attempts: 1,
  firstSeenAt: new Date(),
});

/** The steps as a log, so a test reads the order they ran in. */
function recorder(publish: () => Promise<void> = async () => {}) {
  const log: string[] = [];
  return {
    log,
    steps: {
      publishDeadLetter: async (entry: { outcome: ProcessOutcome }) => {
        log.push(`publish ${entry.outcome.status}`);
        await publish();
      },
      ack: (outcome: ProcessOutcome) => {
        log.push(`ack ${outcome.status}`);
      },
      handBack: (reason: string) => {
        log.push(`hand back ${reason}`);
      },
    },
  };
}

describe('settleOutcome', () => {
  it('dead letter: publishes, records under its id (a redelivery is then a duplicate), then acks', async () => {
    const { log, steps } = recorder(async () => {
      expect(await statusOf('s-1')).toBeUndefined(); // not recorded before the broker confirmed
    });
    await settleOutcome(inbox, { id: 's-1', payload: 'x' }, failed('s-1'), steps);
    expect(log).toEqual(['publish dead_letter', 'ack dead_letter']);
    expect(await statusOf('s-1')).toBe('dead_lettered');
    const again = await inbox.process({ id: 's-1', payload: 'x' }, async () => {});
    expect(again).toMatchObject({ status: 'duplicate', previousStatus: 'dead_lettered' });
  });

  it('a publish the broker did not confirm hands the message back, unrecorded and unacked', async () => {
    const { log, steps } = recorder(async () => {
      throw new Error('nacked');
    });
    await settleOutcome(inbox, { id: 's-2', payload: 'x' }, failed('s-2'), steps);
    expect(log).toEqual(['publish dead_letter', 'hand back dead_letter_publish_failed']);
    expect(await statusOf('s-2')).toBeUndefined();
  });

  it('a conflict is dead-lettered and acked, but the key keeps its first content', async () => {
    expect((await inbox.process({ id: 's-3', payload: 'first' }, async () => {})).status).toBe('processed');
    const conflict = await inbox.process({ id: 's-3', payload: 'other' }, async () => {});
    expect(conflict.status).toBe('conflict');
    const { log, steps } = recorder();
    await settleOutcome(inbox, { id: 's-3', payload: 'other' }, conflict, steps);
    expect(log).toEqual(['publish conflict', 'ack conflict']);
    expect(await statusOf('s-3')).toBe('processed');
  });

  it('retry_later hands back; processed and duplicate ack', async () => {
    const { log, steps } = recorder();
    const retry: ProcessOutcome = {
      status: 'retry_later',
      messageId: 's-4',
      reason: 'lock_timeout',
      error: new Error('held'),
      attempts: 1,
    };
    await settleOutcome(inbox, { id: 's-4' }, retry, steps);
    await settleOutcome(inbox, { id: 's-5' }, await inbox.process({ id: 's-5' }, async () => 1), steps);
    await settleOutcome(inbox, { id: 's-5' }, await inbox.process({ id: 's-5' }, async () => 1), steps);
    expect(log).toEqual(['hand back lock_timeout', 'ack processed', 'ack duplicate']);
  });

  it('an invalid message without an id is dead-lettered without a record', async () => {
    const outcome = invalidMessageOutcome(new Error('no id'), '');
    expect(outcome).toMatchObject({
      status: 'dead_letter',
      reason: 'invalid_message',
      messageId: undefined,
      attempts: 0,
    });
    const { log, steps } = recorder();
    await settleOutcome(inbox, { id: '' }, outcome, steps);
    expect(log).toEqual(['publish dead_letter', 'ack dead_letter']);
  });

  it('a record Postgres does not answer hands the message back after the publish', async () => {
    const pool = createPgPool({
      connectionString: `postgres://postgres@127.0.0.1:${await freePort()}/postgres`,
      connectionTimeoutMillis: 1000,
    });
    const db = new Kysely<TestDB>({ dialect: new PostgresDialect({ pool }) });
    try {
      const { log, steps } = recorder();
      await settleOutcome(createInbox({ db, consumer: 'nowhere' }), { id: 's-6' }, failed('s-6'), steps);
      expect(log).toEqual(['publish dead_letter', 'hand back dead_letter_record_failed']);
    } finally {
      await db.destroy();
    }
  });
});

describe('settleOutcomes', () => {
  it('publishes the dead letters before the first hand-back together, acks the prefix, hands back the rest', async () => {
    const outcomes: ProcessOutcome[] = [
      await inbox.process({ id: 'm-1' }, async () => {}),
      failed('m-2'),
      {
        status: 'retry_later',
        messageId: 'm-3',
        reason: 'database_unavailable',
        error: new Error('down'),
        attempts: 1,
      },
      failed('m-4'),
    ];
    const items = outcomes.map((outcome, i) => ({ message: { id: `m-${i + 1}` }, outcome }));
    const log: string[] = [];
    const settled = await settleOutcomes(inbox, items, {
      publishDeadLetters: async (entries) => {
        log.push(`publish ${entries.map((e) => e.message.id).join(',')}`);
      },
      deadLettered: (entry) => {
        log.push(`dead-lettered ${entry.message.id}`);
      },
      ack: (count) => {
        log.push(`ack ${count}`);
      },
      handBack: (index, reason) => {
        log.push(`hand back ${index} ${reason}`);
      },
    });
    expect(settled).toBe(2);
    expect(log).toEqual(['publish m-2', 'dead-lettered m-2', 'ack 2', 'hand back 2 database_unavailable']);
    expect(await statusOf('m-2')).toBe('dead_lettered');
    expect(await statusOf('m-4')).toBeUndefined();
  });
});

describe('forgetExpiredKey', () => {
  it('deletes a key stored before the cut-off, and only that one', async () => {
    await inbox.process({ id: 'f-1' }, async () => {});
    expect(await forgetExpiredKey(inbox, 'f-1', new Date(Date.now() - 60_000))).toBe(false);
    expect(await statusOf('f-1')).toBe('processed');
    expect(await forgetExpiredKey(inbox, 'f-1', new Date(Date.now() + 60_000))).toBe(true);
    expect(await statusOf('f-1')).toBeUndefined();
  });
});

describe('backoff', () => {
  const backoff = { minDelayMs: 100, maxDelayMs: 1_000, factor: 2 };
  it('grows exponentially, with equal jitter, and never exceeds maxDelayMs', () => {
    expect([1, 2, 3, 4, 5, 10].map((n) => backoffDelayMs(backoff, n, () => 0))).toEqual([50, 100, 200, 400, 500, 500]);
    expect([1, 2, 3, 4, 5, 10].map((n) => backoffDelayMs(backoff, n, () => 1))).toEqual([
      100, 200, 400, 800, 1000, 1000,
    ]);
  });
  it('checks its options by name', () => {
    expect(compileBackoff('pause', undefined, backoff)).toBe(backoff);
    expect(() => compileBackoff('pause', { delay: 1 } as never, backoff)).toThrow(/Unknown option `pause.delay`/);
    expect(() => compileBackoff('pause', { minDelayMs: 0 }, backoff)).toThrow(/`pause.minDelayMs`/);
    expect(() => compileBackoff('pause', { maxDelayMs: 50 }, backoff, 10)).toThrow(/from 1 to 10/);
  });
});

describe('truncateUtf8', () => {
  it('keeps short text, and cuts long text within the byte limit, never inside a character', () => {
    expect(truncateUtf8('short', 10)).toBe('short');
    expect(truncateUtf8('ééééé', 10)).toBe('ééééé');
    const cut = truncateUtf8('€'.repeat(100), 50);
    expect(Buffer.byteLength(cut)).toBeLessThanOrEqual(50);
    expect(cut).toMatch(/^€+…\[truncated\]$/);
  });
});

describe('inboxConfig: the compiled options, for adapters only', () => {
  it('are not on the public Inbox, and come from the adapter subpath; a fake inbox is refused', async () => {
    const { createInbox } = await import('@inboxkit/core');
    const { inboxConfig } = await import('@inboxkit/core/adapter');
    const db = { transaction() {}, executeQuery() {} } as never;
    const inbox = createInbox({ db, consumer: 'config-check', maxIdLength: 99 });
    expect((inbox as unknown as { config?: unknown }).config).toBeUndefined();
    expect(inboxConfig(inbox)).toMatchObject({ consumer: 'config-check', maxIdLength: 99 });
    expect(() => inboxConfig({ consumer: 'x' } as never)).toThrow(/createInbox/);
  });
});
