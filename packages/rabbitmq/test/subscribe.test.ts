import { createInbox, NonRetryableError, payloadHashId } from '@inboxkit/core';
import { createPgPool } from '@inboxkit/core/pg';
import {
  DEAD_LETTER_HEADERS,
  PublishError,
  type RabbitMessage,
  REPLY_HEADERS,
  type SubscribeOptions,
  type SubscriptionEvents,
  subscribe,
} from '@inboxkit/rabbitmq';
import type amqplib from 'amqplib';
import { Kysely, PostgresDialect, sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  amqpUrl,
  messagesInQueue,
  openTestBroker,
  type TestBroker,
  type TestMessage,
  uniqueName,
  waitFor,
} from '../../../test/rabbitmq/support/broker.ts';
import { inboxKeys, ledgerCounts } from '../../../test/rabbitmq/support/ledger.ts';
import { gate, Subscriptions } from '../../../test/rabbitmq/support/subscriptions.ts';
import { startTcpProxy } from '../../../test/rabbitmq/support/tcp-proxy.ts';
import { createTestDatabase, type TestDatabase, type TestDB } from '../../../test/support/postgres.ts';
import { freePort } from '../../../test/support/private-postgres.ts';

type Body = { n?: number; amountCents: number };
type Options = SubscribeOptions<TestDB, Body, unknown>;

let t: TestDatabase;
let broker: TestBroker;
const subscriptions = new Subscriptions();
const fast = { retries: 2, minTimeout: 1, maxTimeout: 5, randomize: false } as const;

beforeAll(async () => {
  t = await createTestDatabase('rabbitmq_subscribe');
  broker = await openTestBroker('subscribe');
});
afterEach(async () => {
  await subscriptions.closeAll();
});
afterAll(async () => {
  await broker?.dispose();
  await t?.dispose();
});

/** A queue (and its `.dlq` and `.retry`) of this test, deleted at the end of the file. */
function queueFor(label: string): string {
  const queue = uniqueName(label);
  broker.track(queue, `${queue}.dlq`, `${queue}.retry`);
  return queue;
}

/** Inserts one ledger row per message: the business effect the tests count. */
async function ledgerHandler(trx: Kysely<TestDB>, message: RabbitMessage<Body>): Promise<{ charged: number }> {
  await trx.insertInto('ledger').values({ charge_id: message.id, amount_cents: message.body.amountCents }).execute();
  return { charged: message.body.amountCents };
}

/** Starts a subscription with the test defaults (JSON, topology asserted, fast requeues). */
async function start(queue: string, options: Partial<Options> & { consumer?: string } = {}) {
  const { consumer, ...rest } = options;
  const inbox = rest.inbox ?? createInbox({ db: t.db, consumer: consumer ?? queue, retry: fast });
  const subscription = subscriptions.add(
    subscribe<TestDB, Body, unknown>({
      inbox,
      url: amqpUrl(),
      queue,
      decode: 'json',
      assertTopology: true,
      handler: ledgerHandler,
      requeueBackoff: { minDelayMs: 20, maxDelayMs: 200 },
      reconnect: { minDelayMs: 20, maxDelayMs: 500 },
      ...rest,
    }),
  );
  await subscription.ready();
  return { subscription, inbox };
}

function record<E extends keyof SubscriptionEvents>(
  subscription: { on: (event: E, listener: (payload: SubscriptionEvents[E]) => void) => unknown },
  event: E,
): SubscriptionEvents[E][] {
  const seen: SubscriptionEvents[E][] = [];
  subscription.on(event, (payload) => seen.push(payload));
  return seen;
}

/** Every delivery of the queue settled: none ready, none in flight, none unacked at the broker. */
async function settled(queue: string, subscription: { inFlight: number }): Promise<void> {
  await waitFor(`queue ${queue} to be empty and nothing in flight`, async () => {
    return (await broker.count(queue)) === 0 && subscription.inFlight === 0;
  });
  await waitFor(`every delivery of ${queue} acked`, async () => (await messagesInQueue(queue)) === 0, 30_000, 200);
}

function header(message: amqplib.GetMessage, name: string): unknown {
  return message.properties.headers?.[name];
}

describe('consuming', () => {
  it('hands the handler the decoded message, commits its writes with the key, and acks', async () => {
    const queue = queueFor('basic');
    await broker.declareQueue(queue);
    const seen: RabbitMessage<Body>[] = [];
    const { subscription, inbox } = await start(queue, {
      messageId: { header: 'x-id', from: (delivery) => JSON.parse(delivery.content.toString()).ref },
      handler: async (trx, message) => {
        seen.push(message);
        return ledgerHandler(trx, message);
      },
    });
    await broker.publish(queue, [
      { id: 'b-prop', body: { amountCents: 1 }, headers: { 'x-tenant': 'acme' } },
      { id: 'b-header', idHeader: 'x-id', body: { amountCents: 2 } },
      { body: { ref: 'b-derived', amountCents: 3 } },
    ]);
    await settled(queue, subscription);
    await subscription.close();

    expect(seen.map((m) => m.id).sort()).toEqual(['b-derived', 'b-header', 'b-prop']);
    const first = seen.find((m) => m.id === 'b-prop');
    expect(first).toMatchObject({
      body: { amountCents: 1 },
      headers: { 'x-tenant': 'acme' },
      redelivered: false,
      deliveryCount: 0,
      queue,
      fields: { exchange: '', routingKey: queue, redelivered: false },
      properties: { messageId: 'b-prop', contentType: 'application/json' },
    });
    expect(first?.content.toString()).toBe('{"amountCents":1}');
    expect(await ledgerCounts(t.db, 'b-')).toEqual({ rows: 3, distinct: 3 });
    expect(await inbox.find('b-header')).toMatchObject({ status: 'processed', result: { charged: 2 } });
    expect(await broker.count(queue)).toBe(0); // acked: closing the channel requeued nothing
  });

  it('runs the handler once for an id delivered twice, and acks both', async () => {
    const queue = queueFor('dup');
    await broker.declareQueue(queue);
    const { subscription, inbox } = await start(queue);
    const duplicates = vi.fn();
    inbox.on('duplicate', duplicates);
    await broker.publish(queue, [
      { id: 'd-1', body: { amountCents: 5 } },
      { id: 'd-1', body: { amountCents: 5 } },
      { id: 'd-2', body: { amountCents: 6 } },
    ]);
    await settled(queue, subscription);
    await subscription.close();
    expect(duplicates).toHaveBeenCalledTimes(1);
    expect(await ledgerCounts(t.db, 'd-')).toEqual({ rows: 2, distinct: 2 });
    expect(await broker.count(queue)).toBe(0);
  });

  it('keeps at most `prefetch` handlers in flight', async () => {
    const queue = queueFor('prefetch');
    await broker.declareQueue(queue);
    let running = 0;
    let most = 0;
    const { subscription } = await start(queue, {
      prefetch: 3,
      handler: async (trx, message) => {
        running++;
        most = Math.max(most, running);
        await new Promise((resolve) => setTimeout(resolve, 30));
        running--;
        return ledgerHandler(trx, message);
      },
    });
    await broker.publish(
      queue,
      Array.from({ length: 12 }, (_, i) => ({ id: `pf-${i}`, body: { amountCents: i + 1 } })),
    );
    await settled(queue, subscription);
    expect(most).toBe(3);
    expect(await ledgerCounts(t.db, 'pf-')).toEqual({ rows: 12, distinct: 12 });
  });
});

