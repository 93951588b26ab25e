// The demo: payments over Kafka and RabbitMQ, delivered at least once, charged exactly once.
//
//   npm run demo                      (or: node examples/demo/demo.ts [--charges 2000])
//
// A producer sends N charge requests ({ chargeId, userId, amountCents }) to each broker, plus
// 30% re-sends with the same id (a client retrying after a timeout) and one poison request.
// A consumer process per broker writes the charges through the inbox and, in the same
// transaction, enqueues a `charge.completed` event in the outbox; a relay process publishes
// the events to RabbitMQ, and a notifications process turns each into a `notifications` row
// through an inbox of its own. Part-way through, each of the four processes is killed with
// SIGKILL and started again. Once the poison requests are dead-lettered, the demo "fixes the
// bug" (a negative amount is a refund), restarts the payments consumers with the fix and
// replays the dead letters with the `inboxkit dlq replay` command. At the end a query checks
// that every charge (and the repaired refund) was applied exactly once and notified exactly
// once, with the dead-letter destinations empty, and the demo exits non-zero if not.
//
// Services come the way the tests get them: DATABASE_URL, AMQP_URL, KAFKA_BROKERS when set;
// testcontainers when a Docker engine answers; the machine's own services and the Kafka
// started from the Maven jars otherwise.
import { type ChildProcess, execFile, fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { migrateInbox, migrateOutbox } from '@inboxkit/core';
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
for (const migrate of [migrateInbox, migrateOutbox]) {
  const migrated = await migrate(db as never);
  if (migrated.error) throw migrated.error;
}
// No unique constraint on charge_id: a charge applied (or notified) twice would show as two rows.
await sql`CREATE TABLE charges (id bigserial PRIMARY KEY, charge_id text NOT NULL, user_id text NOT NULL,
  amount_cents integer NOT NULL, via text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`.execute(db);
await sql`CREATE TABLE notifications (id bigserial PRIMARY KEY, charge_id text NOT NULL, user_id text NOT NULL,
  text text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`.execute(db);

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
const eventsQueue = `inboxkit-demo.charge-completed.${run}`;
await amqpChannel.assertQueue(queue, { durable: true });
await amqpChannel.assertQueue(deadLetterQueue, { durable: true });
await amqpChannel.assertQueue(eventsQueue, { durable: true });
await amqpChannel.assertQueue(`${eventsQueue}.dlq`, { durable: true });
cleanup.push(async () => {
  for (const name of [queue, deadLetterQueue, eventsQueue, `${eventsQueue}.dlq`]) {
    await amqpChannel.deleteQueue(name).catch(() => {});
  }
  await amqpConnection.close().catch(() => {});
});

// ---------------------------------------------------------------------------------------
// Consumers, each in a process of its own
// ---------------------------------------------------------------------------------------
type Broker = 'kafka' | 'rabbitmq';
/** One process of the demo, started again when it dies. */
interface Worker {
  readonly name: string;
  config: ConsumerConfig;
  child?: ChildProcess;
  duplicates: number;
  processed: number;
  killed: boolean;
  restarts: number;
  unexpectedExits: number;
}
interface Lane extends Worker {
  readonly broker: Broker;
  readonly deliveries: ChargeRequest[];
  readonly expectedCents: number;
  written: number;
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
          eventsQueue,
          amqpUrl: rabbit.url,
        }
      : { broker, databaseUrl: dbUrl.toString(), amqpUrl: rabbit.url, queue, deadLetterQueue, eventsQueue };
  return {
    name: broker,
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

const worker = (name: 'relay' | 'notifications'): Worker => ({
  name,
  config: { broker: name, databaseUrl: dbUrl.toString(), amqpUrl: rabbit.url, eventsQueue },
  duplicates: 0,
  processed: 0,
  killed: false,
  restarts: 0,
  unexpectedExits: 0,
});
const relay = worker('relay');
const notifier = worker('notifications');

let stopping = false;
function startConsumer(lane: Worker): Promise<void> {
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
      console.error(`  ${lane.name}: process exited on its own (${code ?? signal}); starting it again`);
      lane.unexpectedExits++;
      void startConsumer(lane).then(resolve);
    });
  });
}
const workers: Worker[] = [...lanes, relay, notifier];
cleanup.push(async () => {
  for (const w of workers) w.child?.kill('SIGKILL');
});

say(`Running: ${CHARGES} charges per broker, ${Math.round(CHARGES * 0.3)} re-sends, 1 poison request`);
await Promise.all(workers.map((w) => startConsumer(w)));

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
// Watch: progress, one SIGKILL per process part-way, until every charge is written and notified
// ---------------------------------------------------------------------------------------
const bars = tty
  ? new cliProgress.MultiBar(
      {
        format: ' {broker} [{bar}] {value}/{total} {what} | duplicates suppressed {duplicates} | {note}',
        hideCursor: true,
        clearOnComplete: false,
      },
      cliProgress.Presets.shades_classic,
    )
  : undefined;
