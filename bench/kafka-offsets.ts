// Kafka offsets stored in Postgres (`dedup: 'offsets'`): what the mode costs over plain
// kafkajs consumers doing the same database work with no dedup at all (issue 14).
//
//   npm run bench -- kafka-offsets   (or, after `pnpm run build`: node bench/kafka-offsets.ts
//                                     [--messages 20000] [--partitions 4] [--rounds 3]
//                                     [--only 'regexp of mode names'] [--label name])
//
// `messages` small records (a message-id header and a ~40-byte JSON value) are produced once
// to a topic with `partitions` partitions; each mode then consumes the whole topic with a
// fresh consumer group and a handler that inserts one row per record into `bench_rows`:
// - plain eachMessage: kafkajs eachMessage, the insert in its own transaction, no dedup;
// - inboxkit eachMessage, dedup offsets: the same insert through `trx`, the partition's
//   offset locked and moved in the same transaction;
// - plain eachBatch: kafkajs eachBatch, the batch's rows in one bulk insert in one
//   transaction, no dedup;
// - inboxkit eachBatch, dedup offsets: a bulk handler doing the same bulk insert, the
//   offset locked and moved in the same transaction (and, as a diagnostic, `'offsets+ids'`,
//   which claims the ids too).
// Targets: eachBatch at least 0.77x of plain (within 1.3x), eachMessage at least 0.83x of
// plain (within 1.2x). The clock runs from the first record handed to a handler to the last
// one done (group join excluded); each round runs the modes back to back and the ratios are
// medians of per-round ratios. Prints a table, saves bench/results/kafka-offsets.json
// (kafka-offsets-<label>.json with --label).
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { createInbox, migrateInbox } from '@inboxkit/core';
import { createPgPool } from '@inboxkit/core/pg';
import { type KafkaDedup, type KafkaInboxControl, migrateKafkaOffsets, runInboxConsumer } from '@inboxkit/kafka';
import { type Consumer, Kafka, logLevel } from 'kafkajs';
import { CompiledQuery, Kysely, PostgresDialect } from 'kysely';
import {
  benchDatabase,
  type Figure,
  median,
  pairedRatio,
  printTable,
  RecordClock,
  sampleRounds,
  saveResults,
  type Target,
} from './support.ts';

