// The outbox in core against a real Postgres: enqueue (one statement, typed errors, NOTIFY at
// commit only), and the relay engine with a publish step that records what it was given
// (the broker relays have their own tests in test/kafka and test/rabbitmq).
import { readFileSync } from 'node:fs';
import {
  createInbox,
  createOutbox,
  InvalidOutboxMessageError,
  migrateOutbox,
  NonRetryableError,
  type Outbox,
  type OutboxRecord,
  type OutboxRelayEvents,
  outboxSchemaSql,
} from '@inboxkit/core';
import { createOutboxRelay, type OutboxPublish } from '@inboxkit/core/adapter';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/support/postgres.ts';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('core_outbox');
  const migrated = await migrateOutbox(t.db);
  if (migrated.error) throw migrated.error;
});
afterAll(async () => {
  await t?.dispose();
});

/** A fresh table of its own for one test (so relays of different tests never meet). */
async function freshOutbox(table: string): Promise<Outbox> {
  await sql.raw(outboxSchemaSql({ table })).execute(t.db);
  return createOutbox({ db: t.db, table });
}

async function rows(table: string) {
  const { rows } = await sql<{ status: string; attempts: number; message_id: string }>`
    SELECT status, attempts, message_id FROM ${sql.table(table)} ORDER BY sequence`.execute(t.db);
  return rows;
}

/** A publish step that records every record it confirmed, in order. */
function recordingPublish(refuse: (r: OutboxRecord) => Error | undefined = () => undefined) {
  const published: OutboxRecord[] = [];
  const publish: OutboxPublish = async (records) => {
    await new Promise((resolve) => setTimeout(resolve, Math.random() * 3));
    return records.map((r) => {
      const error = refuse(r);
      if (error === undefined) published.push(r);
      return error;
    });
  };
  return { published, publish };
}

