// The demo: payments over Kafka and RabbitMQ, delivered at least once, charged exactly once.
//
//   npm run demo                      (or: node examples/demo/demo.ts [--charges 2000])
//
// A producer sends N charge requests ({ chargeId, userId, amountCents }) to each broker, plus
// 30% re-sends with the same id (a client retrying after a timeout) and one poison request.
// A consumer process per broker writes the charges through the inbox; part-way through, each
// consumer is killed with SIGKILL and started again. At the end a query checks that every
// charge was applied exactly once, and the demo exits non-zero if not.
//
// Services come the way the tests get them: DATABASE_URL, AMQP_URL, KAFKA_BROKERS when set;
// testcontainers when a Docker engine answers; the machine's own services and the Kafka
// started from the Maven jars otherwise.
import { type ChildProcess, fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { migrateInbox } from '@inboxkit/core';
import { createPgKysely } from '@inboxkit/core/pg';
import amqp from 'amqplib';
import cliProgress from 'cli-progress';
import { Kafka, logLevel } from 'kafkajs';
import { sql } from 'kysely';
import pg from 'pg';
import { ensureKafka } from '../../test/support/kafka-broker.ts';
import { resolvePostgres, resolveRabbitMq } from '../../test/support/services.ts';
import type { ChargeRequest, ConsumerConfig, DemoDB } from './consumer.ts';

const { values: args } = parseArgs({
  options: {
    charges: { type: 'string', default: '2000' },
    'timeout-seconds': { type: 'string', default: '150' },
    'kill-at': { type: 'string', default: '0.4' },
  },
});
const CHARGES = Number(args.charges);
const TIMEOUT_MS = Number(args['timeout-seconds']) * 1000;
/** Share of the charges written when each consumer is killed (0 to 1). */
const KILL_AT = Number(args['kill-at']);
if (!Number.isInteger(CHARGES) || CHARGES < 10) {
  console.error('--charges must be a whole number of at least 10');
  process.exit(2);
}
const tty = process.stdout.isTTY === true;
const say = (line: string): void => console.log(line);
const started = Date.now();
const cleanup: Array<() => Promise<unknown>> = [];

// ---------------------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------------------
say('Setting up (the first run fetches Node, the npm packages and the Kafka jars; later runs reuse them)');
say('  waiting for Postgres...');
const postgres = await resolvePostgres();
if (postgres.stop) cleanup.push(postgres.stop);
say('  waiting for RabbitMQ...');
const rabbit = await resolveRabbitMq();
if (rabbit.stop) cleanup.push(rabbit.stop);
say('  waiting for Kafka (a single-node broker; its group coordinator takes a few seconds)...');
const kafkaService = await ensureKafka();
if (kafkaService.stop) cleanup.push(kafkaService.stop);

const run = randomBytes(3).toString('hex');
const database = `inboxkit_demo_${run}`;
{
  const admin = new pg.Client({ connectionString: postgres.url });
  await admin.connect();
  await admin.query(`CREATE DATABASE "${database}"`);
  await admin.end();
  cleanup.push(async () => {
    const c = new pg.Client({ connectionString: postgres.url });
    await c.connect();
    await c.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
    await c.end();
  });
}
const dbUrl = new URL(postgres.url);
dbUrl.pathname = `/${database}`;
const db = createPgKysely<DemoDB>({ connectionString: dbUrl.toString(), max: 2 });
cleanup.push(() => db.destroy());
const migrated = await migrateInbox(db as never);
if (migrated.error) throw migrated.error;
// No unique constraint on charge_id: a charge applied twice would show as two rows.
await sql`CREATE TABLE charges (id bigserial PRIMARY KEY, charge_id text NOT NULL, user_id text NOT NULL,
  amount_cents integer NOT NULL, via text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`.execute(db);

// ---------------------------------------------------------------------------------------
// The workload: N requests, 30% re-sends, one poison request, shuffled
// ---------------------------------------------------------------------------------------
function workload(prefix: string): { deliveries: ChargeRequest[]; expectedCents: number } {
  const requests: ChargeRequest[] = Array.from({ length: CHARGES }, (_, i) => ({
    chargeId: `${prefix}_ch_${String(i).padStart(6, '0')}`,
    userId: `user_${i % 97}`,
    amountCents: 100 + ((i * 37) % 4900),
  }));
  const deliveries = [...requests];
  for (let i = 0; i < Math.round(CHARGES * 0.3); i++) deliveries.push(requests[(i * 7) % CHARGES] as ChargeRequest);
  deliveries.push({ chargeId: `${prefix}_ch_poison`, userId: 'user_0', amountCents: -500 });
  for (let i = deliveries.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [deliveries[i], deliveries[j]] = [deliveries[j] as ChargeRequest, deliveries[i] as ChargeRequest];
  }
  return { deliveries, expectedCents: requests.reduce((sum, r) => sum + r.amountCents, 0) };
}

// ---------------------------------------------------------------------------------------
// Brokers: topic and queues of this run
// ---------------------------------------------------------------------------------------
const topic = `inboxkit-demo-charges-${run}`;
const kafka = new Kafka({ clientId: 'inboxkit-demo', brokers: kafkaService.brokers, logLevel: logLevel.NOTHING });
const kafkaAdmin = kafka.admin();
await kafkaAdmin.connect();
await kafkaAdmin.createTopics({
  topics: [
    { topic, numPartitions: 4, replicationFactor: 1 },
    { topic: `${topic}.dlq`, numPartitions: 1, replicationFactor: 1 },
  ],
  waitForLeaders: true,
});
cleanup.push(async () => {
  await kafkaAdmin.deleteTopics({ topics: [topic, `${topic}.dlq`] }).catch(() => {});
  await kafkaAdmin.disconnect();
});
const queue = `inboxkit-demo.charges.${run}`;
const deadLetterQueue = `${queue}.dlq`;
const amqpConnection = await amqp.connect(rabbit.url);
const amqpChannel = await amqpConnection.createConfirmChannel();
await amqpChannel.assertQueue(queue, { durable: true });
await amqpChannel.assertQueue(deadLetterQueue, { durable: true });
cleanup.push(async () => {
  await amqpChannel.deleteQueue(queue).catch(() => {});
  await amqpChannel.deleteQueue(deadLetterQueue).catch(() => {});
  await amqpConnection.close().catch(() => {});
});

// ---------------------------------------------------------------------------------------
// Consumers, each in a process of its own
// ---------------------------------------------------------------------------------------
type Broker = 'kafka' | 'rabbitmq';
interface Lane {
  readonly broker: Broker;
  readonly config: ConsumerConfig;
  readonly deliveries: ChargeRequest[];
  readonly expectedCents: number;
  child?: ChildProcess;
  duplicates: number;
  processed: number;
  written: number;
  killed: boolean;
  restarts: number;
  unexpectedExits: number;
}
const lanes: Lane[] = (['kafka', 'rabbitmq'] as const).map((broker) => {
  const { deliveries, expectedCents } = workload(broker === 'kafka' ? 'k' : 'r');
  const config: ConsumerConfig =
    broker === 'kafka'
      ? {
          broker,
          databaseUrl: dbUrl.toString(),
          kafkaBrokers: kafkaService.brokers,
          topic,
          groupId: `inboxkit-demo-${run}`,
        }
      : { broker, databaseUrl: dbUrl.toString(), amqpUrl: rabbit.url, queue, deadLetterQueue };
  return {
    broker,
    config,
    deliveries,
    expectedCents,
    duplicates: 0,
    processed: 0,
    written: 0,
    killed: false,
    restarts: 0,
    unexpectedExits: 0,
  };
});

let stopping = false;
function startConsumer(lane: Lane): Promise<void> {
  const child = fork(new URL('./consumer.ts', import.meta.url), [], {
    env: { ...process.env, DEMO_CONSUMER: JSON.stringify(lane.config) },
    execArgv: ['--disable-warning=TimeoutNegativeWarning'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  lane.child = child;
  return new Promise((resolve) => {
    child.on('message', (message: { ready?: boolean; processed?: number; duplicates?: number }) => {
      if (message.ready) resolve();
      lane.processed += message.processed ?? 0;
      lane.duplicates += message.duplicates ?? 0;
    });
    // Like a process supervisor: a consumer that dies on its own is started again, and said.
    child.once('exit', (code, signal) => {
      if (lane.child !== child || stopping || signal === 'SIGKILL') return;
      console.error(`  ${lane.broker}: consumer exited on its own (${code ?? signal}); starting it again`);
      lane.unexpectedExits++;
      void startConsumer(lane).then(resolve);
    });
  });
}
cleanup.push(async () => {
  for (const lane of lanes) lane.child?.kill('SIGKILL');
});

say(`Running: ${CHARGES} charges per broker, ${Math.round(CHARGES * 0.3)} re-sends, 1 poison request`);
await Promise.all(lanes.map((lane) => startConsumer(lane)));

// Produce everything up front: the consumers work through it while we watch.
const producer = kafka.producer({ idempotent: false });
await producer.connect();
const kafkaLane = lanes[0] as Lane;
const rabbitLane = lanes[1] as Lane;
for (let i = 0; i < kafkaLane.deliveries.length; i += 500) {
  await producer.send({
    topic,
    acks: -1,
    messages: kafkaLane.deliveries.slice(i, i + 500).map((request) => ({
      key: request.userId,
      value: JSON.stringify(request),
      headers: { 'message-id': request.chargeId },
    })),
  });
}
await producer.disconnect();
for (const request of rabbitLane.deliveries) {
  amqpChannel.sendToQueue(queue, Buffer.from(JSON.stringify(request)), {
    messageId: request.chargeId,
    contentType: 'application/json',
    persistent: true,
  });
}
await amqpChannel.waitForConfirms();

// ---------------------------------------------------------------------------------------
// Watch: progress, one SIGKILL per consumer part-way, until every charge is written
// ---------------------------------------------------------------------------------------
const bars = tty
  ? new cliProgress.MultiBar(
      {
        format: ' {broker} [{bar}] {value}/{total} charges | duplicates suppressed {duplicates} | {note}',
        hideCursor: true,
        clearOnComplete: false,
      },
      cliProgress.Presets.shades_classic,
    )
  : undefined;
const bar = new Map(
  lanes.map((lane) => [
    lane.broker,
    bars?.create(CHARGES, 0, { broker: lane.broker.padEnd(8), duplicates: 0, note: '' }),
  ]),
);
let lastPlain = 0;

async function writtenPerBroker(): Promise<Record<string, number>> {
  const { rows } = await sql<{ via: string; n: string }>`SELECT via, count(DISTINCT charge_id) AS n FROM charges
    WHERE amount_cents > 0 GROUP BY via`.execute(db);
  return Object.fromEntries(rows.map((r) => [r.via, Number(r.n)]));
}

const deadline = Date.now() + TIMEOUT_MS;
for (;;) {
  const written = await writtenPerBroker();
  for (const lane of lanes) {
    lane.written = written[lane.broker] ?? 0;
    if (!lane.killed && lane.written >= CHARGES * KILL_AT) {
      lane.killed = true;
      lane.child?.kill('SIGKILL');
      if (!tty) say(`  ${lane.broker}: consumer killed with SIGKILL at ${lane.written} charges; restarting it`);
      lane.restarts++;
      void startConsumer(lane); // do not hold up the other lane while this one restarts
    }
    bar.get(lane.broker)?.update(lane.written, {
      duplicates: lane.duplicates,
      note: lane.killed ? 'killed once and restarted' : '',
    });
  }
  if (!tty && Date.now() - lastPlain > 2000) {
    lastPlain = Date.now();
    say(`  progress: ${lanes.map((l) => `${l.broker} ${l.written}/${CHARGES}`).join(', ')}`);
  }
  if (lanes.every((lane) => lane.written >= CHARGES) || Date.now() > deadline) break;
  await new Promise((resolve) => setTimeout(resolve, 250));
}
// Let the poison requests reach their dead-letter destinations.
const deadLettered = async (lane: Lane): Promise<number> => {
  const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM processed_messages
    WHERE consumer = ${`demo.payments.${lane.broker}`} AND status = 'dead_lettered'`.execute(db);
  return Number(rows[0]?.n);
};
while (Date.now() < deadline && (await Promise.all(lanes.map(deadLettered))).some((n) => n < 1)) {
  await new Promise((resolve) => setTimeout(resolve, 250));
}
bars?.stop();

// Graceful stop: in-flight work finishes, offsets are committed, channels closed.
stopping = true;
await Promise.all(
  lanes.map(
    (lane) =>
      new Promise<void>((resolve) => {
        const child = lane.child;
        if (!child || child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 15_000).unref();
      }),
  ),
);

// ---------------------------------------------------------------------------------------
// The check, by query
// ---------------------------------------------------------------------------------------
const dlqKafka = await (async () => {
  const offsets = await kafkaAdmin.fetchTopicOffsets(`${topic}.dlq`);
  return offsets.reduce((sum, p) => sum + Number(p.high) - Number(p.low), 0);
})();
const dlqRabbit = (await amqpChannel.checkQueue(deadLetterQueue)).messageCount;
const { rows: totals } = await sql<{ via: string; rows: string; distinct_ids: string; cents: string }>`
  SELECT via, count(*) AS rows, count(DISTINCT charge_id) AS distinct_ids, coalesce(sum(amount_cents), 0) AS cents
  FROM charges GROUP BY via`.execute(db);
const table: Record<string, Record<string, number | string>> = {};
let exact = true;
for (const lane of lanes) {
  const row = totals.find((r) => r.via === lane.broker);
  const rows = Number(row?.rows ?? 0);
  const distinct = Number(row?.distinct_ids ?? 0);
  const cents = Number(row?.cents ?? 0);
  const dead = await deadLettered(lane);
  const dlq = lane.broker === 'kafka' ? dlqKafka : dlqRabbit;
  const ok = rows === CHARGES && distinct === CHARGES && cents === lane.expectedCents && dead === 1 && dlq >= 1;
  exact &&= ok;
  table[lane.broker] = {
    'messages delivered': lane.deliveries.length,
    'consumer SIGKILLed and restarted': lane.restarts,
    'consumer exits on its own': lane.unexpectedExits,
    'duplicates suppressed': lane.duplicates,
    'charges written': rows,
    'distinct charge ids': distinct,
    'total charged (cents)': cents,
    'expected (cents)': lane.expectedCents,
    'dead-lettered': dead,
    'in the dead-letter destination': dlq,
    'exactly once': ok ? 'yes' : 'NO',
  };
}
console.log('');
console.table(table);
console.log(
  exact
    ? `OK: every charge was applied exactly once on both brokers (checked by query), in ${Math.round((Date.now() - started) / 1000)} s.`
    : 'FAILED: some charge was lost or applied twice; see the table above.',
);

for (const step of cleanup.reverse()) await step().catch(() => {});
process.exit(exact ? 0 : 1);