const { values: args } = parseArgs({
  options: {
    messages: { type: 'string', default: '20000' },
    partitions: { type: 'string', default: '4' },
    rounds: { type: 'string', default: '3' },
    only: { type: 'string', default: '' },
    label: { type: 'string', default: '' },
  },
});
const ONLY = args.only;
const N = Number(args.messages);
const PARTITIONS = Number(args.partitions);
const ROUNDS = Number(args.rounds);
const BROKERS = (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
const LOAD_BEFORE = loadavg().map((l) => Number(l.toFixed(2)));

interface BenchDB {
  bench_rows: { id: string; amount: number };
}

const INSERT_ONE = 'INSERT INTO bench_rows (id, amount) VALUES ($1, $2)';
const INSERT_MANY = 'INSERT INTO bench_rows (id, amount) SELECT * FROM unnest($1::text[], $2::int[])';

const url = await benchDatabase('inboxkit_bench_kafka_offsets');
const pool = createPgPool({ connectionString: url, max: 4 });
const db = new Kysely<BenchDB>({ dialect: new PostgresDialect({ pool }) });
await db.executeQuery(CompiledQuery.raw('CREATE TABLE bench_rows (id text PRIMARY KEY, amount integer NOT NULL)'));
for (const { error } of [
  await migrateInbox(db as unknown as Kysely<unknown>),
  await migrateKafkaOffsets(db as unknown as Kysely<unknown>),
]) {
  if (error) throw error;
}

const kafka = new Kafka({ clientId: 'inboxkit-bench-offsets', brokers: BROKERS, logLevel: logLevel.NOTHING });
const admin = kafka.admin();
await admin.connect();
const producer = kafka.producer();
await producer.connect();
const topic = `inboxkit-bench-offsets-${Date.now()}`;
await admin.createTopics({
  topics: [
    { topic, numPartitions: PARTITIONS },
    { topic: `${topic}.dlq`, numPartitions: 1 },
  ],
  waitForLeaders: true,
});
for (let i = 0; i < N; i += 1000) {
  const messages = [];
  for (let j = i; j < Math.min(N, i + 1000); j++) {
    const id = `m-${j}`;
    messages.push({ key: id, value: JSON.stringify({ id, amount: j % 1000 }), headers: { 'message-id': id } });
  }
  await producer.send({ topic, acks: -1, messages });
}

async function reset(): Promise<void> {
  await db.executeQuery(
    CompiledQuery.raw('TRUNCATE bench_rows, processed_messages, processed_messages_attempts, kafka_offsets'),
  );
  await db.executeQuery(CompiledQuery.raw('VACUUM ANALYZE bench_rows'));
}

type Mode = (consumer: Consumer, clock: RecordClock, groupId: string) => Promise<KafkaInboxControl | undefined>;

interface Charge {
  id: string;
  amount: number;
}

const eachMessageOffsets =
  (dedup: KafkaDedup): Mode =>
  async (consumer, clock, groupId) => {
    const control = await runInboxConsumer<BenchDB, Charge>(consumer, {
      mode: 'eachMessage',
      inbox: createInbox({ db, consumer: groupId }),
      kafka,
      groupId,
      dedup,
      handler: async (trx, message) => {
        clock.start();
        await trx.executeQuery(CompiledQuery.raw(INSERT_ONE, [message.value.id, message.value.amount]));
      },
    });
    control.on('settled', () => clock.add(1));
    return control;
  };

const eachBatchOffsets =
  (dedup: KafkaDedup, maxBatchSize?: number): Mode =>
  async (consumer, clock, groupId) => {
    const control = await runInboxConsumer<BenchDB, Charge>(consumer, {
      mode: 'eachBatch',
      inbox: createInbox({ db, consumer: groupId }),
      kafka,
      groupId,
      dedup,
      ...(maxBatchSize === undefined ? {} : { maxBatchSize }),
      bulkHandler: async (trx, messages) => {
        clock.start();
        await trx.executeQuery(
          CompiledQuery.raw(INSERT_MANY, [messages.map((m) => m.value.id), messages.map((m) => m.value.amount)]),
        );
      },
    });
    control.on('settled', () => clock.add(1));
    return control;
  };

const modes: Record<string, Mode> = {
  'plain kafkajs eachMessage (own transaction, no dedup)': async (consumer, clock) => {
    await consumer.run({
      eachMessage: async ({ message }) => {
        clock.start();
        const { id, amount } = JSON.parse(String(message.value)) as Charge;
        await db.transaction().execute(async (trx) => {
          await trx.executeQuery(CompiledQuery.raw(INSERT_ONE, [id, amount]));
        });
        clock.add(1);
      },
    });
    return undefined;
  },
  'inboxkit eachMessage, dedup offsets': eachMessageOffsets('offsets'),
  'plain kafkajs eachBatch (one bulk insert per batch, no dedup)': async (consumer, clock) => {
    await consumer.run({
      eachBatch: async ({ batch }) => {
        clock.start();
        const ids: string[] = [];
        const amounts: number[] = [];
        for (const message of batch.messages) {
          const { id, amount } = JSON.parse(String(message.value)) as Charge;
          ids.push(id);
          amounts.push(amount);
        }
        await db.transaction().execute(async (trx) => {
          await trx.executeQuery(CompiledQuery.raw(INSERT_MANY, [ids, amounts]));
        });
        clock.add(batch.messages.length);
      },
    });
    return undefined;
  },
  // One bulk insert per fetched batch, as the plain consumer does: maxBatchSize above any
  // fetched batch (the default, 1000, splits a fetched batch into several transactions).
  'inboxkit eachBatch, dedup offsets (one bulk insert per fetched batch)': eachBatchOffsets('offsets', 1_000_000),
  // Diagnostics: the default maxBatchSize (1000 records per transaction); the ids claimed too.
  'inboxkit eachBatch, dedup offsets, maxBatchSize 1000 (default)': eachBatchOffsets('offsets'),
  'inboxkit eachBatch, dedup offsets+ids (one bulk insert per fetched batch)': eachBatchOffsets(
    'offsets+ids',
    1_000_000,
  ),
};

let run = 0;
async function measure(name: string, mode: Mode): Promise<number> {
  await reset();
  const groupId = `inboxkit-bench-offsets-${++run}-${Date.now()}`;
  const consumer = kafka.consumer({ groupId });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  const clock = new RecordClock(N);
  const control = await mode(consumer, clock, groupId);
  const incidents = { paused: 0, commitFailed: 0 };
  control?.on('paused', () => incidents.paused++);
  control?.on('commitFailed', () => incidents.commitFailed++);
  await clock.finished;
  if (incidents.paused > 0 || incidents.commitFailed > 0) {
    process.stderr.write(`    ${name}: ${JSON.stringify(incidents)}\n`);
  }
  if (control !== undefined) await control.close();
  else await consumer.disconnect();
  const { rows } = await db.executeQuery<{ n: string }>(CompiledQuery.raw('SELECT count(*) AS n FROM bench_rows'));
  if (Number(rows[0]?.n) !== N) throw new Error(`${name}: ${rows[0]?.n} rows instead of ${N}`);
  return clock.rate;
}

// A warm-up read of the whole topic, not timed: the first consumer of a fresh topic runs
// slower (the broker's and the page cache's), whichever mode it is.
{
  const warmUp = 'plain kafkajs eachBatch (one bulk insert per batch, no dedup)';
  await measure(warmUp, modes[warmUp] as Mode);
}
const samples = await sampleRounds(modes, { rounds: ROUNDS, only: ONLY }, measure);
await producer.disconnect();
await admin.deleteTopics({ topics: [topic, `${topic}.dlq`] }).catch(() => {});
await admin.disconnect();
await db.destroy();

const figures: Figure[] = [...samples].map(([name, rates]) => ({
  name,
  concurrency: 1,
  messagesPerSec: Math.round(median(rates)),
}));
const ratio = (a: string, b: string) => pairedRatio(samples, a, b);
const allTargets: Target[] = [
  {
    target: 'inboxkit eachBatch, dedup offsets, at least 0.77x of plain kafkajs eachBatch (within 1.3x)',
    value: ratio('inboxkit eachBatch, dedup offsets (one', 'plain kafkajs eachBatch'),
    limit: 0.77,
    higherIsBetter: true,
  },
  {
    target: 'inboxkit eachMessage, dedup offsets, at least 0.83x of plain kafkajs eachMessage (within 1.2x)',
    value: ratio('inboxkit eachMessage, dedup offsets', 'plain kafkajs eachMessage'),
    limit: 0.83,
    higherIsBetter: true,
  },
];
// Only the targets whose modes ran (see --only).
const targets = allTargets.filter((target) => Number.isFinite(target.value));
const breakdown = {
  eachBatchDefaultCapOverPlain: ratio(
    'inboxkit eachBatch, dedup offsets, maxBatchSize 1000',
    'plain kafkajs eachBatch',
  ),
  eachBatchOffsetsAndIdsOverPlain: ratio('inboxkit eachBatch, dedup offsets+ids', 'plain kafkajs eachBatch'),
};
printTable(figures, targets, [
  `${N} records, ${PARTITIONS} partitions, ${ROUNDS} round(s), median rates; ratios are medians of per-round ratios; load average at the start ${LOAD_BEFORE.join(' ')}, at the end ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
  `eachBatch with the default maxBatchSize (1000): ${breakdown.eachBatchDefaultCapOverPlain.toFixed(2)}x of plain; with 'offsets+ids' (ids claimed too): ${breakdown.eachBatchOffsetsAndIdsOverPlain.toFixed(2)}x of plain`,
]);
saveResults(args.label === '' ? 'kafka-offsets' : `kafka-offsets-${args.label}`, {
  settings: {
    messages: N,
    partitions: PARTITIONS,
    rounds: ROUNDS,
    brokers: BROKERS,
    cpus: cpus().length,
    loadAverageAtStart: LOAD_BEFORE,
    loadAverageAtEnd: loadavg().map((l) => Number(l.toFixed(2))),
    command: `node bench/kafka-offsets.ts ${process.argv.slice(2).join(' ')}`.trim(),
  },
  figures,
  samples: Object.fromEntries([...samples].map(([name, rates]) => [name, rates.map((r) => Math.round(r))])),
  targets,
  breakdown,
});
process.exit(0);
