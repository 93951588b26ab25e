// The outbox relayed to RabbitMQ (docs/outbox.md): only committed messages are published,
// once, with their id, headers and persistence; a message whose exchange is missing is set
// aside without holding up other keys and comes back on request; a relay killed between
// the broker's confirm and its commit re-sends, and the inboxkit consumer downstream applies
// the message once; a cut connection pauses the relay, which comes back on its own.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createInbox, createOutbox, type Outbox, outboxSchemaSql } from '@inboxkit/core';
import { createRabbitRelay, subscribe } from '@inboxkit/rabbitmq';
import amqplib from 'amqplib';
import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { amqpUrl, closeConnectionsNamed, uniqueName, waitFor } from './support/broker.ts';
import { setUpRabbitFile } from './support/file-setup.ts';
import { ledgerCounts, ledgerHandler } from './support/ledger.ts';

const setup = setUpRabbitFile('outbox');
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

async function freshOutbox(label: string): Promise<{ outbox: Outbox; table: string }> {
  const table = `${label}_${Math.random().toString(36).slice(2, 8)}`;
  await sql.raw(outboxSchemaSql({ table })).execute(setup.t.db);
  return { outbox: createOutbox({ db: setup.t.db, table }), table };
}

async function pending(table: string): Promise<{ message_id: string; status: string }[]> {
  const { rows } = await sql<{ message_id: string; status: string }>`
    SELECT message_id, status FROM ${sql.table(table)} ORDER BY sequence`.execute(setup.t.db);
  return rows;
}

