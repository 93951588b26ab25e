import { createInbox, createOutbox, migrateInbox, migrateOutbox, NonRetryableError } from '@inboxkit/core';
import { inboxTelemetry, traceHeaders } from '@inboxkit/core/adapter';
import { context, SpanStatusCode, trace } from '@opentelemetry/api';
import { type Kysely, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  counterSum,
  histogramCount,
  type OtelSdk,
  registerOtelSdk,
  traceparentOf,
} from '../../../test/support/otel.ts';
import { createTestDatabase, type TestDatabase, type TestDB } from '../../../test/support/postgres.ts';

// The inbox's OpenTelemetry metrics and its spans' building blocks, with the real SDK and
// in-memory exporters, against Postgres (docs/telemetry.md). The adapters' end-to-end traces
// are tested with the brokers (packages/kafka/test, packages/rabbitmq/test).

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('core_telemetry');
});
afterAll(async () => {
  await t?.dispose();
});

const fastRetry = { retries: 3, minTimeout: 1, maxTimeout: 5, randomize: false } as const;

function charge(id: string, amount = 100) {
  return { id, payload: JSON.stringify({ id, amount }) };
}

async function insertCharge(trx: Kysely<TestDB>, id: string): Promise<void> {
  await trx.insertInto('charges').values({ id, user_id: 'u', amount_cents: 1 }).execute();
}

/** An inbox made before the SDK was registered. */
let early: ReturnType<typeof createInbox<TestDB>>;

describe('without an SDK', () => {
  it('processes as usual, makes no recording span and injects no headers', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'no-sdk' });
    early = inbox;
    let recording: boolean | undefined;
    const outcome = await inbox.process(charge('n-1'), async (trx) => {
      recording = trace.getActiveSpan()?.isRecording() ?? false;
      await insertCharge(trx, 'n-1');
    });
    expect(outcome.status).toBe('processed');
    expect(recording).toBe(false);

    // What an adapter does around a delivery: a span whose parent is the message's headers.
    const telemetry = inboxTelemetry(inbox);
    expect(telemetry.off).toBe(false); // the API is installed: only no SDK is registered
    const producer = trace.getTracer('test').startSpan('producer');
    const traced = telemetry.message({
      system: 'kafka',
      destination: 'charges',
      headers: { traceparent: traceparentOf(producer) },
      attributes: {},
    });
    const inside = await traced.run(async () => ({
      recording: trace.getActiveSpan()?.isRecording() ?? false,
      headers: traceHeaders(),
    }));
    traced.end(outcome, true);
    expect(inside).toEqual({ recording: false, headers: {} });
  });
});