const bar = new Map(
  lanes.map((lane) => [
    lane.broker,
    bars?.create(CHARGES, 0, { broker: lane.broker.padEnd(8), what: 'charges', duplicates: 0, note: '' }),
  ]),
);
const NOTIFICATIONS = CHARGES * lanes.length;
const notifiedBar = bars?.create(NOTIFICATIONS, 0, {
  broker: 'notified',
  what: 'charge.completed events',
  duplicates: 0,
  note: '',
});
let notified = 0;
let lastPlain = 0;

async function writtenPerBroker(): Promise<Record<string, number>> {
  const { rows } = await sql<{ via: string; n: string }>`SELECT via, count(DISTINCT charge_id) AS n FROM charges
    WHERE amount_cents > 0 GROUP BY via`.execute(db);
  return Object.fromEntries(rows.map((r) => [r.via, Number(r.n)]));
}

async function notifiedCharges(): Promise<number> {
  const { rows } = await sql<{ n: string }>`SELECT count(DISTINCT charge_id) AS n FROM notifications`.execute(db);
  return Number(rows[0]?.n ?? 0);
}

/** SIGKILLs a process of the demo once, when `reached`, and starts it again. */
function killOnce(w: Worker, reached: boolean, at: string): void {
  if (w.killed || !reached) return;
  w.killed = true;
  w.child?.kill('SIGKILL');
  if (!tty) say(`  ${w.name}: killed with SIGKILL at ${at}; restarting it`);
  w.restarts++;
  void startConsumer(w); // do not hold up the others while this one restarts
}

const deadline = Date.now() + TIMEOUT_MS;
for (;;) {
  const written = await writtenPerBroker();
  for (const lane of lanes) {
    lane.written = written[lane.broker] ?? 0;
    killOnce(lane, lane.written >= CHARGES * KILL_AT, `${lane.written} charges`);
    bar.get(lane.broker)?.update(lane.written, {
      duplicates: lane.duplicates,
      note: lane.killed ? 'killed once and restarted' : '',
    });
  }
  notified = await notifiedCharges();
  killOnce(relay, notified >= NOTIFICATIONS * KILL_AT * 0.5, `${notified} notifications`);
  killOnce(notifier, notified >= NOTIFICATIONS * KILL_AT, `${notified} notifications`);
  notifiedBar?.update(notified, {
    duplicates: notifier.duplicates,
    note: [relay, notifier]
      .filter((w) => w.killed)
      .map((w) => `${w.name} killed once and restarted`)
      .join(', '),
  });
  if (!tty && Date.now() - lastPlain > 2000) {
    lastPlain = Date.now();
    say(
      `  progress: ${lanes.map((l) => `${l.broker} ${l.written}/${CHARGES}`).join(', ')}, notified ${notified}/${NOTIFICATIONS}`,
    );
  }
  if ((lanes.every((lane) => lane.written >= CHARGES) && notified >= NOTIFICATIONS) || Date.now() > deadline) break;
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

/** SIGTERM: in-flight work finishes, offsets are committed, channels closed. */
function stopWorker(w: Worker): Promise<void> {
  return new Promise<void>((resolve) => {
    const child = w.child;
    w.child = undefined; // a stop, not a crash: the supervisor does not start it again
    if (!child || child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 15_000).unref();
  });
}

// ---------------------------------------------------------------------------------------
// Repair: deploy the fix, then replay the dead letters with the inboxkit command
// ---------------------------------------------------------------------------------------
const poisonIds = lanes.map((lane) => `${lane.broker === 'kafka' ? 'k' : 'r'}_ch_poison`);
say('Fixing the bug (a negative amount is a refund), restarting the payments consumers with the fix');
await Promise.all(
  lanes.map(async (lane) => {
    await stopWorker(lane);
    lane.config = { ...lane.config, refunds: true };
    await startConsumer(lane);
  }),
);
const cliEnv = {
  ...process.env,
  DATABASE_URL: dbUrl.toString(),
  KAFKA_BROKERS: kafkaService.brokers.join(','),
  AMQP_URL: rabbit.url,
};
/** Runs the `inboxkit` command of packages/cli, as an operator would. */
function inboxkit(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const bin = fileURLToPath(new URL('../../packages/cli/dist/bin.js', import.meta.url));
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...argv], { env: cliEnv }, (error, stdout, stderr) =>
      resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}
