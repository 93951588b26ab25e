// Start-up during a RabbitMQ outage: a subscription started while nothing answers on the
// broker's address (connections refused) keeps trying with its reconnect backoff, and
// consumes once the broker is reachable (here: a proxy to the shared broker, started on that
// address after a few failed attempts; the shared broker itself is never touched).
// `ready({ timeoutMs, signal })` lets start-up code give up waiting without closing it.
import { createInbox } from '@inboxkit/core';
import { BrokerUnavailableError, subscribe } from '@inboxkit/rabbitmq';
import { afterEach, describe, expect, it } from 'vitest';
import type { TestDB } from '../support/postgres.ts';
import { freePort } from '../support/private-postgres.ts';
import { amqpUrl, declareQueueWithDlq, waitFor } from './support/broker.ts';
import { setUpRabbitFile } from './support/file-setup.ts';
import { type LedgerBody, ledgerCounts, ledgerHandler } from './support/ledger.ts';
import { collectSubscriptionEvents, Subscriptions } from './support/subscriptions.ts';
import { startTcpProxy, type TcpProxy } from './support/tcp-proxy.ts';

const setup = setUpRabbitFile('startup');
const subscriptions = new Subscriptions();
let proxy: TcpProxy | undefined;
afterEach(async () => {
  await subscriptions.closeAll();
  await proxy?.close();
  proxy = undefined;
});

/** The shared broker's URL with another port. */
function urlOnPort(port: number): string {
  const url = new URL(amqpUrl());
  url.hostname = '127.0.0.1';
  url.port = String(port);
  return url.toString();
}

describe('a subscription started while the broker refuses connections', () => {
  it('retries with backoff, comes up when the broker does, and processes the waiting messages', async () => {
    const { t, broker } = setup;
    const queue = await declareQueueWithDlq(broker, 'startup');
    await broker.publish(
      queue,
      Array.from({ length: 10 }, (_, i) => ({ id: `su-${i}`, body: { n: i, amountCents: i + 1 } })),
    );
    const port = await freePort();
    const subscription = subscriptions.add(
      subscribe<TestDB, LedgerBody, void>({
        inbox: createInbox({ db: t.db, consumer: queue }),
        url: urlOnPort(port),
        queue,
        decode: 'json',
        handler: ledgerHandler(),
        reconnect: { minDelayMs: 100, maxDelayMs: 500 },
      }),
    );
    const { reconnecting } = collectSubscriptionEvents(subscription, 'reconnecting');
    await waitFor('three failed connection attempts', () => reconnecting.length >= 3);
    expect(subscription.state).toBe('reconnecting');
    expect(reconnecting[0]?.error?.message).toMatch(/ECONNREFUSED/);
    const early = await subscription.ready({ timeoutMs: 100 }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(early).toBeInstanceOf(BrokerUnavailableError);
    expect(early).toMatchObject({ code: 'INBOX_RABBITMQ_UNAVAILABLE', queue });
    expect((early as Error).cause).toBeInstanceOf(Error);

    // Still trying: the broker becomes reachable, and it consumes.
    proxy = await startTcpProxy(amqpUrl(), { port });
    await subscription.ready({ timeoutMs: 60_000 });
    expect(subscription.state).toBe('connected');
    await waitFor('the waiting messages to be processed', async () => (await ledgerCounts(t.db, 'su-')).rows === 10);
    expect(await ledgerCounts(t.db, 'su-')).toMatchObject({ rows: 10, distinct: 10 });
  });

  it('ready({ signal }) rejects with the reason when it aborts; the subscription goes on until close()', async () => {
    const { t, broker } = setup;
    const queue = await declareQueueWithDlq(broker, 'startup-abort');
    const subscription = subscriptions.add(
      subscribe<TestDB, LedgerBody, void>({
        inbox: createInbox({ db: t.db, consumer: queue }),
        url: urlOnPort(await freePort()),
        queue,
        decode: 'json',
        handler: ledgerHandler(),
        reconnect: { minDelayMs: 100, maxDelayMs: 500 },
      }),
    );
    const controller = new AbortController();
    const reason = new Error('SIGTERM during start-up');
    const waiting = subscription.ready({ signal: controller.signal });
    setTimeout(() => controller.abort(reason), 300);
    await expect(waiting).rejects.toBe(reason);
    expect(subscription.state).toBe('reconnecting');
    await expect(subscription.ready({ timeoutMs: -1 })).rejects.toThrow(/timeoutMs/);
    await subscription.close();
    expect(subscription.state).toBe('closed');
  });
});