describe('batches (maxBatchSize)', () => {
  it('handles deliveries that arrived together in one transaction; a failing one is set aside, the rest commit', async () => {
    const queue = queueFor('batch');
    await broker.declareQueue(queue);
    const ids = Array.from({ length: 60 }, (_, i) => `bt-${i}`);
    await broker.publish(
      queue,
      ids.map((id, i) => ({ id, body: { amountCents: i + 1 } })),
    );
    const transactions = new Map<string, string>();
    let poisonRuns = 0;
    const { subscription } = await start(queue, {
      prefetch: 30,
      maxBatchSize: 30,
      handler: async (trx, message) => {
        const { rows } = await sql<{ txid: string }>`SELECT txid_current()::text AS txid`.execute(trx);
        transactions.set(message.id, rows[0]?.txid ?? '');
        if (message.id === 'bt-7') {
          poisonRuns++;
          throw new NonRetryableError('bad charge');
        }
        return ledgerHandler(trx, message);
      },
    });
    await waitFor('the dead letter', async () => (await broker.count(`${queue}.dlq`)) === 1);
    await settled(queue, subscription);
    expect(await ledgerCounts(t.db, 'bt-')).toEqual({ rows: 59, distinct: 59 });
    expect(new Set(transactions.values()).size).toBeLessThan(30); // many messages per commit
    expect(poisonRuns).toBeGreaterThanOrEqual(2); // the optimistic pass, then alone
    const [dead] = await broker.drain(`${queue}.dlq`);
    expect(dead?.properties.messageId).toBe('bt-7');
    expect(header(dead as amqplib.GetMessage, DEAD_LETTER_HEADERS.reason)).toBe('non_retryable');
  });

  it('runs redeliveries alone even with batches', async () => {
    const queue = queueFor('batchsuspect');
    await broker.declareQueue(queue);
    const other = await broker.connection.createChannel();
    await other.prefetch(5);
    let taken = 0;
    const handedBack = new Promise<void>((resolve) => {
      void other.consume(queue, (message) => {
        if (message === null || ++taken < 5) return;
        // A consumer dies with 5 deliveries unacked: they come back flagged redelivered.
        void other.close().then(() => resolve());
      });
    });
    await broker.publish(
      queue,
      Array.from({ length: 5 }, (_, i) => ({ id: `bs-${i}`, body: { amountCents: i + 1 } })),
    );
    await handedBack;
    const inbox = createInbox({ db: t.db, consumer: uniqueName('batchsuspect'), retry: fast });
    const processSpy = vi.spyOn(inbox, 'process');
    const batchSpy = vi.spyOn(inbox, 'processBatch');
    const { subscription } = await start(queue, { inbox, prefetch: 10, maxBatchSize: 10 });
    await settled(queue, subscription);
    expect(await ledgerCounts(t.db, 'bs-')).toEqual({ rows: 5, distinct: 5 });
    expect(batchSpy).not.toHaveBeenCalled();
    expect(processSpy.mock.calls.map((call) => call[2])).toEqual(Array(5).fill({ suspect: true }));
  });
});