describe('the RabbitMQ relay', () => {
  it('refuses bad options naming them', async () => {
    const { outbox } = await freshOutbox('rb_options');
    expect(() => createRabbitRelay({ outbox } as never)).toThrow(/`url`/);
    expect(() => createRabbitRelay({ outbox, url: 'localhost' })).toThrow(/`url`/);
    expect(() => createRabbitRelay({ outbox, url: amqpUrl(), connect: async () => ({}) as never })).toThrow(
      /either `url` or `connect`/,
    );
    expect(() => createRabbitRelay({ outbox, url: amqpUrl(), publishTimeoutMs: -1 })).toThrow(/`publishTimeoutMs`/);
    expect(() => createRabbitRelay({ outbox, url: amqpUrl(), prefetch: 1 } as never)).toThrow(
      /Unknown option `prefetch`/,
    );
  });

  it('publishes what committed exactly once, persistent, with its id and headers; nothing of a rollback', async () => {
    const { t, broker } = setup;
    const queue = uniqueName('outbox-commit');
    await broker.declareQueue(queue);
    const { outbox, table } = await freshOutbox('rb_commit');
    const relay = createRabbitRelay({ outbox, url: amqpUrl(), listen: { connectionString: t.url } });
    cleanups.push(() => relay.close());

    await t.db
      .transaction()
      .execute(async (trx) => {
        await outbox.enqueue(trx, { exchange: '', routingKey: queue, payload: { n: 0 }, messageId: 'rolled-back' });
        throw new Error('the handler failed after enqueueing');
      })
      .catch(() => {});
    await t.db.transaction().execute(async (trx) => {
      await outbox.enqueue(trx, {
        exchange: '',
        routingKey: queue,
        key: 'order-1',
        payload: { n: 1 },
        messageId: 'order-1-accepted',
        headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
      });
    });
    await waitFor('the outbox emptied', async () => (await pending(table)).length === 0, 20_000);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const delivered = await broker.drain(queue);
    expect(delivered).toHaveLength(1);
    const [message] = delivered;
    expect(message?.properties.messageId).toBe('order-1-accepted');
    expect(message?.properties.deliveryMode).toBe(2);
    expect(message?.properties.headers?.traceparent).toBe('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
    expect(JSON.parse(message?.content.toString() ?? '')).toEqual({ n: 1 });
  });

  it('sets a message for a missing exchange aside, lets other keys flow, and publishes it once retried', async () => {
    const { broker } = setup;
    const queue = uniqueName('outbox-poison');
    await broker.declareQueue(queue);
    const exchange = uniqueName('outbox-missing');
    const { outbox, table } = await freshOutbox('rb_poison');
    const relay = createRabbitRelay({
      outbox,
      url: amqpUrl(),
      pollIntervalMs: 50,
      retry: { maxAttempts: 2, minDelayMs: 50, maxDelayMs: 100 },
    });
    cleanups.push(() => relay.close());
    const failed: string[] = [];
    relay.on('failed', (e) => failed.push(e.messageId));

    await outbox.enqueue(setup.t.db, [
      { exchange, routingKey: 'r', key: 'k1', payload: 'poison', messageId: 'poison' },
      { exchange: '', routingKey: queue, key: 'k1', payload: 'behind', messageId: 'behind-poison' },
      { exchange: '', routingKey: queue, key: 'k2', payload: 'other', messageId: 'other-key' },
      { exchange: '', routingKey: queue, payload: 'keyless', messageId: 'keyless' },
    ]);
    await waitFor('the poison set aside', () => failed.length === 1, 20_000);
    await waitFor('the other keys published', async () => (await broker.count(queue)) === 2, 20_000);
    const first = await broker.drain(queue);
    expect(first.map((m) => m.properties.messageId).sort()).toEqual(['keyless', 'other-key']);
    const [poison] = await outbox.failed();
    expect(poison).toMatchObject({ messageId: 'poison', destination: exchange, attempts: 2 });
    expect(poison?.lastError).toMatch(/channel_closed|NOT_FOUND|404/);
    await waitFor(
      'only the poison and the message behind it left',
      async () => (await pending(table)).length === 2,
      20_000,
    );
    expect((await pending(table)).map((r) => r.message_id)).toEqual(['poison', 'behind-poison']);

    await broker.channel.assertExchange(exchange, 'direct', { durable: false, autoDelete: true });
    await broker.channel.bindQueue(queue, exchange, 'r');
    expect(await outbox.retryFailed()).toBe(1);
    await waitFor(
      'the poison and the message behind it published',
      async () => (await broker.count(queue)) === 2,
      20_000,
    );
    const second = await broker.drain(queue);
    expect(second.map((m) => m.properties.messageId)).toEqual(['poison', 'behind-poison']);
    await waitFor('the outbox emptied', async () => (await pending(table)).length === 0, 20_000);
  });

  it('re-sends after a SIGKILL between the confirm and the commit; the inboxkit consumer applies it once', async () => {
    const { t, broker } = setup;
    const queue = uniqueName('outbox-crash');
    await broker.declareQueue(queue);
    const { outbox, table } = await freshOutbox('rb_crash');
    await outbox.enqueue(t.db, {
      exchange: '',
      routingKey: queue,
      payload: { n: 1, amountCents: 700 },
      messageId: 'crash-1',
    });

    const child = spawn(process.execPath, [fileURLToPath(new URL('./support/relay-child.ts', import.meta.url))], {
      env: {
        ...process.env,
        AMQP_URL: amqpUrl(),
        DATABASE_URL: t.url,
        OUTBOX_TABLE: table,
        INBOXKIT_TEST_RELAY_HALT_AFTER_CONFIRM: '1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk;
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    await waitFor('the child relay halted after the confirm', () => output.includes('halted-after-confirm'), 30_000);
    child.kill('SIGKILL');
    await exited;
    // Confirmed by the broker, not deleted: the row is still there.
    expect(await broker.count(queue)).toBe(1);
    await waitFor('the dead relay’s claim released', async () => (await pending(table)).length === 1, 10_000);

    const relay = createRabbitRelay({ outbox, url: amqpUrl(), pollIntervalMs: 50 });
    cleanups.push(() => relay.close());
    await waitFor('the re-send', async () => (await pending(table)).length === 0, 20_000);
    expect(await broker.count(queue)).toBe(2);

    const inbox = createInbox({ db: t.db, consumer: queue });
    const duplicates: string[] = [];
    inbox.on('duplicate', (e) => duplicates.push(e.messageId));
    const subscription = subscribe({ inbox, url: amqpUrl(), queue, handler: ledgerHandler() });
    cleanups.push(() => subscription.close());
    await waitFor('both copies consumed', () => duplicates.length === 1, 20_000);
    expect(await ledgerCounts(t.db, 'crash-1')).toEqual({ rows: 1, distinct: 1 });
  });

  it('pauses while its connection is cut and resumes on its own', async () => {
    const { t, broker } = setup;
    const queue = uniqueName('outbox-cut');
    await broker.declareQueue(queue);
    const { outbox, table } = await freshOutbox('rb_cut');
    const connectionName = uniqueName('outbox-relay');
    const relay = createRabbitRelay({
      outbox,
      connect: () => amqplib.connect(amqpUrl(), { clientProperties: { connection_name: connectionName } }),
      pollIntervalMs: 50,
      pause: { minDelayMs: 50, maxDelayMs: 200 },
    });
    cleanups.push(() => relay.close());
    await outbox.enqueue(t.db, { exchange: '', routingKey: queue, payload: 1, messageId: 'before-cut' });
    await waitFor('the first message published', async () => (await broker.count(queue)) === 1, 20_000);
    expect(await closeConnectionsNamed(connectionName)).toBe(1);
    await outbox.enqueue(t.db, { exchange: '', routingKey: queue, payload: 2, messageId: 'after-cut' });
    await waitFor('the outbox emptied', async () => (await pending(table)).length === 0, 20_000);
    expect(await broker.count(queue)).toBe(2);
    const ids = (await broker.drain(queue)).map((m) => m.properties.messageId);
    expect(ids).toEqual(['before-cut', 'after-cut']);
  });
});
