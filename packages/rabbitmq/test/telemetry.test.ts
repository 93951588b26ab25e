import { createInbox, NonRetryableError } from '@inboxkit/core';
import { type RabbitMessage, subscribe } from '@inboxkit/rabbitmq';
import { context, propagation, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import type { Kysely } from 'kysely';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import {
  amqpUrl,
  openTestBroker,
  type TestBroker,
  uniqueName,
  waitFor,
} from '../../../test/rabbitmq/support/broker.ts';
import { ledgerCounts } from '../../../test/rabbitmq/support/ledger.ts';
import { Subscriptions } from '../../../test/rabbitmq/support/subscriptions.ts';
import { captureLogger } from '../../../test/support/log-capture.ts';
import { counterSum, histogramCount, type OtelSdk, registerOtelSdk } from '../../../test/support/otel.ts';
import { createTestDatabase, type TestDatabase, type TestDB } from '../../../test/support/postgres.ts';

// A producer's trace goes on through the RabbitMQ consumer as one trace (docs/telemetry.md):
// the real SDK with in-memory exporters, a real broker and Postgres.

type Body = { amountCents: number };

let t: TestDatabase;
let broker: TestBroker;
let sdk: OtelSdk;
const subscriptions = new Subscriptions();

beforeAll(async () => {
  sdk = registerOtelSdk();
  t = await createTestDatabase('rabbitmq_telemetry');
  broker = await openTestBroker('telemetry');
});
afterEach(async () => {
  await subscriptions.closeAll();
});
afterAll(async () => {
  await broker?.dispose();
  await t?.dispose();
  await sdk?.shutdown();
});

for (const maxBatchSize of [1, 10]) {
  const mode = maxBatchSize === 1 ? 'one delivery at a time' : 'batches';
  it(`${mode}: each delivery's process span continues its producer's trace; a poison's span is an error and its dead letter carries the trace on`, async () => {
    sdk.reset();
    const queue = uniqueName(`traced-${maxBatchSize}`);
    broker.track(queue, `${queue}.dlq`, `${queue}.retry`);
    await broker.declareQueue(queue);
    const prefix = `${maxBatchSize}-`;
    const ids = [`${prefix}r-1`, `${prefix}r-2`, `${prefix}poison`];
    const tracer = trace.getTracer('producer-app');
    const producers = new Map<string, ReturnType<typeof tracer.startSpan>>();
    for (const [i, id] of ids.entries()) {
      const span = tracer.startSpan(`send ${queue}`, { kind: SpanKind.PRODUCER });
      const headers: Record<string, string> = {};
      propagation.inject(trace.setSpan(context.active(), span), headers);
      // AMQP timestamps are seconds; many publishers put milliseconds there: both count.
      const timestamp = i === 0 ? Math.floor(Date.now() / 1000) : Date.now();
      broker.channel.sendToQueue(queue, Buffer.from(JSON.stringify({ amountCents: 100 })), {
        persistent: true,
        contentType: 'application/json',
        messageId: id,
        headers,
        timestamp,
      });
      span.end();
      producers.set(id, span);
    }
    await broker.channel.waitForConfirms();

    const consumer = `traced-${maxBatchSize}`;
    const logger = captureLogger();
    const subscription = subscriptions.add(
      subscribe<TestDB, Body, unknown>({
        inbox: createInbox({ db: t.db, consumer, logger, retry: { retries: 1, minTimeout: 1, maxTimeout: 5 } }),
        url: amqpUrl(),
        queue,
        decode: 'json',
        assertTopology: true,
        prefetch: 10,
        maxBatchSize,
        handler: async (trx: Kysely<TestDB>, message: RabbitMessage<Body>) => {
          if (message.id.endsWith('poison')) throw new NonRetryableError('card refused');
          trace.getTracer('consumer-app').startSpan('ledger write').end();
          await trx.insertInto('ledger').values({ charge_id: message.id, amount_cents: 100 }).execute();
        },
        requeueBackoff: { minDelayMs: 20, maxDelayMs: 200 },
      }),
    );
    await subscription.ready();
    await waitFor('the dead letter', async () => (await broker.count(`${queue}.dlq`)) === 1);
    const processSpans = () => sdk.spans().filter((span) => span.name === `process ${queue}`);
    await waitFor('three delivery spans', () => processSpans().filter((s) => s.links.length === 0).length === 3);
    expect(await ledgerCounts(t.db, prefix)).toEqual({ rows: 2, distinct: 2 });

    const spans = sdk.spans();
    const deliverySpan = (id: string) => {
      const producer = producers.get(id)?.spanContext();
      const found = processSpans().filter((span) => span.parentSpanContext?.spanId === producer?.spanId);
      expect(found, `the process span of ${id}`).toHaveLength(1);
      const span = found[0];
      expect(span?.spanContext().traceId).toBe(producer?.traceId);
      expect(span?.kind).toBe(SpanKind.CONSUMER);
      expect(span?.attributes).toMatchObject({
        'messaging.system': 'rabbitmq',
        'messaging.operation.type': 'process',
        'messaging.destination.name': '',
        'messaging.consumer.group.name': queue,
        'messaging.rabbitmq.destination.routing_key': queue,
        'messaging.message.id': id,
        'inboxkit.consumer': consumer,
        'inboxkit.settled': true,
      });
      expect(typeof span?.attributes['messaging.rabbitmq.message.delivery_tag']).toBe('number');
      return span;
    };
    const delivered = ids.slice(0, 2).map((id) => deliverySpan(id));
    for (const span of delivered) expect(span?.attributes['inboxkit.outcome']).toBe('processed');
    const poison = deliverySpan(`${prefix}poison`);
    expect(poison?.attributes).toMatchObject({ 'inboxkit.outcome': 'dead_letter', 'inboxkit.reason': 'non_retryable' });
    expect(poison?.status.code).toBe(SpanStatusCode.ERROR);

    // The handler's spans are children of the delivery's span, or of the batch's, which links
    // the deliveries' spans.
    const writes = spans.filter((span) => span.name === 'ledger write');
    expect(writes.length).toBeGreaterThanOrEqual(2);
    const batches = processSpans().filter((span) => span.attributes['messaging.batch.message_count'] !== undefined);
    const parents = new Set(processSpans().map((span) => span.spanContext().spanId));
    for (const write of writes) expect(parents.has(write.parentSpanContext?.spanId ?? '')).toBe(true);
    if (maxBatchSize > 1) {
      expect(batches.length).toBeGreaterThan(0);
      const linked = new Set(batches.flatMap((span) => span.links.map((link) => link.context.spanId)));
      for (const span of [...delivered, poison]) expect(linked.has(span?.spanContext().spanId ?? '')).toBe(true);
    }

    // The dead letter's trace context is the poison delivery's process span.
    const [dead] = await broker.drain(`${queue}.dlq`);
    expect(String(dead?.properties.headers?.traceparent)).toBe(
      `00-${poison?.spanContext().traceId}-${poison?.spanContext().spanId}-01`,
    );

    // Every line names the inbox, whichever part of the adapter wrote it; every delivery's
    // line carries the same fields (docs/telemetry.md, "Logging").
    expect(logger.lines.length).toBeGreaterThan(ids.length);
    for (const line of logger.lines) expect([line.message, line.fields.consumer]).toEqual([line.message, consumer]);
    const handled = logger.lines.filter((line) => line.message === 'inboxkit: message handled');
    expect(handled.map((line) => line.fields.messageId).sort()).toEqual([...ids].sort());
    for (const { fields } of handled) {
      expect(fields).toMatchObject({ consumer, queue, settled: true });
      expect(typeof fields.deliveryTag).toBe('number');
      expect(typeof fields.durationMs).toBe('number');
    }
    expect(handled.find((line) => line.fields.messageId === `${prefix}poison`)?.fields).toMatchObject({
      outcome: 'dead_letter',
      reason: 'non_retryable',
    });
    expect(logger.lines.find((line) => line.message === 'inboxkit: message dead-lettered')?.fields).toMatchObject({
      consumer,
      messageId: `${prefix}poison`,
      queue,
      outcome: 'dead_letter',
    });

    const collected = await sdk.collect();
    const byConsumer = { 'inboxkit.consumer': consumer };
    const outcomes = sdk.points(collected, 'inboxkit.inbox.outcomes');
    expect(counterSum(outcomes, { ...byConsumer, 'inboxkit.outcome': 'processed' })).toBe(2);
    expect(counterSum(outcomes, { ...byConsumer, 'inboxkit.outcome': 'dead_letter' })).toBe(1);
    const latency = sdk.points(collected, 'inboxkit.delivery.latency');
    expect(
      histogramCount(latency, { ...byConsumer, 'messaging.system': 'rabbitmq', 'inboxkit.destination': queue }),
    ).toBe(3);
  });
}

it('a logger that throws loses its line, never the delivery: acked once processed', async () => {
  const queue = uniqueName('throwing-logger');
  broker.track(queue, `${queue}.dlq`, `${queue}.retry`);
  await broker.declareQueue(queue);
  await broker.publish(queue, [{ id: 'tl-1', body: { amountCents: 100 } }]);
  const logger = {
    ...captureLogger(),
    debug: () => {
      throw new Error('the log sink is gone');
    },
  };
  const subscription = subscriptions.add(
    subscribe<TestDB, Body, unknown>({
      inbox: createInbox({ db: t.db, consumer: 'throwing-logger', logger }),
      url: amqpUrl(),
      queue,
      decode: 'json',
      assertTopology: true,
      handler: async (trx: Kysely<TestDB>, message: RabbitMessage<Body>) => {
        await trx.insertInto('ledger').values({ charge_id: message.id, amount_cents: 100 }).execute();
      },
    }),
  );
  await subscription.ready();
  await waitFor('the ledger row', async () => (await ledgerCounts(t.db, 'tl-')).rows === 1);
  await waitFor('the ack', () => subscription.inFlight === 0);
  await subscription.close();
  // Unacked, it would be back in the queue once the subscription's channel closed.
  expect(await broker.count(queue)).toBe(0);
  expect(await ledgerCounts(t.db, 'tl-')).toEqual({ rows: 1, distinct: 1 });
});