describe('bulk handler (bulkHandler)', () => {
  /** One bulk insert for the batch, one result per message. */
  async function bulkLedger(trx: Kysely<TestDB>, messages: readonly RabbitMessage<Body>[]) {
    await trx
      .insertInto('ledger')
      .values(messages.map((m) => ({ charge_id: m.id, amount_cents: m.body.amountCents })))
      .execute();
    return messages.map((m) => ({ charged: m.body.amountCents }));
  }

  it('writes the new messages of a batch in one call; copies within a batch and across batches never reach it', async () => {
    const queue = queueFor('bulk');
    await broker.declareQueue(queue);
    const ids = Array.from({ length: 20 }, (_, i) => `bk-${i}`);
    const messages: TestMessage[] = ids.flatMap((id, i) => {
      const message = { id, body: { amountCents: i + 1 } };
      return i % 4 === 0 ? [message, message] : [message]; // adjacent copies arrive together
    });
    await broker.publish(queue, messages);
    const inbox = createInbox({ db: t.db, consumer: queue, retry: fast });
    const bulkSpy = vi.spyOn(inbox, 'processBulk');
    const calls: string[][] = [];
    const { subscription } = await start(queue, {
      inbox,
      prefetch: 30,
      maxBatchSize: 30,
      handler: undefined,
      bulkHandler: async (trx, batch) => {
        calls.push(batch.map((m) => m.id));
        return bulkLedger(trx, batch);
      },
    });
    await settled(queue, subscription);
    expect(await ledgerCounts(t.db, 'bk-')).toEqual({ rows: 20, distinct: 20 });
    expect(calls.flat().sort()).toEqual([...ids].sort()); // each id once, in one call or another
    expect(calls.some((call) => call.length > 1)).toBe(true);
    // A batch held both copies of an id: the handler got it once.
    const batchesWithCopies = bulkSpy.mock.calls.filter(
      ([batch]) => new Set(batch.map((m) => m.id)).size < batch.length,
    );
    expect(batchesWithCopies.length).toBeGreaterThan(0);
    expect(await inbox.find('bk-4')).toMatchObject({ status: 'processed', result: { charged: 5 } });

    // The same ids again, later: duplicates across batches, acked without the handler.
    calls.length = 0;
    await broker.publish(queue, [
      ...messages,
      { id: 'bk-20', body: { amountCents: 21 } },
      { id: 'bk-21', body: { amountCents: 22 } },
    ]);
    await settled(queue, subscription);
    expect(calls.flat().sort()).toEqual(['bk-20', 'bk-21']);
    expect(await ledgerCounts(t.db, 'bk-')).toEqual({ rows: 22, distinct: 22 });
  });

  it('dead-letters only the failing message of a bulk batch; the others commit in their order and are acked', async () => {
    const queue = queueFor('bulkfail');
    await broker.declareQueue(queue);
    const ids = Array.from({ length: 30 }, (_, i) => `bf-${i}`);
    await broker.publish(
      queue,
      ids.map((id, i) => ({ id, body: { amountCents: i + 1 } })),
    );
    const inbox = createInbox({ db: t.db, consumer: queue, retry: fast });
    const bulkSpy = vi.spyOn(inbox, 'processBulk');
    let poisonCalls = 0;
    const { subscription } = await start(queue, {
      inbox,
      prefetch: 30,
      maxBatchSize: 30,
      handler: undefined,
      bulkHandler: async (trx, batch) => {
        if (batch.some((m) => m.id === 'bf-7')) {
          poisonCalls++;
          throw new NonRetryableError('bad charge');
        }
        return bulkLedger(trx, batch);
      },
    });
    const deadLettered = record(subscription, 'deadLettered');
    await waitFor('the dead letter', async () => (await broker.count(`${queue}.dlq`)) === 1);
    await settled(queue, subscription);
    expect(await ledgerCounts(t.db, 'bf-')).toEqual({ rows: 29, distinct: 29 });
    expect(poisonCalls).toBeGreaterThanOrEqual(2); // the whole batch, then alone
    expect(deadLettered.map((d) => [d.messageId, d.reason])).toEqual([['bf-7', 'non_retryable']]);
    const [dead] = await broker.drain(`${queue}.dlq`);
    expect(dead?.properties.messageId).toBe('bf-7');
    expect(header(dead as amqplib.GetMessage, DEAD_LETTER_HEADERS.reason)).toBe('non_retryable');
    expect(await inbox.find('bf-7')).toMatchObject({ status: 'dead_lettered' });
    // Within each batch, the effects committed in the order of its messages.
    const { rows } = await sql<{ charge_id: string }>`
      SELECT charge_id FROM ledger WHERE charge_id LIKE 'bf-%' ORDER BY id`.execute(t.db);
    const position = new Map(rows.map((row, i) => [row.charge_id, i]));
    expect(bulkSpy.mock.calls.some(([batch]) => batch.some((m) => m.id === 'bf-7') && batch.length > 1)).toBe(true);
    for (const [batch] of bulkSpy.mock.calls) {
      const committed = batch.map((m) => position.get(m.id)).filter((p): p is number => p !== undefined);
      expect(committed).toEqual([...committed].sort((a, b) => a - b));
    }
  });

  it('narrows a batch whose commit Postgres refuses down to the message at fault; the rest commit', async () => {
    const queue = queueFor('bulkcommit');
    await broker.declareQueue(queue);
    const parents = uniqueName('bulk_parent').replaceAll('.', '_');
    const children = uniqueName('bulk_child').replaceAll('.', '_');
    await sql`CREATE TABLE ${sql.table(parents)} (id text PRIMARY KEY)`.execute(t.db);
    // Checked at COMMIT: the failure comes from Postgres after the handler returned.
    await sql`CREATE TABLE ${sql.table(children)} (id text PRIMARY KEY, parent text NOT NULL
      REFERENCES ${sql.table(parents)} DEFERRABLE INITIALLY DEFERRED)`.execute(t.db);
    await sql`INSERT INTO ${sql.table(parents)} VALUES ('known')`.execute(t.db);
    const ids = Array.from({ length: 12 }, (_, i) => `bc-${i}`);
    await broker.publish(
      queue,
      ids.map((id, i) => ({ id, body: { amountCents: i + 1 } })),
    );
    const { subscription, inbox } = await start(queue, {
      prefetch: 20,
      maxBatchSize: 20,
      handler: undefined,
      bulkHandler: async (trx, batch) => {
        const values = batch.map((m) => sql`(${m.id}, ${m.id === 'bc-5' ? 'missing' : 'known'})`);
        await sql`INSERT INTO ${sql.table(children)} (id, parent) VALUES ${sql.join(values)}`.execute(trx);
      },
    });
    const deadLettered = record(subscription, 'deadLettered');
    await waitFor('the dead letter', async () => (await broker.count(`${queue}.dlq`)) === 1);
    await settled(queue, subscription);
    const { rows } = await sql<{ id: string }>`SELECT id FROM ${sql.table(children)} ORDER BY id`.execute(t.db);
    expect(rows.map((row) => row.id).sort()).toEqual(ids.filter((id) => id !== 'bc-5').sort());
    expect(deadLettered.map((d) => [d.messageId, d.reason])).toEqual([['bc-5', 'retries_exhausted']]);
    const [dead] = await broker.drain(`${queue}.dlq`);
    expect(String(header(dead as amqplib.GetMessage, DEAD_LETTER_HEADERS.errorMessage))).toMatch(/foreign key/);
    expect(await inbox.find('bc-5')).toMatchObject({ status: 'dead_lettered' });
    expect(await inbox.find('bc-4')).toMatchObject({ status: 'processed' });
  });

  it('hands the whole batch back when Postgres is unreachable: no ack, no dead letter', async () => {
    const queue = queueFor('bulknodb');
    await broker.declareQueue(queue);
    const pool = createPgPool({
      connectionString: `postgres://postgres@127.0.0.1:${await freePort()}/postgres`,
      connectionTimeoutMillis: 500,
    });
    const db = new Kysely<TestDB>({ dialect: new PostgresDialect({ pool }) });
    let ran = false;
    await broker.publish(
      queue,
      Array.from({ length: 5 }, (_, i) => ({ id: `bn-${i}`, body: { amountCents: i + 1 } })),
    );
    const { subscription } = await start(queue, {
      inbox: createInbox({ db, consumer: 'bulknodb', retry: fast }),
      prefetch: 10,
      maxBatchSize: 10,
      requeueBackoff: { minDelayMs: 50, maxDelayMs: 100 },
      handler: undefined,
      bulkHandler: async () => {
        ran = true;
      },
    });
    const requeued = record(subscription, 'requeued');
    const deadLettered = record(subscription, 'deadLettered');
    await waitFor('every message requeued', () => new Set(requeued.map((r) => r.messageId)).size === 5, 20_000);
    await subscription.close();
    expect(requeued.every((r) => r.reason === 'database_unavailable')).toBe(true);
    expect(deadLettered).toEqual([]);
    expect(ran).toBe(false);
    expect(await broker.count(queue)).toBe(5);
    expect(await broker.count(`${queue}.dlq`)).toBe(0);
    await db.destroy();
  });
});

