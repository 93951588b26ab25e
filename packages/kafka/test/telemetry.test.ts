import { createOutbox, NonRetryableError, outboxSchemaSql } from '@inboxkit/core';
import { createKafkaRelay } from '@inboxkit/kafka';
import { context, propagation, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { sql } from 'kysely';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { setUpKafkaFile } from '../../../test/kafka/support/file-setup.ts';
import { consumeToEnd, ledgerHandlers, ledgerTotals, testInbox } from '../../../test/kafka/support/inbox-consumer.ts';
import {
  charge,
  createFreshTopic,
  produce,
  readTopic,
  topicSize,
  waitFor,
} from '../../../test/kafka/support/kafka-testkit.ts';
import { captureLogger } from '../../../test/support/log-capture.ts';
import { counterSum, histogramCount, type OtelSdk, registerOtelSdk } from '../../../test/support/otel.ts';

// A producer's trace goes on through the Kafka consumer as one trace (docs/telemetry.md):
// the real SDK with in-memory exporters, a real broker and Postgres.

const setup = setUpKafkaFile('kafka_telemetry', { poolSize: 6 });
let sdk: OtelSdk;
beforeAll(() => {
  sdk = registerOtelSdk();
});
afterAll(async () => {
  await sdk?.shutdown();
});

for (const mode of ['eachMessage', 'eachBatch'] as const) {
  it(`${mode}: each record's process span continues its producer's trace; a poison record's span is an error and its dead letter carries the trace on`, async () => {
    const { t, kit } = setup;
    sdk.reset();
    const { topic, dlq, groupId } = await createFreshTopic(kit.admin, {
      topic: `traced-${mode}`,
      group: 'group-traced',
      partitions: 1,
    });
    const ids = ['t-1', 't-2', 'poison'];
    // The producer side: a span per send, its context in the record's headers.
    const tracer = trace.getTracer('producer-app');
    const producers = new Map<string, ReturnType<typeof tracer.startSpan>>();
    for (const id of ids) {
      const span = tracer.startSpan(`send ${topic}`, { kind: SpanKind.PRODUCER });
      const headers: Record<string, string> = {};
      propagation.inject(trace.setSpan(context.active(), span), headers);
      await produce(kit.producer, topic, [{ ...charge(id), headers }]);
      span.end();
      producers.set(id, span);
    }

    const logger = captureLogger();
    const inbox = testInbox(t.db, `traced-${mode}`, { logger });
    await consumeToEnd(kit, topic, groupId, {
      ...ledgerHandlers(mode, {
        before: (messages) => {
          if (messages.some((message) => message.id === 'poison')) throw new NonRetryableError('card refused');
          trace.getTracer('consumer-app').startSpan('ledger write').end();
        },
      }),
      inbox,
      kafka: kit.kafka,
    });
    expect((await ledgerTotals(t.db)).distinct).toBeGreaterThanOrEqual(2);

    const spans = sdk.spans();
    const processSpans = spans.filter((span) => span.name === `process ${topic}`);
    const recordSpan = (id: string) => {
      const producer = producers.get(id)?.spanContext();
      const found = processSpans.filter(
        (span) => span.parentSpanContext?.spanId === producer?.spanId && span.attributes['messaging.message.id'] === id,
      );
      expect(found, `the process span of ${id}`).toHaveLength(1);
      const span = found[0];
      expect(span?.spanContext().traceId).toBe(producer?.traceId);
      expect(span?.kind).toBe(SpanKind.CONSUMER);
      expect(span?.attributes).toMatchObject({
        'messaging.system': 'kafka',
        'messaging.operation.type': 'process',
        'messaging.destination.name': topic,
        'messaging.consumer.group.name': groupId,
        'messaging.destination.partition.id': '0',
        'inboxkit.consumer': `traced-${mode}`,
        'inboxkit.settled': true,
      });
      return span;
    };
    for (const id of ['t-1', 't-2']) {
      expect(recordSpan(id)?.attributes['inboxkit.outcome']).toBe('processed');
    }
    const poison = recordSpan('poison');
    expect(poison?.attributes).toMatchObject({ 'inboxkit.outcome': 'dead_letter', 'inboxkit.reason': 'non_retryable' });
    expect(poison?.status.code).toBe(SpanStatusCode.ERROR);
    expect(poison?.events.some((event) => event.name === 'exception')).toBe(true);

    // The handler's own spans are children of the span active around it: the record's
    // (eachMessage) or the batch's, which links every record's producer.
    const writes = spans.filter((span) => span.name === 'ledger write');
    expect(writes.length).toBeGreaterThan(0);
    const batches = processSpans.filter((span) => span.attributes['messaging.batch.message_count'] !== undefined);
    const parents = new Set((mode === 'eachMessage' ? processSpans : batches).map((span) => span.spanContext().spanId));
    for (const write of writes) expect(parents.has(write.parentSpanContext?.spanId ?? '')).toBe(true);
    if (mode === 'eachBatch') {
      const linked = new Set(batches.flatMap((span) => span.links.map((link) => link.context.spanId)));
      for (const id of ids) expect(linked.has(producers.get(id)?.spanContext().spanId ?? '')).toBe(true);
    }

    // The dead letter's trace context is the poison record's process span.
    const [deadLetter] = await readTopic(kit.kafka, dlq, 1);
    expect(deadLetter?.headers.traceparent).toBe(
      `00-${poison?.spanContext().traceId}-${poison?.spanContext().spanId}-01`,
    );

    // Every line names the inbox, whichever part of the adapter wrote it; every record's line
    // carries the same fields (docs/telemetry.md, "Logging").
    expect(logger.lines.length).toBeGreaterThan(ids.length);
    for (const line of logger.lines)
      expect([line.message, line.fields.consumer]).toEqual([line.message, `traced-${mode}`]);
    const handled = logger.lines.filter((line) => line.message === 'inboxkit: message handled');
    expect(handled.map((line) => line.fields.messageId).sort()).toEqual([...ids].sort());
    for (const { fields } of handled) {
      expect(Object.keys(fields).sort()).toEqual(
        expect.arrayContaining([
          'consumer',
          'messageId',
          'topic',
          'partition',
          'offset',
          'outcome',
          'settled',
          'durationMs',
        ]),
      );
      expect(fields).toMatchObject({ consumer: `traced-${mode}`, topic, partition: 0, settled: true });
      expect(typeof fields.durationMs).toBe('number');
    }
    expect(handled.find((line) => line.fields.messageId === 'poison')?.fields).toMatchObject({
      outcome: 'dead_letter',
      reason: 'non_retryable',
    });
    expect(logger.lines.find((line) => line.message === 'inboxkit: message to be dead-lettered')?.fields).toMatchObject(
      { consumer: `traced-${mode}`, messageId: 'poison', outcome: 'dead_letter' },
    );

    const collected = await sdk.collect();
    const consumer = { 'inboxkit.consumer': `traced-${mode}` };
    const outcomes = sdk.points(collected, 'inboxkit.inbox.outcomes');
    expect(counterSum(outcomes, { ...consumer, 'inboxkit.outcome': 'processed' })).toBe(2);
    expect(
      counterSum(outcomes, { ...consumer, 'inboxkit.outcome': 'dead_letter', 'inboxkit.reason': 'non_retryable' }),
    ).toBe(1);
    const latency = sdk.points(collected, 'inboxkit.delivery.latency');
    expect(
      histogramCount(latency, {
        ...consumer,
        'messaging.system': 'kafka',
        'inboxkit.destination': topic,
      }),
    ).toBe(3);
  });
}

it('one trace from the producer through the inbox consumer, its outbox, the relay and the next consumer', async () => {
  const { t, kit } = setup;
  sdk.reset();
  const first = await createFreshTopic(kit.admin, { topic: 'orders', group: 'group-orders', partitions: 1 });
  const next = await createFreshTopic(kit.admin, { topic: 'accepted', group: 'group-accepted', partitions: 1 });
  const table = `outbox_${Math.random().toString(36).slice(2, 8)}`;
  await sql.raw(outboxSchemaSql({ table })).execute(t.db);
  const outbox = createOutbox({ db: t.db, table });

  const producer = trace.getTracer('producer-app').startSpan(`send ${first.topic}`, { kind: SpanKind.PRODUCER });
  const headers: Record<string, string> = {};
  propagation.inject(trace.setSpan(context.active(), producer), headers);
  await produce(kit.producer, first.topic, [{ ...charge('order-1'), headers }]);
  producer.end();

  // The first consumer accepts the order and, in the same transaction, enqueues an event.
  await consumeToEnd(kit, first.topic, first.groupId, {
    mode: 'eachMessage',
    inbox: testInbox(t.db, 'orders'),
    kafka: kit.kafka,
    handler: async (trx, message) => {
      await outbox.enqueue(trx, { topic: next.topic, key: message.id, payload: { accepted: message.id } });
    },
  });
  const relayProducer = kit.kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await relayProducer.connect();
  const relay = createKafkaRelay({ outbox, producer: relayProducer, listen: { connectionString: t.url } });
  try {
    await waitFor(async () => (await topicSize(kit.admin, next.topic)) === 1, { what: 'the relayed event' });
  } finally {
    await relay.close();
    await relayProducer.disconnect();
  }
  await consumeToEnd(kit, next.topic, next.groupId, {
    mode: 'eachMessage',
    inbox: testInbox(t.db, 'accepted'),
    kafka: kit.kafka,
    handler: async () => {},
  });

  const spans = sdk.spans();
  const accepting = spans.find((span) => span.name === `process ${first.topic}`);
  const following = spans.find((span) => span.name === `process ${next.topic}`);
  expect(accepting?.parentSpanContext?.spanId).toBe(producer.spanContext().spanId);
  expect(following?.spanContext().traceId).toBe(producer.spanContext().traceId);
  // Captured at enqueue, inside the first consumer's span: the relay carried it.
  expect(following?.parentSpanContext?.spanId).toBe(accepting?.spanContext().spanId);
  expect(following?.attributes['inboxkit.outcome']).toBe('processed');
});