describe('with the SDK registered', () => {
  let sdk: OtelSdk;
  beforeAll(() => {
    sdk = registerOtelSdk();
  });
  afterAll(async () => {
    await sdk?.shutdown();
  });

  it('counts outcomes by reason and times handler calls, one message and batches alike', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'counted', retry: fastRetry, telemetry: { gauges: false } });
    const handler = async (trx: Kysely<TestDB>, message: { id: string }) => insertCharge(trx, message.id);
    expect((await inbox.process(charge('m-1'), handler)).status).toBe('processed');
    expect((await inbox.process(charge('m-1'), handler)).status).toBe('duplicate');
    expect((await inbox.process(charge('m-1', 999), handler)).status).toBe('conflict');
    const poison = await inbox.process(charge('m-2'), () => {
      throw new NonRetryableError('card refused');
    });
    expect(poison).toMatchObject({ status: 'dead_letter', reason: 'non_retryable' });
    const batch = await inbox.processBatch([charge('b-1'), charge('b-2'), charge('m-1')], handler);
    expect(batch.outcomes.map((o) => o.status)).toEqual(['processed', 'processed', 'duplicate']);
    const bulk = await inbox.processBulk([charge('k-1'), charge('k-2')], async (trx, messages) => {
      for (const message of messages) await insertCharge(trx, message.id);
    });
    expect(bulk.outcomes.map((o) => o.status)).toEqual(['processed', 'processed']);

    const collected = await sdk.collect();
    const outcomes = sdk.points(collected, 'inboxkit.inbox.outcomes');
    const of = (match: Record<string, string>) => counterSum(outcomes, { 'inboxkit.consumer': 'counted', ...match });
    expect(of({ 'inboxkit.outcome': 'processed' })).toBe(5);
    expect(of({ 'inboxkit.outcome': 'duplicate' })).toBe(2);
    expect(of({ 'inboxkit.outcome': 'conflict', 'inboxkit.reason': 'payload_conflict' })).toBe(1);
    expect(of({ 'inboxkit.outcome': 'dead_letter', 'inboxkit.reason': 'non_retryable' })).toBe(1);

    const durations = sdk.points(collected, 'inboxkit.handler.duration');
    // Handler calls: m-1, the poison's one attempt, b-1 and b-2 in one pass, one bulk call.
    expect(histogramCount(durations, { 'inboxkit.consumer': 'counted' })).toBe(5);
    expect(histogramCount(durations, { 'inboxkit.consumer': 'counted', 'error.type': 'NonRetryableError' })).toBe(1);
  });

  it("records a retried attempt's error on the active span, and a dead letter's outcome and status on the message's span", async () => {
    const inbox = createInbox({ db: t.db, consumer: 'retried', retry: fastRetry, telemetry: { gauges: false } });
    const telemetry = inboxTelemetry(inbox);
    const producer = trace.getTracer('test').startSpan('producer');
    producer.end();
    sdk.reset();

    let calls = 0;
    const message = charge('r-1');
    const traced = telemetry.message({
      system: 'kafka',
      destination: 'charges',
      headers: { traceparent: traceparentOf(producer) },
      attributes: { 'messaging.destination.name': 'charges' },
      message,
    });
    const outcome = await traced.run(() =>
      inbox.process(message, async (trx) => {
        calls++;
        if (calls === 1) throw new Error('deadlock, try again');
        await trace.getTracer('test').startActiveSpan('business write', async (span) => {
          await insertCharge(trx, 'r-1');
          span.end();
        });
      }),
    );
    const headers = traced.run(async () => traceHeaders(message));
    traced.end(outcome, true);
    expect(outcome).toMatchObject({ status: 'processed', attempts: 2 });

    const spans = sdk.spans();
    const process = spans.find((span) => span.name === 'process charges');
    const business = spans.find((span) => span.name === 'business write');
    expect(process).toBeDefined();
    expect(process?.spanContext().traceId).toBe(producer.spanContext().traceId);
    expect(process?.parentSpanContext?.spanId).toBe(producer.spanContext().spanId);
    expect(business?.parentSpanContext?.spanId).toBe(process?.spanContext().spanId);
    expect(process?.attributes).toMatchObject({
      'messaging.system': 'kafka',
      'messaging.operation.type': 'process',
      'messaging.destination.name': 'charges',
      'messaging.message.id': 'r-1',
      'inboxkit.consumer': 'retried',
      'inboxkit.outcome': 'processed',
      'inboxkit.attempts': 2,
    });
    expect(process?.events.map((event) => event.name)).toEqual(['exception', 'inboxkit.retry']);
    expect(process?.events[0]?.attributes?.['exception.message']).toBe('deadlock, try again');
    expect((await headers).traceparent).toBe(
      `00-${process?.spanContext().traceId}-${process?.spanContext().spanId}-01`,
    );

    sdk.reset();
    const poison = charge('r-2');
    const deadTrace = telemetry.message({
      system: 'kafka',
      destination: 'charges',
      headers: undefined,
      attributes: {},
    });
    const dead = await deadTrace.run(() =>
      inbox.process(poison, () => {
        throw new NonRetryableError('card refused');
      }),
    );
    deadTrace.end(dead, true);
    const [deadSpan] = sdk.spans();
    expect(deadSpan?.status).toEqual({ code: SpanStatusCode.ERROR, message: 'non_retryable: card refused' });
    expect(deadSpan?.attributes).toMatchObject({
      'inboxkit.outcome': 'dead_letter',
      'inboxkit.reason': 'non_retryable',
      'error.type': 'NonRetryableError',
    });
    expect(deadSpan?.events.some((event) => event.name === 'exception')).toBe(true);
  });

  it('links a batch span to each message and gives each message a span under its own producer', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'batched', telemetry: { gauges: false } });
    const telemetry = inboxTelemetry(inbox);
    const producers = [0, 1].map((i) => trace.getTracer('test').startSpan(`producer ${i}`));
    sdk.reset();
    const messages = [charge('l-1'), charge('l-2')];
    const batch = telemetry.batchTrace(
      { system: 'kafka', destination: 'charges', attributes: {} },
      producers.map((producer) => ({
        system: 'kafka',
        destination: 'charges',
        headers: { traceparent: traceparentOf(producer) },
        attributes: {},
      })),
    );
    const result = await batch.run(() =>
      inbox.processBatch(messages, async (trx, message) => insertCharge(trx, message.id)),
    );
    batch.end(result.outcomes, 2);
    const spans = sdk.spans();
    const batchSpan = spans.find((span) => span.attributes['messaging.batch.message_count'] === 2);
    expect(batchSpan?.links.map((link) => link.context.spanId)).toEqual(
      producers.map((producer) => producer.spanContext().spanId),
    );
    const members = spans.filter((span) => span !== batchSpan);
    expect(members.map((span) => span.parentSpanContext?.spanId)).toEqual(
      producers.map((producer) => producer.spanContext().spanId),
    );
    expect(members.map((span) => span.attributes['messaging.message.id'])).toEqual(['l-1', 'l-2']);
    expect(members.every((span) => span.links[0]?.context.spanId === batchSpan?.spanContext().spanId)).toBe(true);
  });

  it("reports the gauges from bounded queries: a consumer's keys (counted, then estimated), dead-lettered keys, the oldest key's age, crash-loop suspects", async () => {
    const { error } = await migrateInbox(t.db, { table: 'gauged' });
    expect(error).toBeUndefined();
    const inbox = createInbox({ db: t.db, consumer: 'gauged', table: 'gauged', telemetry: { gaugeIntervalMs: 1 } });
    for (let i = 0; i < 5; i++) {
      await inbox.process(charge(`g-${i}`), async () => {});
    }
    await inbox.process(charge('g-dead'), () => {
      throw new NonRetryableError('refused');
    });
    await inbox.recordDeadLetter(charge('g-dead'), {
      status: 'dead_letter',
      messageId: 'g-dead',
      reason: 'non_retryable',
      error: new NonRetryableError('refused'),
      attempts: 1,
      firstSeenAt: new Date(),
    });
    await sql`UPDATE gauged SET processed_at = now() - interval '1 hour' WHERE message_id = 'g-0'`.execute(t.db);
    await sql`INSERT INTO gauged_attempts (consumer, message_id, attempts) VALUES ('gauged', 'x-1', 1), ('gauged', 'x-2', 2), ('other', 'x-3', 1)`.execute(
      t.db,
    );
    await sql`INSERT INTO gauged (consumer, message_id) SELECT 'other', 'o-' || i FROM generate_series(1, 1000) i`.execute(
      t.db,
    );
    const at = (collected: Awaited<ReturnType<OtelSdk['collect']>>, name: string) =>
      sdk
        .points(collected, name)
        .filter((point) => point.attributes['inboxkit.consumer'] === 'gauged')
        .map((point) => point.value as number);

    // Few keys: counted exactly, other consumers' keys apart.
    let collected = await sdk.collect();
    expect(at(collected, 'inboxkit.inbox.keys')).toEqual([6]);
    expect(at(collected, 'inboxkit.inbox.dead_lettered_keys')).toEqual([1]);
    expect(at(collected, 'inboxkit.inbox.crash_loop_suspects')).toEqual([2]);
    const [age] = at(collected, 'inboxkit.inbox.oldest_key.age');
    expect(age).toBeGreaterThanOrEqual(3600);
    expect(age).toBeLessThan(3600 + 600);

    // Past the bound of 10,000 the keys are not counted but estimated from the planner's statistics.
    await sql`INSERT INTO gauged (consumer, message_id) SELECT 'gauged', 'n-' || i FROM generate_series(1, 12000) i`.execute(
      t.db,
    );
    await sql`ANALYZE gauged`.execute(t.db);
    collected = await sdk.collect();
    const [keys] = at(collected, 'inboxkit.inbox.keys');
    expect(keys).toBeGreaterThan(10_000);
    expect(Math.abs((keys ?? 0) - 12_006)).toBeLessThan(12_006 * 0.05);
  });

  it('keeps the gauge figures for gaugeIntervalMs: a collection within it does not query Postgres again', async () => {
    const { error } = await migrateInbox(t.db, { table: 'cached' });
    expect(error).toBeUndefined();
    const inbox = createInbox({
      db: t.db,
      consumer: 'cached',
      table: 'cached',
      telemetry: { gaugeIntervalMs: 3_600_000 },
    });
    await inbox.process(charge('c-1'), async () => {});
    const suspects = async () =>
      sdk
        .points(await sdk.collect(), 'inboxkit.inbox.crash_loop_suspects')
        .filter((point) => point.attributes['inboxkit.consumer'] === 'cached')
        .map((point) => point.value);
    expect(await suspects()).toEqual([0]);
    await sql`INSERT INTO cached_attempts (consumer, message_id, attempts) VALUES ('cached', 'x-1', 1)`.execute(t.db);
    expect(await suspects()).toEqual([0]);
  });

  it('records nothing for an inbox made with telemetry: false', async () => {
    const inbox = createInbox({ db: t.db, consumer: 'silent', telemetry: false });
    const telemetry = inboxTelemetry(inbox);
    expect(telemetry.off).toBe(true);
    sdk.reset();
    const traced = telemetry.message({ system: 'kafka', destination: 'charges', headers: undefined, attributes: {} });
    const outcome = await traced.run(() => inbox.process(charge('s-1'), async () => {}));
    traced.end(outcome, true);
    expect(outcome.status).toBe('processed');
    expect(sdk.spans()).toEqual([]);
    const collected = await sdk.collect();
    for (const name of ['inboxkit.inbox.outcomes', 'inboxkit.inbox.crash_loop_suspects']) {
      expect(sdk.points(collected, name).filter((p) => p.attributes['inboxkit.consumer'] === 'silent')).toEqual([]);
    }
  });

  it('traces the messages of an inbox made before the SDK was registered (its metrics stay off: register the SDK first)', async () => {
    sdk.reset();
    const traced = inboxTelemetry(early).message({
      system: 'kafka',
      destination: 'late',
      headers: undefined,
      attributes: {},
    });
    const outcome = await traced.run(() => early.process(charge('n-2'), async () => {}));
    traced.end(outcome, true);
    expect(sdk.spans().map((span) => [span.name, span.attributes['inboxkit.outcome']])).toEqual([
      ['process late', 'processed'],
    ]);
    const outcomes = sdk.points(await sdk.collect(), 'inboxkit.inbox.outcomes');
    expect(outcomes.filter((point) => point.attributes['inboxkit.consumer'] === 'no-sdk')).toEqual([]);
  });

  it("captures the trace context at enqueue into the outbox message's headers, and reports the outbox's backlog and oldest message", async () => {
    const { error } = await migrateOutbox(t.db, { table: 'traced_outbox' });
    expect(error).toBeUndefined();
    const outbox = createOutbox({ db: t.db, table: 'traced_outbox' });
    const own = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const span = trace.getTracer('test').startSpan('handler');
    await context.with(trace.setSpan(context.active(), span), () =>
      t.db.transaction().execute(async (trx) => {
        await outbox.enqueue(trx, [
          { topic: 'accepted', key: 'o-1', payload: { n: 1 }, messageId: 'e-1', headers: { tenant: 'acme' } },
          { topic: 'accepted', key: 'o-2', payload: { n: 2 }, messageId: 'e-2', headers: { traceparent: own } },
          { topic: 'accepted', payload: { n: 3 }, messageId: 'e-3' },
        ]);
      }),
    );
    span.end();
    await sql`UPDATE traced_outbox SET created_at = now() - interval '10 minutes' WHERE message_id = 'e-1'`.execute(
      t.db,
    );
    const { rows } = await sql<{ message_id: string; headers: Record<string, string> }>`
      SELECT message_id, headers FROM traced_outbox ORDER BY sequence`.execute(t.db);
    expect(rows.map((row) => [row.message_id, row.headers.traceparent, row.headers.tenant])).toEqual([
      ['e-1', traceparentOf(span), 'acme'],
      ['e-2', own, undefined],
      ['e-3', traceparentOf(span), undefined],
    ]);

    const collected = await sdk.collect();
    const of = (name: string) =>
      sdk
        .points(collected, name)
        .filter((point) => point.attributes['inboxkit.table'] === 'public.traced_outbox')
        .map((point) => point.value as number);
    expect(of('inboxkit.outbox.backlog')).toEqual([3]);
    expect(of('inboxkit.outbox.failed')).toEqual([0]);
    const [age] = of('inboxkit.outbox.oldest.age');
    expect(age).toBeGreaterThanOrEqual(600);
    expect(age).toBeLessThan(600 + 600);
  });

  it('carries the active context into traceHeaders when no message span is bound', async () => {
    const span = trace.getTracer('test').startSpan('enqueue');
    const headers = context.with(trace.setSpan(context.active(), span), () => traceHeaders());
    span.end();
    expect(headers.traceparent).toBe(traceparentOf(span));
  });
});