describe("message ids derived from the content (messageId.fallback: 'payload-hash')", () => {
  it('runs a message without id once however often the same bytes come; other bytes run anew; an id sent wins', async () => {
    const queue = queueFor('payloadhash');
    await broker.declareQueue(queue);
    const seen: string[] = [];
    const { subscription, inbox } = await start(queue, {
      prefetch: 1,
      messageId: { fallback: 'payload-hash' },
      handler: async (trx, message) => {
        seen.push(message.id);
        await trx
          .insertInto('ledger')
          .values({ charge_id: `ph:${message.id}`, amount_cents: message.body.amountCents })
          .execute();
      },
    });
    const duplicates = vi.fn();
    inbox.on('duplicate', duplicates);
    const same = { n: 1, amountCents: 7 };
    await broker.publish(queue, [
      { body: same },
      { body: same }, // a producer's retry: the same bytes, no id
      { body: { n: 2, amountCents: 7 } },
      { id: 'ph-explicit', body: same }, // properties.messageId wins over the hash
      { id: 'ph-header', idHeader: 'message-id', body: same }, // and so does the header
    ]);
    await settled(queue, subscription);
    const hashOf = (body: unknown) => payloadHashId(Buffer.from(JSON.stringify(body)));
    expect(seen).toEqual([hashOf(same), hashOf({ n: 2, amountCents: 7 }), 'ph-explicit', 'ph-header']);
    expect(hashOf(same)).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(duplicates).toHaveBeenCalledTimes(1);
    expect(await ledgerCounts(t.db, 'ph:')).toEqual({ rows: 4, distinct: 4 });

    // Later, the same bytes again: still a duplicate (while the key is kept).
    await broker.publish(queue, [{ body: same }]);
    await settled(queue, subscription);
    expect(seen).toHaveLength(4);
    expect(duplicates).toHaveBeenCalledTimes(2);
  });
});

describe('bulk handler and redeliveries', () => {
  it('runs redeliveries alone, one at a time, as one-message arrays', async () => {
    const queue = queueFor('bulksuspect');
    await broker.declareQueue(queue);
    const other = await broker.connection.createChannel();
    await other.prefetch(5);
    let taken = 0;
    const handedBack = new Promise<void>((resolve) => {
      void other.consume(queue, (message) => {
        if (message === null || ++taken < 5) return;
        // A consumer dies with 5 deliveries unacked: they come back flagged redelivered.
        void other.close().then(() => resolve());
      });
    });
    await broker.publish(
      queue,
      Array.from({ length: 5 }, (_, i) => ({ id: `bsu-${i}`, body: { amountCents: i + 1 } })),
    );
    await handedBack;
    const inbox = createInbox({ db: t.db, consumer: uniqueName('bulksuspect'), retry: fast });
    const processSpy = vi.spyOn(inbox, 'process');
    const bulkSpy = vi.spyOn(inbox, 'processBulk');
    const sizes: number[] = [];
    let running = 0;
    let most = 0;
    const { subscription } = await start(queue, {
      inbox,
      prefetch: 10,
      maxBatchSize: 10,
      handler: undefined,
      bulkHandler: async (trx, batch) => {
        running++;
        most = Math.max(most, running);
        sizes.push(batch.length);
        await new Promise((resolve) => setTimeout(resolve, 20));
        await trx
          .insertInto('ledger')
          .values(batch.map((m) => ({ charge_id: m.id, amount_cents: m.body.amountCents })))
          .execute();
        running--;
      },
    });
    await settled(queue, subscription);
    expect(await ledgerCounts(t.db, 'bsu-')).toEqual({ rows: 5, distinct: 5 });
    expect(bulkSpy).not.toHaveBeenCalled();
    expect(processSpy.mock.calls.map((call) => call[2])).toEqual(Array(5).fill({ suspect: true }));
    expect(sizes).toEqual([1, 1, 1, 1, 1]);
    expect(most).toBe(1);
  });
});

describe('request/reply', () => {
  it('replies with the result, and answers a duplicate request with the stored result', async () => {
    const queue = queueFor('rpc');
    await broker.declareQueue(queue);
    const replies = uniqueName('replies');
    await broker.declareQueue(replies);
    let runs = 0;
    const { subscription } = await start(queue, {
      handler: async (trx, message) => {
        runs++;
        await ledgerHandler(trx, message);
        // Keys in an order jsonb does not keep (it sorts by length): the stored copy comes back reordered.
        return { run: runs, chargeId: message.id, charged: message.body.amountCents };
      },
    });
    const request: TestMessage = { id: 'rpc-1', body: { amountCents: 42 }, replyTo: replies, correlationId: 'corr-1' };
    await broker.publish(queue, [request]);
    await waitFor('the first reply', async () => (await broker.count(replies)) === 1);
    await broker.publish(queue, [{ ...request, correlationId: 'corr-2' }]);
    await waitFor('the second reply', async () => (await broker.count(replies)) === 2);
    await settled(queue, subscription);

    const [first, second] = await broker.drain(replies);
    if (first === undefined || second === undefined) throw new Error('expected two replies');
    expect(JSON.parse(first.content.toString())).toEqual({ chargeId: 'rpc-1', charged: 42, run: 1 });
    // The stored result comes back from jsonb with its keys reordered; replies are canonical
    // JSON, so the retried request gets the very bytes of the first reply.
    expect(second.content.toString()).toBe(first.content.toString());
    expect(first.properties.correlationId).toBe('corr-1');
    expect(second.properties.correlationId).toBe('corr-2');
    expect(header(first, REPLY_HEADERS.duplicate)).toBe(false);
    expect(header(second, REPLY_HEADERS.duplicate)).toBe(true);
    expect(runs).toBe(1);
    expect(await ledgerCounts(t.db, 'rpc-')).toEqual({ rows: 1, distinct: 1 });
  });
});

