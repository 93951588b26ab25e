// Kafka benchmark: what the inboxkit wrappers cost over plain kafkajs consumers doing the same
// database work.
//
//   npm run bench -- kafka          (or, after `pnpm run build`: node bench/kafka.ts
//                                    [--messages 50000] [--partitions 4] [--rounds 1]
//                                    [--max-batch-size N] [--only 'regexp of mode names'])
//
// `messages` small records (a message-id header and a ~40-byte JSON value) are produced once
// to a topic with `partitions` partitions; each mode then consumes the whole topic with a
// fresh consumer group and a handler that inserts one row per record into `bench_rows`:
// - plain eachMessage: kafkajs eachMessage, the insert in its own transaction, no dedup;
// - plain eachBatch: kafkajs eachBatch, the batch's rows in one bulk insert in one
//   transaction, no dedup;
// - inboxkit eachMessage: `runInboxConsumer` mode eachMessage, the same insert through `trx`;
// - inboxkit eachBatch: `runInboxConsumer` mode eachBatch with a per-batch (bulk) handler
//   doing the same bulk insert.
// Each inboxkit consumer runs beside its hand-written twin, the same consumer with the dedup
// written by hand (the floor of any effectively-once consumer: one more insert per record),
// and the targets compare the two (issue 11: at least 0.9x). Diagnostic rows tell where a gap
// goes: the inbox called from a plain kafkajs consumer without the adapter, and the eachBatch
// wrapper with transactions as large as the fetched batches (the twin's), i.e. without the
// `maxBatchSize` cap of 1000 records.
// The clock runs from the first record handed to a handler to the last one done (group join
// excluded). Brokers: KAFKA_BROKERS (default 127.0.0.1:9092, `scripts/kafka.sh start`);
// Postgres: DATABASE_URL (default the local server). Prints a table, saves bench/results/kafka.json.
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { createInbox, migrateInbox } from '@inboxkit/core';
import { createPgPool } from '@inboxkit/core/pg';
import { type KafkaInboxControl, runInboxConsumer } from '@inboxkit/kafka';
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
    messages: { type: 'string', default: '50000' },
    partitions: { type: 'string', default: '4' },
    rounds: { type: 'string', default: '1' },
    'max-batch-size': { type: 'string', default: '' },
    only: { type: 'string', default: '' },
  },
});
const ONLY = args.only;
const N = Number(args.messages);
const PARTITIONS = Number(args.partitions);
const ROUNDS = Number(args.rounds);
const MAX_BATCH_SIZE = args['max-batch-size'] === '' ? undefined : Number(args['max-batch-size']);
const BROKERS = (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
/** Load averages (1, 5, 15 min) at the start: the machine is shared. */
const LOAD_BEFORE = loadavg().map((l) => Number(l.toFixed(2)));

interface BenchDB {
  bench_rows: { id: string; amount: number };
}

const INSERT_ONE = 'INSERT INTO bench_rows (id, amount) VALUES ($1, $2)';
const INSERT_MANY = 'INSERT INTO bench_rows (id, amount) SELECT * FROM unnest($1::text[], $2::int[])';
/** The dedup a hand-written effectively-once batch consumer needs: the batch's keys in one statement. */
const CLAIM_ONE = `INSERT INTO processed_messages (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1`;
const CLAIM_MANY = `INSERT INTO processed_messages (consumer, message_id)
SELECT $1, id FROM unnest($2::text[]) AS k(id) ORDER BY 1 ON CONFLICT DO NOTHING RETURNING message_id`;

// ---- setup ----------------------------------------------------------------------------------

const url = await benchDatabase('inboxkit_bench_kafka');
const pool = createPgPool({ connectionString: url, max: 4 });
const db = new Kysely<BenchDB>({ dialect: new PostgresDialect({ pool }) });
await db.executeQuery(CompiledQuery.raw('CREATE TABLE bench_rows (id text PRIMARY KEY, amount integer NOT NULL)'));
{
  const { error } = await migrateInbox(db as unknown as Kysely<unknown>);
  if (error) throw error;
}

const kafka = new Kafka({ clientId: 'inboxkit-bench', brokers: BROKERS, logLevel: logLevel.NOTHING });
const admin = kafka.admin();
await admin.connect();
const producer = kafka.producer();
await producer.connect();
const topic = `inboxkit-bench-${Date.now()}`;
await admin.createTopics({
  topics: [
    { topic, numPartitions: PARTITIONS },
    { topic: `${topic}.dlq`, numPartitions: 1 },
  ],
  waitForLeaders: true,
});
{
  const started = performance.now();
  for (let i = 0; i < N; i += 1000) {
    const messages = [];
    for (let j = i; j < Math.min(N, i + 1000); j++) {
      const id = `m-${j}`;
      messages.push({ key: id, value: JSON.stringify({ id, amount: j % 1000 }), headers: { 'message-id': id } });
    }
    await producer.send({ topic, acks: -1, messages });
  }
  process.stderr.write(`produced ${N} records to ${topic} in ${Math.round(performance.now() - started)} ms\n`);
}

async function reset(): Promise<void> {
  await db.executeQuery(CompiledQuery.raw('TRUNCATE bench_rows, processed_messages, processed_messages_attempts'));
  await db.executeQuery(CompiledQuery.raw('VACUUM ANALYZE bench_rows'));
  await db.executeQuery(CompiledQuery.raw('VACUUM ANALYZE processed_messages'));
}

// ---- one run --------------------------------------------------------------------------------

type Mode = (kafkaConsumer: Consumer, clock: RecordClock, groupId: string) => Promise<KafkaInboxControl | undefined>;

interface Charge {
  id: string;
  amount: number;
}

const modes: Record<string, Mode> = {
  'plain kafkajs eachMessage (own transaction, no dedup)': async (kafkaConsumer, clock) => {
    await kafkaConsumer.run({
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
  // Diagnostic: the floor of an effectively-once per-record consumer written by hand.
  'hand-written eachMessage with dedup (claim + insert per record)': async (kafkaConsumer, clock, groupId) => {
    await kafkaConsumer.run({
      eachMessage: async ({ message }) => {
        clock.start();
        const { id, amount } = JSON.parse(String(message.value)) as Charge;
        await db.transaction().execute(async (trx) => {
          const { rows } = await trx.executeQuery(CompiledQuery.raw(CLAIM_ONE, [groupId, id]));
          if (rows.length === 1) await trx.executeQuery(CompiledQuery.raw(INSERT_ONE, [id, amount]));
        });
        clock.add(1);
      },
    });
    return undefined;
  },
  // Diagnostic: the inbox without the adapter, to tell the adapter's cost from the inbox's.
  'kafkajs eachMessage + inbox.process (no adapter)': async (kafkaConsumer, clock, groupId) => {
    const inbox = createInbox({ db, consumer: groupId });
    await kafkaConsumer.run({
      eachMessage: async ({ message }) => {
        clock.start();
        const id = String(message.headers?.['message-id']);
        const value = JSON.parse(String(message.value)) as Charge;
        const outcome = await inbox.process({ id, payload: message.value }, async (trx) => {
          await trx.executeQuery(CompiledQuery.raw(INSERT_ONE, [value.id, value.amount]));
        });
        if (outcome.status !== 'processed') throw new Error(`unexpected ${outcome.status}`);
        clock.add(1);
      },
    });
    return undefined;
  },
  'inboxkit eachMessage': async (kafkaConsumer, clock, groupId) => {
    const control = await runInboxConsumer<BenchDB, Charge>(kafkaConsumer, {
      mode: 'eachMessage',
      inbox: createInbox({ db, consumer: groupId }),
      kafka,
      groupId,
      handler: async (trx, message) => {
        clock.start();
        await trx.executeQuery(CompiledQuery.raw(INSERT_ONE, [message.value.id, message.value.amount]));
      },
    });
    control.on('settled', () => clock.add(1));
    return control;
  },
  'plain kafkajs eachBatch (one bulk insert per batch, no dedup)': async (kafkaConsumer, clock) => {
    await kafkaConsumer.run({
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
  // Diagnostic: the floor of an effectively-once batch consumer written by hand (the keys
  // claimed in one statement, the new rows in one bulk insert, one transaction per batch).
  'hand-written eachBatch with dedup (claim + bulk insert per batch)': async (kafkaConsumer, clock, groupId) => {
    await kafkaConsumer.run({
      eachBatch: async ({ batch }) => {
        clock.start();
        const values = batch.messages.map((message) => JSON.parse(String(message.value)) as Charge);
        await db.transaction().execute(async (trx) => {
          const { rows } = await trx.executeQuery<{ message_id: string }>(
            CompiledQuery.raw(CLAIM_MANY, [groupId, values.map((v) => v.id)]),
          );
          const fresh = new Set(rows.map((r) => r.message_id));
          const rowsToInsert = values.filter((v) => fresh.has(v.id));
          await trx.executeQuery(
            CompiledQuery.raw(INSERT_MANY, [rowsToInsert.map((v) => v.id), rowsToInsert.map((v) => v.amount)]),
          );
        });
        clock.add(batch.messages.length);
      },
    });
    return undefined;
  },
  // Diagnostic: the inbox's batch entry point without the adapter, one call per fetched batch.
  'kafkajs eachBatch + inbox.processBulk (no adapter)': async (kafkaConsumer, clock, groupId) => {
    const inbox = createInbox({ db, consumer: groupId });
    await kafkaConsumer.run({
      eachBatch: async ({ batch }) => {
        clock.start();
        const messages = batch.messages.map((message) => ({
          id: String(message.headers?.['message-id']),
          payload: message.value,
          value: JSON.parse(String(message.value)) as Charge,
        }));
        await inbox.processBulk(messages, async (trx, fresh) => {
          await trx.executeQuery(
            CompiledQuery.raw(INSERT_MANY, [fresh.map((m) => m.value.id), fresh.map((m) => m.value.amount)]),
          );
        });
        clock.add(batch.messages.length);
      },
    });
    return undefined;
  },
  'inboxkit eachBatch (per-batch bulk handler)': (kafkaConsumer, clock, groupId) =>
    inboxEachBatchMode(kafkaConsumer, clock, groupId, MAX_BATCH_SIZE),
  // Diagnostic: the wrapper with the twin's transactions (a whole fetched batch each), to
  // tell the cost of the maxBatchSize cap from the rest of the adapter's.
  'inboxkit eachBatch, uncapped (maxBatchSize above any fetched batch)': (kafkaConsumer, clock, groupId) =>
    inboxEachBatchMode(kafkaConsumer, clock, groupId, 1_000_000),
};

async function inboxEachBatchMode(
  kafkaConsumer: Consumer,
  clock: RecordClock,
  groupId: string,
  maxBatchSize: number | undefined,
): Promise<KafkaInboxControl> {
  const control = await runInboxConsumer<BenchDB, Charge>(kafkaConsumer, {
    mode: 'eachBatch',
    inbox: createInbox({ db, consumer: groupId }),
    kafka,
    groupId,
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
}

let run = 0;
/** This process's CPU time per record, in microseconds (client, kafkajs and driver; not Postgres'). */
const cpuPerRecord = new Map<string, number[]>();
async function measure(name: string, mode: Mode): Promise<number> {
  await reset();
  const groupId = `inboxkit-bench-${++run}-${Date.now()}`;
  const kafkaConsumer = kafka.consumer({ groupId });
  await kafkaConsumer.connect();
  await kafkaConsumer.subscribe({ topics: [topic], fromBeginning: true });
  const clock = new RecordClock(N);
  const cpuBefore = process.cpuUsage();
  const control = await mode(kafkaConsumer, clock, groupId);
  const incidents = { paused: 0, commitFailed: 0, joins: control?.assignment().length ? 1 : 0 };
  control?.on('paused', () => incidents.paused++);
  control?.on('commitFailed', () => incidents.commitFailed++);
  control?.on('assigned', () => incidents.joins++);
  await clock.finished;
  const cpu = process.cpuUsage(cpuBefore);
  if (control !== undefined && (incidents.paused > 0 || incidents.commitFailed > 0 || incidents.joins > 1)) {
    process.stderr.write(`    ${name}: ${JSON.stringify(incidents)}\n`);
  }
  cpuPerRecord.set(name, [...(cpuPerRecord.get(name) ?? []), (cpu.user + cpu.system) / N]);
  if (control !== undefined) await control.close();
  else await kafkaConsumer.disconnect();
  const { rows } = await db.executeQuery<{ n: string }>(CompiledQuery.raw('SELECT count(*) AS n FROM bench_rows'));
  if (Number(rows[0]?.n) !== N) throw new Error(`${name}: ${rows[0]?.n} rows instead of ${N}`);
  return clock.rate;
}

// ---- all runs -------------------------------------------------------------------------------

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
const targets: Target[] = [
  {
    target: 'inboxkit eachMessage at least 0.9x of its hand-written twin (claim + insert per record)',
    value: ratio('inboxkit eachMessage', 'hand-written eachMessage with dedup'),
    limit: 0.9,
    higherIsBetter: true,
  },
  {
    target: 'inboxkit eachBatch at least 0.9x of its hand-written bulk twin (claim + bulk insert per batch)',
    value: ratio('inboxkit eachBatch (', 'hand-written eachBatch with dedup'),
    limit: 0.9,
    higherIsBetter: true,
  },
];
const breakdown = {
  eachMessageDedupFloorOverPlain: ratio('plain kafkajs eachMessage', 'hand-written eachMessage with dedup'),
  eachMessageInboxOverTwin: ratio('kafkajs eachMessage + inbox.process', 'hand-written eachMessage with dedup'),
  eachMessageAdapterOverInbox: ratio('inboxkit eachMessage', 'kafkajs eachMessage + inbox.process'),
  eachBatchDedupFloorOverPlain: ratio('plain kafkajs eachBatch', 'hand-written eachBatch with dedup'),
  eachBatchProcessBulkOverTwin: ratio('kafkajs eachBatch + inbox.processBulk', 'hand-written eachBatch with dedup'),
  eachBatchUncappedOverProcessBulk: ratio('inboxkit eachBatch, uncapped', 'kafkajs eachBatch + inbox.processBulk'),
  eachBatchCappedOverUncapped: ratio('inboxkit eachBatch (', 'inboxkit eachBatch, uncapped'),
};
const x = (value: number) => `${value.toFixed(2)}x`;
const cpu = Object.fromEntries([...cpuPerRecord].map(([name, values]) => [name, Math.round(median(values))]));
printTable(figures, targets, [
  `${N} records, ${PARTITIONS} partitions, ${ROUNDS} round(s), median rates; ratios are medians of per-round ratios (a/b, higher is better for a); maxBatchSize ${MAX_BATCH_SIZE ?? 'default (1000)'}; load average at the start ${LOAD_BEFORE.join(' ')}, at the end ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
  `eachMessage: the dedup statement costs the twin ${x(breakdown.eachMessageDedupFloorOverPlain)} of plain; inbox.process runs at ${x(breakdown.eachMessageInboxOverTwin)} of the twin; the adapter at ${x(breakdown.eachMessageAdapterOverInbox)} of inbox.process`,
  `eachBatch: the dedup rows cost the twin ${x(breakdown.eachBatchDedupFloorOverPlain)} of plain; processBulk per fetched batch runs at ${x(breakdown.eachBatchProcessBulkOverTwin)} of the twin; the uncapped wrapper at ${x(breakdown.eachBatchUncappedOverProcessBulk)} of processBulk; the 1000-record cap at ${x(breakdown.eachBatchCappedOverUncapped)} of uncapped`,
  `client CPU per record (µs, this process, median): ${Object.entries(cpu)
    .map(([name, us]) => `${name.split(' (')[0]} ${us}`)
    .join('; ')}`,
]);
saveResults('kafka', {
  settings: {
    messages: N,
    partitions: PARTITIONS,
    rounds: ROUNDS,
    maxBatchSize: MAX_BATCH_SIZE ?? 'default',
    brokers: BROKERS,
    cpus: cpus().length,
    loadAverageAtStart: LOAD_BEFORE,
    loadAverageAtEnd: loadavg().map((l) => Number(l.toFixed(2))),
    command: `node bench/kafka.ts ${process.argv.slice(2).join(' ')}`.trim(),
  },
  figures,
  samples: Object.fromEntries([...samples].map(([name, rates]) => [name, rates.map((r) => Math.round(r))])),
  targets,
  breakdown,
  clientCpuMicrosPerRecord: cpu,
});
process.exit(0);
