// Liveness property test (RabbitMQ): while Postgres and the broker answer, every delivery
// ends as processed, duplicate or dead-lettered within the retry policy's span.
//
// A seeded plan (test/support/liveness.ts) gives each message a kind: most succeed; the
// others fail once, fail for good, fail on every attempt, throw errors coded 08P01, 53200,
// 53400, 58P01, 57014 or "Connection terminated" from a database that answers, hold NUL in
// their error or result, bind 70,000 parameters, swallow a database error, wait on a row
// another connection holds locked, or carry no id (a `messageId.from` that throws); some ids
// are sent 2-3 times. It runs a transaction per message (prefetch 10) and batches
// (`maxBatchSize` 25 at prefetch 50). The queue must drain (a stall is reported with the
// stuck ids), and at the end every id must be in Postgres and the dead-letter queue exactly
// as its kind says: one ledger row and a processed key, or its dead letters with the right
// reason and a dead_lettered key; never applied twice, never lost, never redelivered
// endlessly, and the subscription never closes or reconnects on its own.
//
// CI runs 1,500 messages. The long version, and a replay of a failed run (the report
// prints its seed):
//   INBOXKIT_LIVENESS_MESSAGES=20000 INBOXKIT_LIVENESS_SEED=<seed> pnpm exec vitest run --project rabbitmq liveness
// INBOXKIT_LIVENESS_KINDS=transient_once,huge_bind (a comma list; ok is always in) checks
// some kinds alone; INBOXKIT_LIVENESS_STALL_MS (default 15000) is the no-progress window.
import { type AmqpDelivery, subscribe } from '@inboxkit/rabbitmq';
import { describe, expect, it } from 'vitest';
import {
  awaitDrain,
  createLockRows,
  insertRows,
  type LivenessBody,
  LivenessTrace,
  LockHolder,
  livenessInbox,
  livenessPlan,
  livenessSettings,
  observeDatabase,
  planBehaviour,
  printable,
  replayCommand,
  verdict,
  within,
} from '../support/liveness.ts';
import type { TestDB } from '../support/postgres.ts';
import { amqpUrl, messagesInQueue, uniqueName } from './support/broker.ts';
import { setUpRabbitFile } from './support/file-setup.ts';

const settings = livenessSettings();
const setup = setUpRabbitFile('liveness', { poolSize: 15 });
const MODES = [
  { name: 'per message', prefix: 'lrm', prefetch: 10, maxBatchSize: 1 },
  { name: 'batches', prefix: 'lrb', prefetch: 50, maxBatchSize: 25 },
] as const;
const PER_MODE = Math.ceil(settings.messages / MODES.length);
const DEADLINE_MS = 60_000 + PER_MODE * 40;

/** A header value as text (amqplib hands strings over as strings, some clients as bytes). */
function headerText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  return undefined;
}

describe(`liveness (RabbitMQ, ${settings.messages} messages, seed ${settings.seed})`, () => {
  it.each(MODES.map((mode, stream) => [mode.name, mode, stream] as const))(
    '%s: every delivery ends processed or dead-lettered as its kind says, and the queue drains',
    async (_name, mode, stream) => {
      const { t, broker } = setup;
      const plan = livenessPlan(settings, { prefix: mode.prefix, count: PER_MODE, stream });
      await createLockRows(t.db, plan);
      const queue = uniqueName(`liveness-${mode.prefix}`);
      await broker.declareQueue(queue);
      await broker.declareQueue(`${queue}.dlq`);
      await broker.publish(
        queue,
        plan.messages.map((m) =>
          m.body === null
            ? { body: '', headers: { 'liveness-id': m.id } }
            : { id: m.id, body: m.body, headers: { 'liveness-id': m.id } },
        ),
      );

      const trace = new LivenessTrace();
      const consumerName = `liveness-${mode.prefix}`;
      const inbox = livenessInbox(t.db, consumerName, trace);
      const locks = new LockHolder(t.connect(4).pool);
      const behave = planBehaviour(plan, trace, locks);
      const subscription = subscribe<TestDB, LivenessBody, unknown>({
        inbox,
        url: amqpUrl(),
        queue,
        prefetch: mode.prefetch,
        maxBatchSize: mode.maxBatchSize,
        connectionName: `${queue} liveness`,
        requeueBackoff: { minDelayMs: 100, maxDelayMs: 1000, factor: 2 },
        drainTimeoutMs: 10_000,
        // Deliveries are counted where the adapter decodes them, or (no id) asks for the id.
        decode: (content: Buffer, delivery: AmqpDelivery) => {
          trace.delivered(headerText(delivery.properties.headers?.['liveness-id']));
          return JSON.parse(content.toString('utf8')) as LivenessBody;
        },
        messageId: {
          from: (delivery: AmqpDelivery) => {
            const lid = headerText(delivery.properties.headers?.['liveness-id']);
            trace.delivered(lid);
            trace.event(lid, 'the messageId function threw (no id)');
            throw new Error(`a message without an id (${lid})`);
          },
        },
        handler: async (trx, message) => {
          const step = await behave(trx, message.id, message.body);
          await insertRows(trx, [step]);
          return step.result;
        },
      });
      subscription.on('requeued', (e) =>
        trace.event(e.messageId, `requeued (${e.reason}): ${e.error?.message ?? 'no error'}`),
      );
      subscription.on('deadLettered', (e) =>
        trace.event(e.messageId, `published to the dead-letter queue (${e.reason})`),
      );
      subscription.on('reconnecting', (e) =>
        trace.consumerProblems.push(`reconnecting: ${printable(e.error?.message ?? 'no error')}`),
      );
      subscription.on('closed', () => trace.consumerProblems.push('the subscription closed on its own'));
      await subscription.ready();

      const drain = await awaitDrain({
        remaining: () => messagesInQueue(queue),
        stallMs: settings.stallMs,
        consuming: () => trace.consuming(),
        deadlineMs: DEADLINE_MS,
        intervalMs: 1000,
      });
      const problems = [...trace.consumerProblems];
      const closed = await within(20_000, 'close()', () => subscription.close());
      if (typeof closed === 'string') problems.push(closed);
      await locks.settle();

      const deadLetters = new Map<string, string[]>();
      for (const letter of await broker.drain(`${queue}.dlq`)) {
        const headers = letter.properties.headers ?? {};
        const lid = headerText(headers['liveness-id']) ?? headerText(headers['x-inboxkit-message-id']) ?? '?';
        deadLetters.set(lid, [...(deadLetters.get(lid) ?? []), headerText(headers['x-inboxkit-reason']) ?? '?']);
      }
      const result = verdict({
        title: `RabbitMQ ${mode.name} (prefetch ${mode.prefetch}, maxBatchSize ${mode.maxBatchSize})`,
        plan,
        observed: { ...(await observeDatabase(t.db, plan, consumerName)), deadLetters },
        trace,
        drain,
        replay: replayCommand(settings, 'rabbitmq'),
        extra: problems,
      });
      console.info(result.report);
      expect(result.ok, result.report).toBe(true);
    },
    DEADLINE_MS + 120_000,
  );
});