describe('dead letters', () => {
  it('dead-letters a poison message with the failure headers after the retries; the rest flow on', async () => {
    const queue = queueFor('poison');
    await broker.declareQueue(queue);
    let poisonRuns = 0;
    const { subscription, inbox } = await start(queue, {
      handler: async (trx, message) => {
        await ledgerHandler(trx, message);
        if (message.id === 'p-poison') {
          poisonRuns++;
          throw new RangeError(`amount out of range (run ${poisonRuns})`);
        }
      },
    });
    const deadLettered = record(subscription, 'deadLettered');
    const before = Date.now();
    await broker.publish(queue, [
      { id: 'p-1', body: { amountCents: 1 } },
      { id: 'p-poison', body: { amountCents: 2 }, headers: { 'x-trace': 't-9' } },
      { id: 'p-2', body: { amountCents: 3 } },
    ]);
    await waitFor('the dead letter', async () => (await broker.count(`${queue}.dlq`)) === 1);
    await settled(queue, subscription);

    expect(poisonRuns).toBe(3); // the first attempt and retries: 2
    expect(await ledgerCounts(t.db, 'p-')).toEqual({ rows: 2, distinct: 2 }); // the poison's row rolled back
    const [dead] = await broker.drain(`${queue}.dlq`);
    if (dead === undefined) throw new Error('expected a dead letter');
    expect(dead.content.toString()).toBe('{"amountCents":2}');
    expect(dead.properties.messageId).toBe('p-poison');
    expect(dead.properties.headers).toMatchObject({
      'x-trace': 't-9',
      [DEAD_LETTER_HEADERS.reason]: 'retries_exhausted',
      [DEAD_LETTER_HEADERS.errorName]: 'RangeError',
      [DEAD_LETTER_HEADERS.errorMessage]: 'amount out of range (run 3)',
      [DEAD_LETTER_HEADERS.attempts]: 3,
      [DEAD_LETTER_HEADERS.messageId]: 'p-poison',
      [DEAD_LETTER_HEADERS.originalExchange]: '',
      [DEAD_LETTER_HEADERS.originalRoutingKey]: queue,
      [DEAD_LETTER_HEADERS.originalQueue]: queue,
      [DEAD_LETTER_HEADERS.consumer]: queue,
    });
    const stack = String(header(dead, DEAD_LETTER_HEADERS.errorStack));
    expect(stack).toContain('RangeError: amount out of range');
    expect(Buffer.byteLength(stack)).toBeLessThanOrEqual(4096);
    const firstSeen = Date.parse(String(header(dead, DEAD_LETTER_HEADERS.firstSeenAt)));
    const failed = Date.parse(String(header(dead, DEAD_LETTER_HEADERS.failedAt)));
    expect(firstSeen).toBeGreaterThanOrEqual(before - 1000);
    expect(failed).toBeGreaterThanOrEqual(firstSeen);
    expect(deadLettered).toEqual([
      { messageId: 'p-poison', reason: 'retries_exhausted', exchange: '', routingKey: `${queue}.dlq` },
    ]);

    // Recorded: the same message again is acked as a duplicate, not dead-lettered twice.
    expect(await inbox.find('p-poison')).toMatchObject({ status: 'dead_lettered' });
    await broker.publish(queue, [{ id: 'p-poison', body: { amountCents: 2 } }]);
    await settled(queue, subscription);
    expect(poisonRuns).toBe(3);
    expect(await broker.count(`${queue}.dlq`)).toBe(0);
  });

  it('dead-letters a NonRetryableError at once, and keeps the bounded stack of a huge error', async () => {
    const queue = queueFor('nonretry');
    await broker.declareQueue(queue);
    let runs = 0;
    const { subscription } = await start(queue, {
      handler: async () => {
        runs++;
        const error = new NonRetryableError(`currency ${'é'.repeat(3000)} not supported`);
        error.stack = `NonRetryableError: huge\n${'    at frame (file.ts:1:1)\n'.repeat(2000)}`;
        throw error;
      },
    });
    await broker.publish(queue, [{ id: 'nr-1', body: { amountCents: 1 } }]);
    await waitFor('the dead letter', async () => (await broker.count(`${queue}.dlq`)) === 1);
    await settled(queue, subscription);
    const [dead] = await broker.drain(`${queue}.dlq`);
    if (dead === undefined) throw new Error('expected a dead letter');
    expect(runs).toBe(1);
    expect(header(dead, DEAD_LETTER_HEADERS.reason)).toBe('non_retryable');
    expect(header(dead, DEAD_LETTER_HEADERS.attempts)).toBe(1);
    expect(header(dead, DEAD_LETTER_HEADERS.errorCode)).toBe('INBOX_NON_RETRYABLE');
    expect(Buffer.byteLength(String(header(dead, DEAD_LETTER_HEADERS.errorStack)))).toBeLessThanOrEqual(4096);
    expect(Buffer.byteLength(String(header(dead, DEAD_LETTER_HEADERS.errorMessage)))).toBeLessThanOrEqual(1024);
    expect(String(header(dead, DEAD_LETTER_HEADERS.errorMessage))).toMatch(/^currency é+…\[truncated\]$/);
  });

  it('with handlerTimeoutMs, aborts a handler that hangs, dead-letters it as INBOX_HANDLER_TIMEOUT, and the rest flow on', async () => {
    const queue = queueFor('hung');
    await broker.declareQueue(queue);
    const aborted: string[] = [];
    const { subscription, inbox } = await start(queue, {
      prefetch: 4,
      inbox: createInbox({
        db: t.db,
        consumer: queue,
        handlerTimeoutMs: 300,
        retry: { retries: 1, minTimeout: 1, maxTimeout: 1 },
      }),
      handler: async (trx, message, { signal }) => {
        if (message.id === 'hung-1') {
          // An outside call that never answers on its own, but honours the signal.
          await new Promise((_resolve, reject) => {
            signal.addEventListener('abort', () => {
              aborted.push(message.id);
              reject(signal.reason);
            });
          });
        }
        return ledgerHandler(trx, message);
      },
    });
    await broker.publish(queue, [
      { id: 'hung-0', body: { amountCents: 1 } },
      { id: 'hung-1', body: { amountCents: 1 } },
      { id: 'hung-2', body: { amountCents: 1 } },
    ]);
    await waitFor('the dead letter', async () => (await broker.count(`${queue}.dlq`)) === 1);
    await settled(queue, subscription);
    const [dead] = await broker.drain(`${queue}.dlq`);
    if (dead === undefined) throw new Error('expected a dead letter');
    expect(dead.properties.messageId).toBe('hung-1');
    expect(header(dead, DEAD_LETTER_HEADERS.reason)).toBe('retries_exhausted');
    expect(header(dead, DEAD_LETTER_HEADERS.errorCode)).toBe('INBOX_HANDLER_TIMEOUT');
    expect(header(dead, DEAD_LETTER_HEADERS.attempts)).toBe(2);
    expect(aborted).toEqual(['hung-1', 'hung-1']);
    expect(await ledgerCounts(t.db, 'hung-')).toEqual({ rows: 2, distinct: 2 });
    expect(await inbox.find('hung-1')).toMatchObject({ status: 'dead_lettered' });
  });

  it('dead-letters a message without an id and one that is not JSON, with a clear reason, and keeps consuming', async () => {
    const queue = queueFor('badinput');
    await broker.declareQueue(queue);
    const { subscription, inbox } = await start(queue);
    await broker.publish(queue, [
      { body: { amountCents: 1 } },
      { id: 'bad-json', body: '{"amountCents": 1,,}' },
      { id: 'good-after', body: { amountCents: 7 } },
    ]);
    await waitFor('two dead letters', async () => (await broker.count(`${queue}.dlq`)) === 2);
    await settled(queue, subscription);
    const dead = await broker.drain(`${queue}.dlq`);
    const noId = dead.find((m) => m.properties.messageId === undefined);
    const notJson = dead.find((m) => m.properties.messageId === 'bad-json');
    expect(noId?.properties.headers).toMatchObject({
      [DEAD_LETTER_HEADERS.reason]: 'invalid_message',
      [DEAD_LETTER_HEADERS.errorName]: 'InvalidMessageError',
      [DEAD_LETTER_HEADERS.attempts]: 0,
    });
    expect(String(noId && header(noId, DEAD_LETTER_HEADERS.errorMessage))).toContain(
      'Message has no id: no properties.messageId, no "message-id" header',
    );
    expect(notJson?.properties.headers).toMatchObject({
      [DEAD_LETTER_HEADERS.reason]: 'invalid_message',
      [DEAD_LETTER_HEADERS.messageId]: 'bad-json',
    });
    expect(String(notJson && header(notJson, DEAD_LETTER_HEADERS.errorMessage))).toMatch(
      /^Message "bad-json" is not valid JSON: /,
    );
    expect(notJson?.content.toString()).toBe('{"amountCents": 1,,}');
    expect(await inbox.find('bad-json')).toMatchObject({ status: 'dead_lettered' });
    expect(await ledgerCounts(t.db, 'good-after')).toEqual({ rows: 1, distinct: 1 });
    expect(subscription.state).toBe('connected');
  });

  it("with deadLetter: 'nack', rejects to the queue's own dead-letter exchange", async () => {
    const queue = queueFor('nackdlx');
    const exchange = uniqueName('dlx');
    const dlq = `${queue}.dlq`;
    await broker.channel.assertExchange(exchange, 'fanout', { durable: false, autoDelete: true });
    await broker.declareQueue(dlq);
    await broker.channel.bindQueue(dlq, exchange, '');
    await broker.declareQueue(queue, { 'x-dead-letter-exchange': exchange });
    const { subscription, inbox } = await start(queue, {
      deadLetter: 'nack',
      assertTopology: { queueArguments: { 'x-dead-letter-exchange': exchange } },
      handler: async () => {
        throw new NonRetryableError('refused');
      },
    });
    const deadLettered = record(subscription, 'deadLettered');
    await broker.publish(queue, [{ id: 'nack-1', body: { amountCents: 1 } }]);
    await waitFor('the dead letter', async () => (await broker.count(dlq)) === 1);
    await settled(queue, subscription);
    const [dead] = await broker.drain(dlq);
    const death = header(dead as amqplib.GetMessage, 'x-death') as Array<{ reason: string; queue: string }>;
    expect(death[0]).toMatchObject({ reason: 'rejected', queue });
    expect(deadLettered).toMatchObject([{ messageId: 'nack-1', reason: 'non_retryable' }]);
    await waitFor('the record', async () => (await inbox.find('nack-1'))?.status === 'dead_lettered');
    await broker.channel.deleteExchange(exchange).catch(() => {});
  });

  it('publishes to a dead-letter exchange with a routing key, declared and bound by assertTopology', async () => {
    const queue = queueFor('dlxpub');
    const exchange = uniqueName('dlx');
    const { subscription } = await start(queue, {
      deadLetter: { exchange, routingKey: 'failed.charges', queue: `${queue}.dlq` },
      handler: async () => {
        throw new NonRetryableError('no');
      },
    });
    await broker.publish(queue, [{ id: 'dx-1', body: { amountCents: 1 } }]);
    await waitFor('the dead letter', async () => (await broker.count(`${queue}.dlq`)) === 1);
    await settled(queue, subscription);
    const [dead] = await broker.drain(`${queue}.dlq`);
    expect(dead?.fields).toMatchObject({ exchange, routingKey: 'failed.charges' });
    await broker.channel.deleteExchange(exchange).catch(() => {});
  });

  it('does not ack when the dead letter cannot be delivered (no such queue); it lands once the queue exists', async () => {
    const queue = queueFor('unroutable');
    await broker.declareQueue(queue);
    const { subscription } = await start(queue, {
      assertTopology: false,
      handler: async () => {
        throw new NonRetryableError('no');
      },
    });
    const requeued = record(subscription, 'requeued');
    await broker.publish(queue, [{ id: 'un-1', body: { amountCents: 1 } }]);
    await waitFor('a failed dead-letter publish', () => requeued.length >= 2);
    expect(requeued[0]).toMatchObject({ messageId: 'un-1', reason: 'publish_failed' });
    expect(requeued[0]?.error?.message).toContain('unroutable');
    await broker.declareQueue(`${queue}.dlq`);
    await waitFor('the dead letter', async () => (await broker.count(`${queue}.dlq`)) === 1);
    await settled(queue, subscription);
  });
  it('acks only after the broker confirmed the dead letter: a confirm that never comes times out and requeues', async () => {
    const queue = queueFor('noconfirm');
    await broker.declareQueue(queue);
    await broker.declareQueue(`${queue}.dlq`);
    const proxy = await startTcpProxy(amqpUrl());
    try {
      let runs = 0;
      const { subscription, inbox } = await start(queue, {
        url: proxy.url,
        // Long enough for a fresh confirm channel and its confirm on a loaded machine once
        // the broker answers again; the frozen broker still times the first publish out.
        publishTimeoutMs: 2_000,
        handler: async () => {
          runs++;
          if (runs === 1) proxy.freeze(); // the broker goes silent before the dead-letter publish
          throw new NonRetryableError('refused');
        },
      });
      const requeued = record(subscription, 'requeued');
      await broker.publish(queue, [{ id: 'nc-1', body: { amountCents: 1 } }]);
      await waitFor('the publish to time out', () => requeued.length >= 1, 10_000);
      expect(requeued[0]).toMatchObject({ messageId: 'nc-1', reason: 'publish_failed' });
      expect(requeued[0]?.error).toBeInstanceOf(PublishError);
      expect(requeued[0]?.error).toMatchObject({ failure: 'timeout', code: 'INBOX_RABBITMQ_PUBLISH_FAILED' });
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(await inbox.find('nc-1')).toBeUndefined(); // not recorded (nor acked) without the confirm
      proxy.thaw();
      await waitFor('the dead letter recorded', async () => (await inbox.find('nc-1'))?.status === 'dead_lettered');
      await settled(queue, subscription);
      // Every run but the last ended in a requeue for want of a confirm; none was acked.
      expect(requeued.every((event) => event.reason === 'publish_failed')).toBe(true);
      expect(runs).toBe(requeued.length + 1);
      expect(await broker.count(`${queue}.dlq`)).toBeGreaterThanOrEqual(1);
    } finally {
      await subscriptions.closeAll();
      await proxy.close();
    }
  });
});