async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('outbox schema', () => {
  it('the shipped plain SQL file is what outboxSchemaSql() generates for the default names', () => {
    const file = readFileSync(new URL('../sql/outbox_0001.sql', import.meta.url), 'utf8');
    expect(file).toBe(outboxSchemaSql());
  });

  it('migrates a custom schema and table from several connections at once, exactly once', async () => {
    const results = await Promise.all(
      [1, 2, 3].map(() => migrateOutbox(t.connect(1).db, { schema: 'relay_ns', table: 'events_out' })),
    );
    for (const result of results) expect(result.error).toBeUndefined();
    expect(results.flatMap((r) => r.results ?? []).filter((r) => r.status === 'Success')).toHaveLength(1);
    const outbox = createOutbox({ db: t.db, schema: 'relay_ns', table: 'events_out' });
    await outbox.enqueue(t.db, { topic: 't', payload: 1 });
  });

  it('migrates with its own history table and is idempotent as plain SQL, names quoted', async () => {
    const again = await migrateOutbox(t.db);
    expect(again.error).toBeUndefined();
    expect(again.results).toEqual([]);
    await sql.raw(outboxSchemaSql({ schema: 'Billing', table: 'Out$box' })).execute(t.db);
    await sql.raw(outboxSchemaSql({ schema: 'Billing', table: 'Out$box' })).execute(t.db);
    const outbox = createOutbox({ db: t.db, schema: 'Billing', table: 'Out$box' });
    await outbox.enqueue(t.db, { topic: 't', payload: { a: 1 } });
    const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM "Billing"."Out$box"`.execute(t.db);
    expect(rows[0]?.n).toBe(1);
    expect(() => createOutbox({ db: t.db, table: 'x; drop table y' })).toThrow(/`table` must be a plain identifier/);
  });
});

describe('enqueue', () => {
  it('refuses bad input with a typed error naming the field, before any statement', async () => {
    const outbox = await freshOutbox('ob_bad_input');
    const cases: [unknown, string][] = [
      [{ payload: 1 }, 'topic'],
      [{ topic: '', payload: 1 }, 'topic'],
      [{ exchange: 'x', payload: 1 }, 'routingKey'],
      [{ topic: 't', routingKey: 'r', payload: 1 }, 'routingKey'],
      [{ topic: 't', payload: 10n }, 'payload'],
      [{ topic: 't', payload: undefined }, 'payload'],
      [{ topic: 't', payload: () => 1 }, 'payload'],
      [{ topic: 't', payload: 1, headers: { a: 1 } }, 'headers'],
      [{ topic: 't', payload: 1, headers: 'x' }, 'headers'],
      [{ topic: 't', payload: 1, messageId: '' }, 'messageId'],
      [{ topic: 't', payload: 1, messageId: 'x'.repeat(256) }, 'messageId'],
      [{ topic: 't', payload: 1, key: 'a\u0000b' }, 'key'],
    ];
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    cases.push([{ topic: 't', payload: cyclic }, 'payload']);
    await t.db.transaction().execute(async (trx) => {
      for (const [message, field] of cases) {
        const error = await outbox.enqueue(trx, [{ topic: 'ok', payload: 1 }, message as never]).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error, JSON.stringify(field)).toBeInstanceOf(InvalidOutboxMessageError);
        expect(error).toMatchObject({ code: 'INBOX_INVALID_OUTBOX_MESSAGE', field, index: 1 });
      }
      // The transaction is untouched: no statement ran, so it is not aborted either.
      await sql`SELECT 1`.execute(trx);
    });
    expect(await rows('ob_bad_input')).toEqual([]);
  });

  it('writes many messages in one statement, in the order given, JSON-encoding what is not bytes', async () => {
    const outbox = await freshOutbox('ob_one_statement');
    const statements: string[] = [];
    const logged = new Kysely<unknown>({
      dialect: new PostgresDialect({ pool: t.pool }),
      log: (event) => {
        statements.push(event.query.sql);
      },
    });
    await logged.transaction().execute(async (trx) => {
      statements.length = 0;
      await outbox.enqueue(
        trx,
        Array.from({ length: 50 }, (_, i) => ({
          topic: 'orders',
          key: `k${i % 3}`,
          payload: i % 2 === 0 ? { i } : Buffer.from(`raw-${i}`),
          messageId: `m-${i}`,
          headers: { traceparent: `00-${i}` },
        })),
      );
      expect(statements).toHaveLength(1);
    });
    const { rows: stored } = await sql<{ message_id: string; payload: Buffer; headers: unknown; key: string }>`
      SELECT message_id, payload, headers, key FROM ob_one_statement ORDER BY sequence`.execute(t.db);
    expect(stored.map((r) => r.message_id)).toEqual(Array.from({ length: 50 }, (_, i) => `m-${i}`));
    expect(stored[0]?.payload.toString()).toBe('{"i":0}');
    expect(stored[1]?.payload.toString()).toBe('raw-1');
    expect(stored[3]?.headers).toEqual({ traceparent: '00-3' });
    const generated = createOutbox({ db: t.db, table: 'ob_one_statement' });
    await generated.enqueue(t.db, { exchange: '', routingKey: 'q', payload: 'text' });
    const { rows: last } = await sql<{ message_id: string; payload: Buffer; routing_key: string }>`
      SELECT message_id, payload, routing_key FROM ob_one_statement ORDER BY sequence DESC LIMIT 1`.execute(t.db);
    expect(last[0]?.message_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(last[0]?.payload.toString()).toBe('"text"');
    expect(last[0]?.routing_key).toBe('q');
  });

  it('notifies at commit only: a rolled-back enqueue wakes nobody, nor one with notify: false', async () => {
    const outbox = await freshOutbox('ob_notify');
    const listener = new pg.Client({ connectionString: t.url });
    await listener.connect();
    try {
      const heard: string[] = [];
      listener.on('notification', (n) => heard.push(n.channel));
      // The channel name is internal: the one a relay of this table listens on.
      const relayChannel = (await import('../src/outbox/outbox-tables.ts')).outboxTables('public', 'ob_notify').channel;
      await listener.query(`LISTEN "${relayChannel}"`);
      await t.db
        .transaction()
        .execute(async (trx) => {
          await outbox.enqueue(trx, { topic: 't', payload: 1 });
          throw new Error('handler failed');
        })
        .catch(() => {});
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(heard).toEqual([]);
      const quiet = createOutbox({ db: t.db, table: 'ob_notify', notify: false });
      await t.db.transaction().execute((trx) => quiet.enqueue(trx, { topic: 't', payload: 'quiet' }));
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(heard).toEqual([]);
      await t.db.transaction().execute((trx) => outbox.enqueue(trx, { topic: 't', payload: 1 }));
      await until(() => heard.length === 1);
    } finally {
      await listener.end();
    }
  });
});

describe('relay engine', () => {
  it('publishes only what committed, once, with its id and headers, woken by NOTIFY', async () => {
    const outbox = await freshOutbox('ob_commit');
    const { published, publish } = recordingPublish();
    const relay = createOutboxRelay({
      outbox,
      publish,
      listen: { connectionString: t.url },
      pollIntervalMs: 60_000,
    });
    const batches: { count: number; messageIds: readonly string[] }[] = [];
    relay.on('published', (e) => batches.push({ count: e.count, messageIds: e.messageIds }));
    try {
      // An inbox handler that enqueues and then fails for good: its transaction rolls back.
      const inbox = createInbox({ db: t.db, consumer: 'outbox-commit', retry: { retries: 0 } });
      const failed = await inbox.process({ id: 'in-1' }, async (trx) => {
        await outbox.enqueue(trx, { topic: 't', payload: { n: 'rolled back' }, messageId: 'never' });
        throw new NonRetryableError('the handler failed after enqueueing');
      });
      expect(failed.status).toBe('dead_letter');
      // Give the LISTEN connection time to be up; a poll interval of a minute means only NOTIFY can wake it.
      await new Promise((resolve) => setTimeout(resolve, 500));
      const processed = await inbox.process({ id: 'in-2' }, async (trx) => {
        await outbox.enqueue(trx, { topic: 't', key: 'k', payload: { n: 1 }, messageId: 'm-1', headers: { h: 'v' } });
      });
      expect(processed.status).toBe('processed');
      await until(() => published.length === 1);
      await until(async () => (await rows('ob_commit')).length === 0);
      expect(published[0]).toMatchObject({ messageId: 'm-1', destination: 't', key: 'k', headers: { h: 'v' } });
      expect(JSON.parse(published[0]?.payload.toString() ?? '')).toEqual({ n: 1 });
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(published.map((r) => r.messageId)).toEqual(['m-1']);
      expect(batches).toEqual([{ count: 1, messageIds: ['m-1'] }]);
    } finally {
      await relay.close();
    }
  });

  it('listens on a client kept from a node-postgres pool', async () => {
    const outbox = await freshOutbox('ob_listen_pool');
    const { published, publish } = recordingPublish();
    const pool = new pg.Pool({ connectionString: t.url, max: 2 });
    const relay = createOutboxRelay({ outbox, publish, listen: { pool }, pollIntervalMs: 60_000 });
    try {
      await until(async () => pool.totalCount === 1);
      await new Promise((resolve) => setTimeout(resolve, 300));
      await outbox.enqueue(t.db, { topic: 't', payload: 1, messageId: 'woken' });
      await until(() => published.length === 1, 10_000);
    } finally {
      await relay.close();
      await pool.end();
    }
  });

  it('keeps per-key order with two relays and concurrent enqueuers', async () => {
    const outbox = await freshOutbox('ob_order');
    const { published, publish } = recordingPublish();
    const relays = [1, 2].map((n) =>
      createOutboxRelay({ outbox, publish, name: `r${n}`, batchSize: 7, pollIntervalMs: 10 }),
    );
    const keys = ['a', 'b', 'c', 'd'];
    const perWriter = 40;
    try {
      // Four writers enqueue to the same keys at once, each message in its own transaction,
      // some transactions with two messages of one key; the committed order per key is
      // recorded by each writer in a table inside the same transaction.
      await sql`CREATE TABLE ob_order_commits (seq bigserial PRIMARY KEY, key text, message_id text)`.execute(t.db);
      await Promise.all(
        [0, 1, 2, 3].map(async (w) => {
          for (let i = 0; i < perWriter; i++) {
            const key = keys[(w + i) % keys.length] as string;
            const ids = i % 5 === 0 ? [`${w}-${i}-a`, `${w}-${i}-b`] : [`${w}-${i}`];
            await t.db.transaction().execute(async (trx) => {
              await outbox.enqueue(
                trx,
                ids.map((id) => ({ topic: 't', key, payload: {}, messageId: id })),
              );
              await new Promise((resolve) => setTimeout(resolve, Math.random() * 4));
              for (const id of ids) {
                await sql`INSERT INTO ob_order_commits (key, message_id) VALUES (${key}, ${id})`.execute(trx);
              }
            });
          }
        }),
      );
      const { rows: committed } = await sql<{ key: string; message_id: string }>`
        SELECT key, message_id FROM ob_order_commits ORDER BY seq`.execute(t.db);
      await until(() => published.length === committed.length);
      for (const key of keys) {
        // The commit-log order per key is the lock order, i.e. the commit order.
        const expected = committed.filter((c) => c.key === key).map((c) => c.message_id);
        const got = published.filter((p) => p.key === key).map((p) => p.messageId);
        expect(got).toEqual(expected);
      }
      expect(new Set(published.map((p) => p.messageId)).size).toBe(published.length);
    } finally {
      await Promise.all(relays.map((r) => r.close()));
    }
  });

  it("the relay's backlog event reads the bounded backlog: past 10,000 rows it estimates instead of counting the table", async () => {
    const outbox = await freshOutbox('ob_deep_backlog');
    const { publish } = recordingPublish((r) =>
      r.destination === 'missing' ? new Error('no such destination') : undefined,
    );
    const relay = createOutboxRelay({ outbox, publish, pollIntervalMs: 20, retry: { maxAttempts: 1 } });
    const backlogs: OutboxRelayEvents['backlog'][] = [];
    relay.on('backlog', (e) => backlogs.push(e));
    try {
      // A poison message first, then 10,050 of its key held behind it: the relay idles.
      await outbox.enqueue(t.db, [
        { topic: 'missing', key: 'deep', payload: 0, messageId: 'deep-poison' },
        ...Array.from({ length: 10_050 }, (_, i) => ({ topic: 'ok', key: 'deep', payload: i, messageId: `deep-${i}` })),
      ]);
      // Once the poison is set aside, the relay idles and reports at each poll.
      await until(async () => (await outbox.failed()).length === 1);
      backlogs.length = 0;
      await until(() => backlogs.length > 0);
      const seen = backlogs[0];
      expect(seen).toMatchObject({ relay: 'relay', pendingEstimated: true, failedEstimated: true });
      expect(seen?.pending).toBeGreaterThanOrEqual(10_000);
      expect(seen?.oldestPendingMs).toBeGreaterThanOrEqual(0);
    } finally {
      await relay.close();
    }
  });

  it('retries a refused message, sets it aside past the policy blocking only its key, and retries it on request', async () => {
    const outbox = await freshOutbox('ob_poison');
    let destinationExists = false;
    const { published, publish } = recordingPublish((r) =>
      r.destination === 'missing' && !destinationExists ? new Error('no such destination') : undefined,
    );
    const relay = createOutboxRelay({
      outbox,
      publish,
      pollIntervalMs: 20,
      retry: { maxAttempts: 3, minDelayMs: 10, maxDelayMs: 20 },
    });
    const events = { refused: 0, failed: [] as string[], backlog: [] as { pending: number; failed: number }[] };
    relay.on('refused', () => events.refused++);
    relay.on('failed', (e) => events.failed.push(e.messageId));
    relay.on('backlog', (e) => events.backlog.push({ pending: e.pending, failed: e.failed }));
    try {
      await outbox.enqueue(t.db, [
        { topic: 'missing', key: 'k1', payload: 1, messageId: 'poison' },
        { topic: 'ok', key: 'k1', payload: 2, messageId: 'after-poison' },
        { topic: 'ok', key: 'k2', payload: 3, messageId: 'other-key' },
        { topic: 'ok', payload: 4, messageId: 'keyless' },
      ]);
      await until(() => events.failed.length === 1);
      await until(() => published.length === 2);
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(published.map((p) => p.messageId).sort()).toEqual(['keyless', 'other-key']);
      expect(events.refused).toBe(2);
      const failed = await outbox.failed();
      expect(failed).toHaveLength(1);
      expect(failed[0]).toMatchObject({ messageId: 'poison', attempts: 3, destination: 'missing', key: 'k1' });
      expect(failed[0]?.lastError).toContain('no such destination');
      await until(async () => (await rows('ob_poison')).length === 2);
      expect((await rows('ob_poison')).map((r) => r.message_id)).toEqual(['poison', 'after-poison']);
      // Idle polls report the backlog: the message behind the poison, and the poison.
      await until(() => events.backlog.some((b) => b.pending === 1 && b.failed === 1));

      destinationExists = true;
      expect(await outbox.retryFailed(['poison'])).toBe(1);
      await until(() => published.length === 4);
      expect(published.slice(2).map((p) => p.messageId)).toEqual(['poison', 'after-poison']);
      await until(async () => (await rows('ob_poison')).length === 0);
    } finally {
      await relay.close();
    }
  });

  it('lets other keys and keyless messages through behind a deep backlog held by a failed message', async () => {
    const outbox = await freshOutbox('ob_deep');
    const { published, publish } = recordingPublish((r) =>
      r.messageId === 'stuck' ? new Error('refused for good') : undefined,
    );
    await outbox.enqueue(t.db, { topic: 't', key: 'a-hot', payload: 0, messageId: 'stuck' });
    await outbox.enqueue(
      t.db,
      Array.from({ length: 2000 }, (_, i) => ({ topic: 't', key: 'a-hot', payload: i, messageId: `behind-${i}` })),
    );
    await outbox.enqueue(t.db, [
      { topic: 't', key: 'z-late', payload: 1, messageId: 'late-key' },
      { topic: 't', payload: 1, messageId: 'late-keyless' },
    ]);
    const relay = createOutboxRelay({ outbox, publish, batchSize: 10, pollIntervalMs: 20, retry: { maxAttempts: 1 } });
    try {
      await until(() => published.length === 2);
      expect(published.map((p) => p.messageId).sort()).toEqual(['late-key', 'late-keyless']);
      await until(async () => (await outbox.failed()).length === 1);
      expect((await outbox.failed()).map((f) => f.messageId)).toEqual(['stuck']);
    } finally {
      await relay.close();
    }
  });

  it('tells the poison apart from the innocent messages of its batch', async () => {
    const outbox = await freshOutbox('ob_narrow');
    let calls = 0;
    const published: string[] = [];
    // Like a RabbitMQ channel closed by one publish to a missing exchange: the whole batch fails.
    const publish: OutboxPublish = async (records) => {
      calls++;
      const poisoned = records.some((r) => r.destination === 'missing');
      if (!poisoned) for (const r of records) published.push(r.messageId);
      return records.map(() => (poisoned ? new Error('channel closed') : undefined));
    };
    const relay = createOutboxRelay({ outbox, publish, pollIntervalMs: 20, retry: { maxAttempts: 1 } });
    try {
      await outbox.enqueue(
        t.db,
        ['a', 'b', 'c'].map((k) => ({ topic: k === 'b' ? 'missing' : 'ok', key: k, payload: 1, messageId: k })),
      );
      await until(async () => (await rows('ob_narrow')).every((r) => r.status === 'failed'));
      expect(published.sort()).toEqual(['a', 'c']);
      expect(await rows('ob_narrow')).toEqual([{ status: 'failed', attempts: 1, message_id: 'b' }]);
      expect(calls).toBe(4);
    } finally {
      await relay.close();
    }
  });

  it('pauses while the broker is away without counting attempts, and resumes', async () => {
    const outbox = await freshOutbox('ob_broker_away');
    let up = false;
    const published: string[] = [];
    const publish: OutboxPublish = async (records) => {
      if (!up) {
        const { BrokerUnavailableForRelayError } = await import('@inboxkit/core');
        throw new BrokerUnavailableForRelayError('broker down');
      }
      for (const r of records) published.push(r.messageId);
      return records.map(() => undefined);
    };
    const relay = createOutboxRelay({ outbox, publish, pollIntervalMs: 20, pause: { minDelayMs: 10, maxDelayMs: 50 } });
    const paused: string[] = [];
    let resumed = 0;
    relay.on('paused', (e) => paused.push(e.reason));
    relay.on('resumed', () => resumed++);
    try {
      await outbox.enqueue(t.db, { topic: 't', key: 'k', payload: 1, messageId: 'x' });
      await until(() => paused.length >= 3);
      expect(new Set(paused)).toEqual(new Set(['broker_unavailable']));
      expect(await rows('ob_broker_away')).toEqual([{ status: 'pending', attempts: 0, message_id: 'x' }]);
      up = true;
      await until(() => published.length === 1);
      await until(() => resumed === 1);
    } finally {
      await relay.close();
    }
  });

  it('refuses bad options naming them', () => {
    const outbox = createOutbox({ db: t.db, table: 'ob_options' });
    const publish: OutboxPublish = async (records) => records.map(() => undefined);
    expect(() => createOutboxRelay({ outbox, publish, batchSize: 0 })).toThrow(/`batchSize`/);
    expect(() => createOutboxRelay({ outbox, publish, pollIntervalMs: -1 })).toThrow(/`pollIntervalMs`/);
    expect(() => createOutboxRelay({ outbox, publish, retry: { maxAttempts: 1.5 } })).toThrow(/`retry.maxAttempts`/);
    expect(() => createOutboxRelay({ outbox, publish, retry: { minDelayMs: 0 } })).toThrow(/`retry.minDelayMs`/);
    expect(() => createOutboxRelay({ outbox, publish, listen: { url: 'x' } as never })).toThrow(/`listen`/);
    expect(() => createOutboxRelay({ outbox, publish, batchsize: 5 } as never)).toThrow(/Unknown option `batchsize`/);
    expect(() => createOutboxRelay({ outbox: {} as never, publish })).toThrow(/createOutbox/);
    expect(() => createOutbox({ db: t.db, notify: 'yes' } as never)).toThrow(/`notify`/);
  });

  it('close() drains the batch in flight and is idempotent', async () => {
    const outbox = await freshOutbox('ob_close');
    let release: () => void = () => {};
    let started: () => void = () => {};
    const inFlight = new Promise<void>((resolve) => {
      started = resolve;
    });
    const publish: OutboxPublish = async (records) => {
      started();
      await new Promise<void>((resolve) => {
        release = resolve;
      });
      return records.map(() => undefined);
    };
    await outbox.enqueue(t.db, { topic: 't', payload: 1, messageId: 'slow' });
    const relay = createOutboxRelay({ outbox, publish, pollIntervalMs: 20 });
    await inFlight;
    const first = relay.close();
    expect(relay.close()).toBe(first);
    let closed = false;
    void first.then(() => {
      closed = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(closed).toBe(false);
    release();
    await first;
    expect(await rows('ob_close')).toEqual([]);
  });
});

describe('the backlog and failed messages, for operators', () => {
  it('counts exactly on a small table, bounds and estimates past exactUpTo, and lists failed messages by id', async () => {
    const outbox = await freshOutbox('ob_backlog');
    expect(await outbox.backlog()).toEqual({
      pending: 0,
      pendingEstimated: false,
      failed: 0,
      failedEstimated: false,
      oldestPendingAt: null,
    });
    await outbox.enqueue(
      t.db,
      Array.from({ length: 30 }, (_, i) => ({ topic: 't', payload: i, messageId: `m-${i}` })),
    );
    // Set aside as a relay does past its retry budget.
    await sql`UPDATE ob_backlog SET status = 'failed', attempts = 10, last_error = 'refused'
      WHERE message_id IN ('m-0', 'm-1', 'm-2')`.execute(t.db);
    const { rows: created } = await sql<{ at: Date }>`
      SELECT min(created_at) AS at FROM ob_backlog WHERE status = 'pending'`.execute(t.db);

    const exact = await outbox.backlog();
    expect(exact).toEqual({
      pending: 27,
      pendingEstimated: false,
      failed: 3,
      failedEstimated: false,
      oldestPendingAt: created[0]?.at,
    });

    await sql`ANALYZE ob_backlog`.execute(t.db);
    const bounded = await outbox.backlog({ exactUpTo: 10 });
    expect(bounded).toMatchObject({ pendingEstimated: true, failedEstimated: true, oldestPendingAt: created[0]?.at });
    // From the statistics of a table ANALYZE read whole: 30 rows, 27 of them pending, 3 failed.
    expect(bounded.pending).toBe(27);
    expect(bounded.failed).toBe(3);
    const pendingExact = await outbox.backlog({ exactUpTo: 29 });
    expect(pendingExact).toMatchObject({ pending: 27, pendingEstimated: false, failed: 3, failedEstimated: true });

    const listed = await outbox.failed({ messageIds: ['m-2', 'm-0', 'm-5', 'nope'] });
    expect(listed.map((m) => m.messageId)).toEqual(['m-0', 'm-2']);
    expect(listed[0]).toMatchObject({ attempts: 10, lastError: 'refused', destination: 't' });
    await expect(outbox.backlog({ exactUpTo: 0 })).rejects.toThrow(/exactUpTo/);
    await expect(outbox.failed({ messageIds: [1 as unknown as string] })).rejects.toThrow(/messageIds/);
  });
});
