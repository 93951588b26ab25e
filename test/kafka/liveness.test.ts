// Liveness property test (Kafka): while Postgres and the broker answer, every delivery ends
// as processed, duplicate or dead-lettered within the retry policy's span.
//
// A seeded plan (test/support/liveness.ts) gives each message a kind: most succeed; the
// others fail once, fail for good, fail on every attempt, throw errors coded 08P01, 53200,
// 53400, 58P01, 57014 or "Connection terminated" from a database that answers, hold NUL in
// their error or result, bind 70,000 parameters, swallow a database error, wait on a row
// another connection holds locked, or are tombstones whose messageId function throws; some
// ids are sent 2-3 times. Both wrappers run (eachMessage with `messageId.from`, eachBatch
// with a bulk handler and `messageId.fallback`). The consumer must drain (a stall is
// reported with the stuck ids), and at the end every id must be in Postgres and the
// dead-letter topic exactly as its kind says: one ledger row and a processed key, or its
// dead letters with the right reason and a dead_lettered key; never applied twice, never
// lost, never redelivered endlessly, and the consumer never crashes.
//
// CI runs 1,500 messages. The long version, and a replay of a failed run (the report
// prints its seed):
//   INBOXKIT_LIVENESS_MESSAGES=20000 INBOXKIT_LIVENESS_SEED=<seed> pnpm exec vitest run --project kafka liveness
// INBOXKIT_LIVENESS_KINDS=transient_once,huge_bind (a comma list; ok is always in) checks
// some kinds alone; INBOXKIT_LIVENESS_STALL_MS (default 15000) is the no-progress window.
import { type KafkaRecordContext, runInboxConsumer } from '@inboxkit/kafka';
import { type Admin, logLevel } from 'kafkajs';
import { describe, expect, inject, it } from 'vitest';
import {
  awaitDrain,
  type BehaviourStep,
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
import { setUpKafkaFile } from './support/file-setup.ts';
import {
  consumerSettings,
  createFreshTopic,
  produce,
  readTopic,
  testKafka,
  topicSize,
  uniqueName,
} from './support/kafka-testkit.ts';

const settings = livenessSettings();
const setup = setUpKafkaFile('kafka_liveness');
const MODES = ['eachMessage', 'eachBatch'] as const;
const PER_MODE = Math.ceil(settings.messages / MODES.length);
const DEADLINE_MS = 60_000 + PER_MODE * 40;

/** Records of `topic` the group has not committed yet. */
async function unsettled(admin: Admin, groupId: string, topic: string): Promise<number> {
  const [ends, committed] = await Promise.all([
    admin.fetchTopicOffsets(topic),
    admin.fetchOffsets({ groupId, topics: [topic] }),
  ]);
  const done = new Map((committed[0]?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
  return ends.reduce((sum, p) => {
    const at = done.get(p.partition);
    const from = at === undefined || at < 0 ? Number(p.low) : at;
    return sum + Math.max(0, Number(p.high) - from);
  }, 0);
}

describe(`liveness (Kafka, ${settings.messages} messages, seed ${settings.seed})`, () => {
  it.each(MODES.map((mode, stream) => [mode, stream] as const))(
    '%s: every record ends processed or dead-lettered as its kind says, and the consumer drains',
    async (mode, stream) => {
      const { t, kit } = setup;
      const plan = livenessPlan(settings, { prefix: mode === 'eachMessage' ? 'lkm' : 'lkb', count: PER_MODE, stream });
      await createLockRows(t.db, plan);
      const { topic, dlq, groupId } = await createFreshTopic(kit.admin, {
        topic: `liveness-${mode}`,
        group: 'liveness',
        partitions: 4,
      });
      await produce(
        kit.producer,
        topic,
        plan.messages.map((m) =>
          m.kind === 'tombstone'
            ? { key: m.id, value: null, headers: { 'liveness-id': m.id } }
            : { id: m.id, key: m.id, value: m.body, headers: { 'liveness-id': m.id } },
        ),
      );

      const trace = new LivenessTrace();
      const consumerName = `liveness-${mode}`;
      const inbox = livenessInbox(t.db, consumerName, trace);
      const locks = new LockHolder(t.connect(4).pool);
      const behave = planBehaviour(plan, trace, locks);
      // Which id a paused offset belongs to, for the trace.
      const atOffset = new Map<string, string>();
      const seen = (partition: number, offset: string, lid: string | undefined) => {
        if (lid !== undefined) atOffset.set(`${partition}@${offset}`, lid);
        trace.delivered(lid);
      };
      // Deliveries are counted where the adapter asks for the id (tombstones: the function
      // throws before anything else runs) or decodes the value (every other record).
      const decode = (value: Buffer | null, context: KafkaRecordContext): LivenessBody => {
        if (value === null) return null as unknown as LivenessBody;
        seen(context.partition, context.record.offset, context.headers['liveness-id']);
        return JSON.parse(value.toString('utf8')) as LivenessBody;
      };
      const noIdForTombstones = (context: KafkaRecordContext): string | undefined => {
        if (context.record.value === null) {
          const lid = context.headers['liveness-id'];
          seen(context.partition, context.record.offset, lid);
          trace.event(lid, 'the messageId function threw (a tombstone)');
          throw new Error(`a tombstone has no id to derive (${context.headers['liveness-id']})`);
        }
        return context.headers['message-id'];
      };

      // The consumer's own client, whose error logs (an error thrown into kafkajs' run loop
      // shows nowhere else) go into the report.
      const kafkaErrors = new Map<string, number>();
      const kafka = testKafka(inject('kafkaBrokers'), uniqueName('liveness'), {
        logLevel: logLevel.ERROR,
        logCreator:
          () =>
          ({ namespace, label, log }) => {
            if (label !== 'ERROR') return;
            const error = typeof log.error === 'string' ? `: ${log.error}` : '';
            const line = printable(`${namespace}: ${log.message}${error}`);
            kafkaErrors.set(line, (kafkaErrors.get(line) ?? 0) + 1);
          },
      });
      const kafkaConsumer = kafka.consumer({ groupId, ...consumerSettings });
      kafkaConsumer.on(kafkaConsumer.events.CRASH, (event) => {
        trace.consumerProblems.push(`kafkajs consumer crashed: ${printable(event.payload.error.message)}`);
      });
      await kafkaConsumer.connect();
      await kafkaConsumer.subscribe({ topics: [topic], fromBeginning: true });
      const common = {
        inbox,
        kafka: kit.kafka,
        groupId,
        decode,
        commitIntervalMs: 200,
        pause: { minDelayMs: 200, maxDelayMs: 1000 },
      };
      const control =
        mode === 'eachMessage'
          ? await runInboxConsumer<TestDB, LivenessBody>(kafkaConsumer, {
              ...common,
              mode,
              partitionsConsumedConcurrently: 2,
              messageId: { from: noIdForTombstones },
              handler: async (trx, message) => {
                const step = await behave(trx, message.id, message.value);
                await insertRows(trx, [step]);
                return step.result;
              },
            })
          : await runInboxConsumer<TestDB, LivenessBody>(kafkaConsumer, {
              ...common,
              mode,
              maxBatchSize: 50,
              messageId: { header: 'message-id', fallback: noIdForTombstones },
              bulkHandler: async (trx, messages) => {
                const steps: BehaviourStep[] = [];
                for (const message of messages) steps.push(await behave(trx, message.id, message.value));
                await insertRows(trx, steps);
                return steps.map((s) => s.result);
              },
            });
      control.on('paused', (e) =>
        trace.event(atOffset.get(`${e.partition}@${e.offset}`), `partition paused (${e.reason}): ${e.error.message}`),
      );
      control.on('deadLettered', (e) =>
        trace.event(
          e.message.headers['liveness-id'],
          `published to the dead-letter topic (${e.outcome.status === 'conflict' ? 'payload_conflict' : e.outcome.reason})`,
        ),
      );

      const drain = await awaitDrain({
        remaining: () => unsettled(kit.admin, groupId, topic),
        stallMs: settings.stallMs,
        consuming: () => trace.consuming(),
        deadlineMs: DEADLINE_MS,
      });
      const shutdown = await within(20_000, 'close()', () => control.close());
      if (typeof shutdown === 'string') trace.consumerProblems.push(shutdown);
      await locks.settle();

      const deadLetters = new Map<string, string[]>();
      for (const record of await readTopic(kit.kafka, dlq, await topicSize(kit.admin, dlq))) {
        const lid = record.headers['liveness-id'] ?? record.headers['x-inboxkit-message-id'] ?? '?';
        deadLetters.set(lid, [...(deadLetters.get(lid) ?? []), record.headers['x-inboxkit-reason'] ?? '?']);
      }
      const result = verdict({
        title: `Kafka ${mode}`,
        plan,
        observed: { ...(await observeDatabase(t.db, plan, consumerName)), deadLetters },
        trace,
        drain,
        replay: replayCommand(settings, 'kafka'),
        extra: trace.consumerProblems,
        notes: [...kafkaErrors].map(([line, n]) => `kafkajs logged ${n}x: ${line}`),
      });
      console.info(result.report);
      expect(result.ok, result.report).toBe(true);
    },
    DEADLINE_MS + 120_000,
  );
});