describe('broker-delayed retries', () => {
  it('sends a failing message through the retry queue, then processes it; one that keeps failing is dead-lettered', async () => {
    const queue = queueFor('delayed');
    const runs = new Map<string, number>();
    const { subscription } = await start(queue, {
      inbox: createInbox({ db: t.db, consumer: uniqueName('delayed'), retry: { retries: 0 } }),
      delayedRetry: { delaysMs: [100, 200] },
      handler: async (trx, message) => {
        const run = (runs.get(message.id) ?? 0) + 1;
        runs.set(message.id, run);
        if (message.id === 'dr-flaky' && run <= 2) throw new Error(`flaky ${run}`);
        if (message.id === 'dr-broken') throw new Error(`broken ${run}`);
        return ledgerHandler(trx, message);
      },
    });
    const scheduled = record(subscription, 'retryScheduled');
    const started = Date.now();
    await broker.publish(queue, [
      { id: 'dr-flaky', body: { amountCents: 1 } },
      { id: 'dr-broken', body: { amountCents: 2 } },
    ]);
    await waitFor('the dead letter', async () => (await broker.count(`${queue}.dlq`)) === 1, 20_000);
    await waitFor('the flaky one', async () => (await ledgerCounts(t.db, 'dr-flaky')).rows === 1, 20_000);
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
    expect(runs.get('dr-flaky')).toBe(3);
    expect(runs.get('dr-broken')).toBe(3);
    expect(scheduled.filter((s) => s.messageId === 'dr-flaky').map((s) => [s.retry, s.delayMs])).toEqual([
      [1, 100],
      [2, 200],
    ]);
    const [dead] = await broker.drain(`${queue}.dlq`);
    expect(dead?.properties.headers).toMatchObject({
      [DEAD_LETTER_HEADERS.reason]: 'retries_exhausted',
      [DEAD_LETTER_HEADERS.attempts]: 3,
      [DEAD_LETTER_HEADERS.retries]: 2,
      [DEAD_LETTER_HEADERS.errorMessage]: 'broken 3',
      [DEAD_LETTER_HEADERS.originalExchange]: '',
      [DEAD_LETTER_HEADERS.originalRoutingKey]: queue,
    });
    expect(dead?.properties.expiration).toBeUndefined();
    await settled(queue, subscription);
  });
});