const replayed: Record<Broker, number> = { kafka: 0, rabbitmq: 0 };
for (const lane of lanes) {
  const where = lane.broker === 'kafka' ? ['--topic', `${topic}.dlq`] : ['--queue', deadLetterQueue];
  say(`  inboxkit dlq replay ${where.join(' ')} --all`);
  const result = await inboxkit(['dlq', 'replay', ...where, '--all', '--json']);
  if (result.code !== 0) console.error(`  inboxkit dlq replay failed (exit ${result.code}): ${result.stderr.trim()}`);
  else replayed[lane.broker] = (JSON.parse(result.stdout) as { replayed: number }).replayed;
}
// The replayed refunds run, and are notified, like any charge.
const repaired = async (): Promise<number> => {
  const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM notifications
    WHERE charge_id = ANY(${poisonIds}::text[])`.execute(db);
  return Number(rows[0]?.n);
};
while (Date.now() < deadline && (await repaired()) < poisonIds.length) {
  await new Promise((resolve) => setTimeout(resolve, 250));
}

// Graceful stop of every process.
stopping = true;
await Promise.all(workers.map(stopWorker));

// ---------------------------------------------------------------------------------------
// The check, by query
// ---------------------------------------------------------------------------------------
// What is left to replay, as the operator's command sees it (a Kafka topic keeps its records:
// the CLI's consumer group has moved past the replayed ones).
const dlqKafka = await (async () => {
  const listed = await inboxkit(['dlq', 'list', '--topic', `${topic}.dlq`, '--json']);
  if (listed.code !== 0) return -1;
  return (JSON.parse(listed.stdout) as { deadLetters: unknown[] }).deadLetters.length;
})();
const dlqRabbit = (await amqpChannel.checkQueue(deadLetterQueue)).messageCount;
const { rows: totals } = await sql<{ via: string; rows: string; distinct_ids: string; cents: string }>`
  SELECT via, count(*) AS rows, count(DISTINCT charge_id) AS distinct_ids, coalesce(sum(amount_cents), 0) AS cents
  FROM charges GROUP BY via`.execute(db);
// One notification per charge: none missing, none twice, none for a charge never made.
const { rows: notes } = await sql<{ via: string; notifications: string; missing: string }>`
  SELECT c.via, count(n.id) AS notifications, count(*) FILTER (WHERE n.id IS NULL) AS missing
  FROM charges c LEFT JOIN notifications n ON n.charge_id = c.charge_id GROUP BY c.via`.execute(db);
const { rows: extra } = await sql<{ orphans: string; outbox: string }>`
  SELECT (SELECT count(*) FROM notifications n WHERE NOT EXISTS (SELECT 1 FROM charges c WHERE c.charge_id = n.charge_id)) AS orphans,
    (SELECT count(*) FROM outbox) AS outbox`.execute(db);
const orphans = Number(extra[0]?.orphans ?? -1);
const outboxLeft = Number(extra[0]?.outbox ?? -1);
const table: Record<string, Record<string, number | string>> = {};
let exact = orphans === 0 && outboxLeft === 0;
for (const lane of lanes) {
  const row = totals.find((r) => r.via === lane.broker);
  const rows = Number(row?.rows ?? 0);
  const distinct = Number(row?.distinct_ids ?? 0);
  const cents = Number(row?.cents ?? 0);
  const dead = await deadLettered(lane);
  const dlq = lane.broker === 'kafka' ? dlqKafka : dlqRabbit;
  const note = notes.find((r) => r.via === lane.broker);
  const notifications = Number(note?.notifications ?? 0);
  const missing = Number(note?.missing ?? -1);
  // Every charge once, plus the poison request once as a refund of 500 cents after its replay.
  const ok =
    rows === CHARGES + 1 &&
    distinct === CHARGES + 1 &&
    cents === lane.expectedCents - 500 &&
    // At least once: a dead letter published twice (a crash between its publish and its ack)
    // is replayed twice, and the second copy is a duplicate.
    replayed[lane.broker] >= 1 &&
    dead === 0 &&
    dlq === 0 &&
    notifications === CHARGES + 1 &&
    missing === 0;
  exact &&= ok;
  table[lane.broker] = {
    'messages delivered': lane.deliveries.length,
    'consumer SIGKILLed and restarted': lane.restarts,
    'consumer exits on its own': lane.unexpectedExits,
    'duplicates suppressed': lane.duplicates,
    'charges written': rows,
    'distinct charge ids': distinct,
    'total charged (cents)': cents,
    'expected (cents)': lane.expectedCents - 500,
    'replayed by inboxkit dlq replay': replayed[lane.broker],
    'dead-lettered keys left': dead,
    'left in the dead-letter destination': dlq,
    'charge.completed notifications': notifications,
    'charges without a notification': missing,
    'exactly once': ok ? 'yes' : 'NO',
  };
}
console.log('');
console.table(table);
console.log(
  `charge.completed events: relay SIGKILLed and restarted ${relay.restarts}, notifications consumer ${notifier.restarts}; ` +
    `duplicates suppressed by the notifications inbox ${notifier.duplicates}; notifications for no charge ${orphans}; ` +
    `left in the outbox ${outboxLeft}`,
);
console.log(
  exact
    ? `OK: every charge was applied exactly once on both brokers, and notified exactly once; the poison request, replayed after the fix, applied once; the dead-letter destinations are empty (checked by query), in ${Math.round((Date.now() - started) / 1000)} s.`
    : 'FAILED: some charge was lost, applied twice, or not notified exactly once; see the table above.',
);

for (const step of cleanup.reverse()) await step().catch(() => {});
process.exit(exact ? 0 : 1);