describe('Postgres unreachable', () => {
  it('requeues after a backoff, never acks and never dead-letters', async () => {
    const queue = queueFor('nodb');
    await broker.declareQueue(queue);
    const pool = createPgPool({
      connectionString: `postgres://postgres@127.0.0.1:${await freePort()}/postgres`,
      connectionTimeoutMillis: 500,
    });
    const db = new Kysely<TestDB>({ dialect: new PostgresDialect({ pool }) });
    let ran = false;
    const { subscription } = await start(queue, {
      inbox: createInbox({ db, consumer: 'nodb', retry: fast }),
      requeueBackoff: { minDelayMs: 50, maxDelayMs: 100 },
      handler: async () => {
        ran = true;
      },
    });
    const requeued = record(subscription, 'requeued');
    const deadLettered = record(subscription, 'deadLettered');
    await broker.publish(queue, [{ id: 'nd-1', body: { amountCents: 1 } }]);
    await waitFor('three requeues', () => requeued.length >= 3, 20_000);
    await subscription.close();
    expect(requeued[0]).toMatchObject({ messageId: 'nd-1', reason: 'database_unavailable' });
    expect(requeued.every((r) => r.delayMs >= 25)).toBe(true); // backed off, no hot loop
    expect(deadLettered).toEqual([]);
    expect(ran).toBe(false);
    expect(await broker.count(queue)).toBe(1);
    expect(await broker.count(`${queue}.dlq`)).toBe(0);
    await db.destroy();
  });
});

describe('redeliveries', () => {
  it("treats a quorum queue's x-delivery-count as a possible crash repeat (counted, run alone)", async () => {
    const queue = queueFor('quorum');
    await broker.declareQueue(queue, { 'x-queue-type': 'quorum' });
    // Another consumer takes the message and hands it back, as a crashed one would.
    const other = await broker.connection.createChannel();
    await other.prefetch(1);
    const handedBack = new Promise<void>((resolve) => {
      void other.consume(queue, (message) => {
        if (message === null) return;
        void other.cancel(message.fields.consumerTag).then(() => {
          other.nack(message, false, true);
          resolve();
        });
      });
    });
    await broker.publish(queue, [{ id: 'q-1', body: { amountCents: 1 } }]);
    await handedBack;
    await other.close();
    const inbox = createInbox({ db: t.db, consumer: uniqueName('quorum'), retry: fast });
    const processSpy = vi.spyOn(inbox, 'process');
    const seen: RabbitMessage<Body>[] = [];
    const attemptsSeen: number[] = [];
    const { subscription } = await start(queue, {
      inbox,
      assertTopology: { queueArguments: { 'x-queue-type': 'quorum' } },
      handler: async (trx, message) => {
        seen.push(message);
        const { rows } = await sql<{ n: string }>`
          SELECT count(*) AS n FROM processed_messages_attempts WHERE consumer = ${inbox.consumer}`.execute(trx);
        attemptsSeen.push(Number(rows[0]?.n));
        return ledgerHandler(trx, message);
      },
    });
    await settled(queue, subscription);
    expect(seen[0]?.deliveryCount).toBe(1);
    expect(processSpy.mock.calls[0]?.[2]).toEqual({ suspect: true });
    expect(attemptsSeen).toEqual([1]); // its attempt was committed before the handler ran
  });

  it('treats a message it requeued itself as an ordinary delivery, not a crash suspect', async () => {
    const queue = queueFor('own');
    await broker.declareQueue(queue);
    const inbox = createInbox({
      db: t.db,
      consumer: uniqueName('own'),
      retry: fast,
      crashLoopLimit: 1,
      lockTimeoutMs: 100,
    });
    const processSpy = vi.spyOn(inbox, 'process');
    // Another delivery of the same id holds its key: this consumer hands the message back
    // (lock_timeout) until that transaction ends.
    const holder = await t.pool.connect();
    await holder.query('BEGIN');
    await holder.query('INSERT INTO processed_messages (consumer, message_id) VALUES ($1, $2)', [
      inbox.consumer,
      'own-1',
    ]);
    const { subscription } = await start(queue, { inbox, handler: ledgerHandler });
    const requeued = record(subscription, 'requeued');
    await broker.publish(queue, [{ id: 'own-1', body: { amountCents: 1 } }]);
    await waitFor('two requeues', () => requeued.length >= 2, 20_000);
    await holder.query('ROLLBACK');
    holder.release();
    await waitFor('the message', async () => (await ledgerCounts(t.db, 'own-1')).rows === 1, 20_000);
    expect(new Set(requeued.map((r) => r.reason))).toEqual(new Set(['lock_timeout']));
    // Redelivered with `redelivered` set, never as a suspect: with crashLoopLimit 1 a
    // suspect would have been dead-lettered on its second redelivery.
    expect(processSpy.mock.calls.length).toBe(requeued.length + 1);
    expect(processSpy.mock.calls.every((call) => (call[2] as { suspect?: boolean }).suspect === false)).toBe(true);
    expect(await inboxKeys(t.db, inbox.consumer)).toEqual({ processed: 1, deadLettered: 0 });
  });
});

describe('lifecycle', () => {
  it('resubscribes when the broker cancels the consumer (queue deleted)', async () => {
    const queue = queueFor('cancelled');
    const { subscription } = await start(queue);
    const cancelled = record(subscription, 'consumerCancelled');
    const connected = record(subscription, 'connected');
    await broker.channel.deleteQueue(queue);
    await waitFor('the cancel', () => cancelled.length === 1);
    await waitFor('consuming again', () => connected.length >= 1 && subscription.state === 'connected', 20_000);
    await broker.publish(queue, [{ id: 'cx-1', body: { amountCents: 1 } }]);
    await waitFor('the message', async () => (await ledgerCounts(t.db, 'cx-1')).rows === 1);
  });

  it('close() cancels the consumer, drains in-flight deliveries, acks them, and returns the same promise', async () => {
    const queue = queueFor('close');
    await broker.declareQueue(queue);
    const held = gate();
    const started = gate();
    const { subscription } = await start(queue, {
      prefetch: 1,
      handler: async (trx, message) => {
        started.open();
        await held.promise;
        return ledgerHandler(trx, message);
      },
    });
    const closed = record(subscription, 'closed');
    await broker.publish(queue, [
      { id: 'cl-1', body: { amountCents: 1 } },
      { id: 'cl-2', body: { amountCents: 2 } },
    ]);
    await started.promise;
    const closing = subscription.close();
    expect(subscription.close()).toBe(closing);
    expect(subscription.state).toBe('closing');
    setTimeout(held.open, 100);
    await closing;
    expect(subscription.state).toBe('closed');
    expect(closed).toHaveLength(1);
    expect(await ledgerCounts(t.db, 'cl-1')).toEqual({ rows: 1, distinct: 1 }); // drained and committed
    expect(await broker.count(queue)).toBe(1); // cl-1 acked; cl-2 never taken
    await expect(subscription.ready()).resolves.toBeUndefined();
  });

  it('close() while the broker is unreachable stops the reconnect loop', async () => {
    const port = await freePort();
    const subscription = subscribe({
      inbox: createInbox({ db: t.db, consumer: 'nobroker' }),
      url: `amqp://guest:guest@127.0.0.1:${port}`,
      queue: uniqueName('nobroker'),
      handler: async () => {},
      reconnect: { minDelayMs: 10, maxDelayMs: 50 },
    });
    const reconnecting = record(subscription, 'reconnecting');
    await waitFor('a few attempts', () => reconnecting.length >= 3);
    expect(subscription.state).toBe('reconnecting');
    await subscription.close();
    expect(subscription.state).toBe('closed');
    await expect(subscription.ready()).rejects.toThrow(/was closed/);
    const attempts = reconnecting.length;
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(reconnecting.length).toBe(attempts);
  });
});
