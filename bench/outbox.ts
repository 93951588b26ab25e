// The outbox side by side (docs/outbox.md, "Benchmarks"), one run, one Postgres:
//
//   npm run bench -- outbox    (or, after `pnpm run build`: node bench/outbox.ts [--messages 5000]
//                               [--rounds 3] [--transactions 1000] [--latency-seconds 15]
//                               [--only 'regexp of section names: enqueue|relay|latency'])
//
// 1. enqueue: what `outbox.enqueue` adds to an inbox handler. `inbox.process` of a fresh
//    message whose handler inserts one business row (`handler`), the same plus one enqueue
//    (`+ enqueue 1`), plus one enqueue call of ten messages (`+ enqueue 10`); interleaved
//    rounds of `transactions` transactions at c=1 and c=8; medians of messages (inbox
//    transactions) per second.
// 2. relay: `messages` small messages (a ~100-byte JSON payload, keys from 1,000, so that
//    per-key order is in play) published from a prefilled outbox to Kafka and to RabbitMQ,
//    against the same messages published from memory by a plain client with the same
//    acknowledgement settings, in batches of the relay's size (100), one batch at a time:
//    - Kafka: an idempotent kafkajs producer (acks -1), one `send` per batch;
//    - RabbitMQ: a confirm channel, persistent and mandatory, `waitForConfirms` per batch;
//    and against pg-transactional-outbox 0.5.7's polling listener on the same messages (its
//    `segment` = our key, `concurrency: 'sequential'`: the same per-key order), publishing
//    each message with the same client and settings and waiting for its confirmation. Its
//    replication listener needs `wal_level=logical`, which the shared server does not have.
//    The clock runs from the relay's start to the last confirmation (inboxkit: its last
//    `published` event; the row is deleted by then).
// 3. latency: writers commit messages at a steady 1,000 per second (`latency-batch` messages
//    per transaction, default 5, so 200 transactions per second) for `latency-seconds`, and
//    each message's time from its transaction's commit to the relay's `published` event
//    (confirmed by the broker and deleted: an upper bound of commit-to-confirmation) is
//    recorded; p50, p99, max. The relay runs in the writers' process.
// Brokers: KAFKA_BROKERS (default 127.0.0.1:9092), AMQP_URL (default amqp://guest:guest@127.0.0.1:5672);
// Postgres: DATABASE_URL. Prints tables with the load average; saves bench/results/outbox.json.
import { randomUUID } from 'node:crypto';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { createInbox, createOutbox, migrateInbox, migrateOutbox, type OutboxRelay } from '@inboxkit/core';
import { createPgPool } from '@inboxkit/core/pg';
import { createKafkaRelay } from '@inboxkit/kafka';
import { createRabbitRelay } from '@inboxkit/rabbitmq';
import amqplib from 'amqplib';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import {
  DatabaseSetup,
  getDisabledLogger,
  initializeMessageStorage,
  initializePollingMessageListener,
  type PollingListenerConfig,
  type TransactionalMessage,
} from 'pg-transactional-outbox';
import { benchDatabase, median, saveResults } from './support.ts';

const { values: args } = parseArgs({
  options: {
    messages: { type: 'string', default: '5000' },
    rounds: { type: 'string', default: '3' },
    transactions: { type: 'string', default: '1000' },
    'latency-seconds': { type: 'string', default: '15' },
    'latency-batch': { type: 'string', default: '5' },
    'ptx-batch': { type: 'string', default: '5' },
    only: { type: 'string', default: '' },
  },
});
const MESSAGES = Number(args.messages);
const ROUNDS = Number(args.rounds);
const TRANSACTIONS = Number(args.transactions);
const LATENCY_SECONDS = Number(args['latency-seconds']);
const LATENCY_BATCH = Number(args['latency-batch']);
const BATCH = 100;
const KEYS = 1000;
const only = args.only === '' ? undefined : new RegExp(args.only);
const wanted = (section: string): boolean => only === undefined || only.test(section);
const brokers = (process.env.KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
const amqpUrl = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const load = (): number => Math.round((loadavg()[0] ?? Number.NaN) * 100) / 100;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

interface DB {
  charges: { id: string; amount_cents: number };
}

const url = await benchDatabase('inboxkit_bench_outbox');
const pool = createPgPool({ connectionString: url, max: 10 });
const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
for (const migrate of [migrateInbox, migrateOutbox]) {
  const { error } = await migrate(db as Kysely<unknown>);
  if (error) throw error;
}
await sql`CREATE TABLE charges (id text PRIMARY KEY, amount_cents integer NOT NULL)`.execute(db);
const outbox = createOutbox({ db });
const report: Record<string, unknown> = { loadBefore: load() };
const run = randomUUID().slice(0, 8);

// ---------------------------------------------------------------------------------------
// 1. enqueue inside an inbox handler
// ---------------------------------------------------------------------------------------
type EnqueueMode = 'handler' | '+ enqueue 1' | '+ enqueue 10';
if (wanted('enqueue')) {
  const inbox = createInbox({ db, consumer: 'bench.outbox' });
  const modes: EnqueueMode[] = ['handler', '+ enqueue 1', '+ enqueue 10'];
  const one = async (mode: EnqueueMode): Promise<void> => {
    const id = randomUUID();
    const payload = Buffer.from(JSON.stringify({ id, amountCents: 100 }));
    const outcome = await inbox.process({ id, payload }, async (trx) => {
      await trx.insertInto('charges').values({ id, amount_cents: 100 }).execute();
      if (mode === '+ enqueue 1') {
        await outbox.enqueue(trx, { topic: 'charges', key: id, payload: { id, amountCents: 100 } });
      } else if (mode === '+ enqueue 10') {
        await outbox.enqueue(
          trx,
          Array.from({ length: 10 }, (_, k) => ({ topic: 'charges', key: `${id}-${k}`, payload: { id, k } })),
        );
      }
    });
    if (outcome.status !== 'processed') throw new Error(`unexpected outcome ${outcome.status}`);
  };
  const rates = new Map<string, number[]>();
  for (let round = 0; round < ROUNDS; round++) {
    for (const concurrency of [1, 8]) {
      for (const mode of modes) {
        let next = 0;
        const started = performance.now();
        await Promise.all(
          Array.from({ length: concurrency }, async () => {
            while (next++ < TRANSACTIONS) await one(mode);
          }),
        );
        const rate = TRANSACTIONS / ((performance.now() - started) / 1000);
        const key = `${mode}|${concurrency}`;
        rates.set(key, [...(rates.get(key) ?? []), rate]);
      }
    }
    await sql`TRUNCATE charges, outbox, processed_messages`.execute(db);
  }
  const rows = [];
  console.log(`\nenqueue inside an inbox handler (messages/s, medians of ${ROUNDS} rounds of ${TRANSACTIONS})`);
  console.log(`${'mode'.padEnd(14)} ${'c=1'.padStart(7)} ${'c=8'.padStart(7)}`);
  for (const mode of modes) {
    const c1 = Math.round(median(rates.get(`${mode}|1`) ?? []));
    const c8 = Math.round(median(rates.get(`${mode}|8`) ?? []));
    rows.push({ mode, c1, c8 });
    console.log(`${mode.padEnd(14)} ${String(c1).padStart(7)} ${String(c8).padStart(7)}`);
  }
  const base = rows[0] as { c1: number; c8: number };
  for (const row of rows.slice(1)) {
    console.log(
      `  ${row.mode}: ${(row.c1 / base.c1).toFixed(2)}x of the handler alone at c=1, ${(row.c8 / base.c8).toFixed(2)}x at c=8`,
    );
  }
  report.enqueue = { transactionsPerRound: TRANSACTIONS, rounds: ROUNDS, rows, load: load() };
}

// ---------------------------------------------------------------------------------------
// Brokers
// ---------------------------------------------------------------------------------------
const kafka = new Kafka({ clientId: `bench-outbox-${run}`, brokers, logLevel: logLevel.NOTHING });
const admin = kafka.admin();
await admin.connect();
const topic = `bench-outbox-${run}`;
await admin.createTopics({ topics: [{ topic, numPartitions: 4 }], waitForLeaders: true });
const producer: Producer = kafka.producer({ idempotent: true });
await producer.connect();
const amqp = await amqplib.connect(amqpUrl);
const channel = await amqp.createConfirmChannel();
const queue = `bench.outbox.${run}`;
await channel.assertQueue(queue, { durable: true });

interface Message {
  readonly id: string;
  readonly key: string;
  readonly payload: { id: string; amountCents: number; note: string };
}
const messages = (label: string): Message[] =>
  Array.from({ length: MESSAGES }, (_, i) => {
    const id = `${label}-${i}-${randomUUID()}`;
    return { id, key: `k${i % KEYS}`, payload: { id, amountCents: 100 + i, note: 'a charge was completed' } };
  });
const bytes = (m: Message): Buffer => Buffer.from(JSON.stringify(m.payload));

async function prefill(label: string, broker: 'kafka' | 'rabbitmq'): Promise<void> {
  const all = messages(label);
  for (let i = 0; i < all.length; i += 500) {
    await outbox.enqueue(
      db,
      all
        .slice(i, i + 500)
        .map((m) =>
          broker === 'kafka'
            ? { topic, key: m.key, payload: m.payload, messageId: m.id }
            : { exchange: '', routingKey: queue, key: m.key, payload: m.payload, messageId: m.id },
        ),
    );
  }
}

/** Starts `relays` relays, resolves with the seconds until `count` messages were published. */
async function timeRelay(make: () => OutboxRelay, count: number, relays = 1): Promise<number> {
  const started = performance.now();
  const running = Array.from({ length: relays }, make);
  let published = 0;
  let last = started;
  await new Promise<void>((resolve) => {
    for (const relay of running) {
      relay.on('published', (e) => {
        published += e.count;
        last = performance.now();
        if (published >= count) resolve();
      });
    }
  });
  await Promise.all(running.map((relay) => relay.close()));
  return (last - started) / 1000;
}

async function plainKafka(label: string): Promise<number> {
  const all = messages(label);
  const started = performance.now();
  for (let i = 0; i < all.length; i += BATCH) {
    await producer.send({
      topic,
      acks: -1,
      messages: all.slice(i, i + BATCH).map((m) => ({ key: m.key, value: bytes(m), headers: { 'message-id': m.id } })),
    });
  }
  return (performance.now() - started) / 1000;
}

async function plainRabbit(label: string): Promise<number> {
  const all = messages(label);
  const started = performance.now();
  for (let i = 0; i < all.length; i += BATCH) {
    for (const m of all.slice(i, i + BATCH)) {
      channel.publish('', queue, bytes(m), { persistent: true, mandatory: true, messageId: m.id });
    }
    await channel.waitForConfirms();
  }
  return (performance.now() - started) / 1000;
}

// pg-transactional-outbox: its table and polling function, made by its own DatabaseSetup.
const PTX_TABLE = 'ptx_outbox';
const ptxSetup = {
  outboxOrInbox: 'outbox' as const,
  database: 'inboxkit_bench_outbox',
  schema: 'public',
  table: PTX_TABLE,
  listenerRole: 'postgres',
  nextMessagesName: 'next_ptx_outbox_messages',
};
await sql
  .raw(
    [
      DatabaseSetup.dropAndCreateTable(ptxSetup),
      DatabaseSetup.createPollingFunction(ptxSetup),
      DatabaseSetup.setupPollingIndexes(ptxSetup),
    ].join('\n'),
  )
  .execute(db);
const ptxConfig: PollingListenerConfig = {
  outboxOrInbox: 'outbox',
  dbListenerConfig: { connectionString: url },
  settings: {
    dbSchema: 'public',
    dbTable: PTX_TABLE,
    enableMaxAttemptsProtection: false,
    enablePoisonousMessageProtection: false,
    messageCleanupIntervalInMs: 0,
    nextMessagesFunctionName: 'next_ptx_outbox_messages',
    nextMessagesBatchSize: Number(args['ptx-batch']),
    nextMessagesPollingIntervalInMs: 20,
  },
};
const ptxLogger = getDisabledLogger();
const ptxStore = initializeMessageStorage(ptxConfig, ptxLogger);

async function ptxPrefill(label: string): Promise<void> {
  await sql`TRUNCATE ${sql.table(PTX_TABLE)}`.execute(db);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const all = messages(label);
  for (let i = 0; i < all.length; i += 500) {
    await client.query('BEGIN');
    for (const m of all.slice(i, i + 500)) {
      const message: TransactionalMessage = {
        id: randomUUID(),
        aggregateType: 'charge',
        aggregateId: m.id,
        messageType: 'charge.completed',
        segment: m.key,
        concurrency: 'sequential',
        payload: m.payload,
      };
      await ptxStore(message, client);
    }
    await client.query('COMMIT');
  }
  await client.end();
}

/** pg-transactional-outbox's polling listener publishing each message and waiting for its confirmation. */
async function timePtx(broker: 'kafka' | 'rabbitmq'): Promise<number> {
  let done = 0;
  let finish: () => void = () => {};
  const finished = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const publish = async (message: TransactionalMessage): Promise<void> => {
    const value = Buffer.from(JSON.stringify(message.payload));
    if (broker === 'kafka') {
      await producer.send({
        topic,
        acks: -1,
        messages: [{ key: message.segment ?? null, value, headers: { 'message-id': message.id } }],
      });
    } else {
      await new Promise<void>((resolve, reject) =>
        channel.publish('', queue, value, { persistent: true, mandatory: true, messageId: message.id }, (err) =>
          err ? reject(err) : resolve(),
        ),
      );
    }
  };
  const started = performance.now();
  const [shutdown] = initializePollingMessageListener(
    ptxConfig,
    {
      handle: async (message) => {
        await publish(message);
        if (++done >= MESSAGES) finish();
      },
    },
    ptxLogger,
  );
  await finished;
  const seconds = (performance.now() - started) / 1000;
  await shutdown();
  return seconds;
}

// ---------------------------------------------------------------------------------------
// 2. relay throughput
// ---------------------------------------------------------------------------------------
if (wanted('relay')) {
  const rates = new Map<string, number[]>();
  const add = (name: string, seconds: number): void => {
    rates.set(name, [...(rates.get(name) ?? []), MESSAGES / seconds]);
  };
  for (let round = 0; round < ROUNDS; round++) {
    add('kafka plain producer', await plainKafka(`pk${round}`));
    await prefill(`rk${round}`, 'kafka');
    add('kafka inboxkit relay', await timeRelay(() => createKafkaRelay({ outbox, producer }), MESSAGES));
    await prefill(`rk2${round}`, 'kafka');
    add('kafka inboxkit 2 relays', await timeRelay(() => createKafkaRelay({ outbox, producer }), MESSAGES, 2));
    await ptxPrefill(`xk${round}`);
    add('kafka pg-transactional-outbox', await timePtx('kafka'));
    add('rabbitmq plain confirm channel', await plainRabbit(`pr${round}`));
    await channel.purgeQueue(queue);
    await prefill(`rr${round}`, 'rabbitmq');
    add('rabbitmq inboxkit relay', await timeRelay(() => createRabbitRelay({ outbox, url: amqpUrl }), MESSAGES));
    await channel.purgeQueue(queue);
    await prefill(`rr2${round}`, 'rabbitmq');
    add('rabbitmq inboxkit 2 relays', await timeRelay(() => createRabbitRelay({ outbox, url: amqpUrl }), MESSAGES, 2));
    await channel.purgeQueue(queue);
    await ptxPrefill(`xr${round}`);
    add('rabbitmq pg-transactional-outbox', await timePtx('rabbitmq'));
    await channel.purgeQueue(queue);
    console.log(`  relay round ${round + 1}/${ROUNDS} done (load ${load()})`);
  }
  const rows: Record<string, number> = {};
  console.log(`\nrelay throughput (messages/s, medians of ${ROUNDS} rounds of ${MESSAGES} messages, ${KEYS} keys)`);
  for (const [name, values] of rates) {
    rows[name] = Math.round(median(values));
    console.log(`${name.padEnd(34)} ${String(rows[name]).padStart(7)}   rounds: ${values.map(Math.round).join(', ')}`);
  }
  const ratios = {
    kafkaRelayOverPlain: (rows['kafka inboxkit relay'] ?? 0) / (rows['kafka plain producer'] ?? 1),
    rabbitRelayOverPlain: (rows['rabbitmq inboxkit relay'] ?? 0) / (rows['rabbitmq plain confirm channel'] ?? 1),
    kafkaRelayOverPtx: (rows['kafka inboxkit relay'] ?? 0) / (rows['kafka pg-transactional-outbox'] ?? 1),
    rabbitRelayOverPtx: (rows['rabbitmq inboxkit relay'] ?? 0) / (rows['rabbitmq pg-transactional-outbox'] ?? 1),
  };
  const verdict = (value: number, limit: number): string => `${value.toFixed(2)}x ${value >= limit ? 'MET' : 'MISSED'}`;
  console.log(`  Kafka relay / plain producer: ${verdict(ratios.kafkaRelayOverPlain, 0.5)} (target >= 0.5x)`);
  console.log(`  RabbitMQ relay / plain channel: ${verdict(ratios.rabbitRelayOverPlain, 0.5)} (target >= 0.5x)`);
  console.log(`  Kafka relay / pg-transactional-outbox: ${verdict(ratios.kafkaRelayOverPtx, 10)} (target >= 10x)`);
  console.log(`  RabbitMQ relay / pg-transactional-outbox: ${verdict(ratios.rabbitRelayOverPtx, 10)} (target >= 10x)`);
  report.relay = { messages: MESSAGES, keys: KEYS, batch: BATCH, rounds: ROUNDS, rows, ratios, load: load() };
}

// ---------------------------------------------------------------------------------------
// 3. latency at a steady 1,000 messages/s
// ---------------------------------------------------------------------------------------
async function latency(broker: 'kafka' | 'rabbitmq'): Promise<Record<string, number>> {
  await sql`TRUNCATE outbox`.execute(db);
  const committedAt = new Map<string, number>();
  const publishedAt = new Map<string, number>();
  const relay =
    broker === 'kafka'
      ? createKafkaRelay({ outbox, producer, listen: { connectionString: url } })
      : createRabbitRelay({ outbox, url: amqpUrl, listen: { connectionString: url } });
  relay.on('published', (e) => {
    const now = performance.now();
    for (const id of e.messageIds) publishedAt.set(id, now);
  });
  await sleep(500);
  const txPerSecond = 1000 / LATENCY_BATCH;
  const total = Math.round(txPerSecond * LATENCY_SECONDS);
  const warmup = Math.round(txPerSecond * 2);
  const started = performance.now();
  let inFlight = 0;
  let maxInFlight = 0;
  const writes: Promise<void>[] = [];
  for (let i = 0; i < total; i++) {
    const due = started + (i * 1000) / txPerSecond;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    writes.push(
      (async () => {
        const ids = Array.from({ length: LATENCY_BATCH }, (_, j) => `${broker}-${i}-${j}`);
        await db.transaction().execute(async (trx) => {
          await outbox.enqueue(
            trx,
            ids.map((id, j) =>
              broker === 'kafka'
                ? { topic, key: `k${(i * LATENCY_BATCH + j) % KEYS}`, payload: { id }, messageId: id }
                : {
                    exchange: '',
                    routingKey: queue,
                    key: `k${(i * LATENCY_BATCH + j) % KEYS}`,
                    payload: { id },
                    messageId: id,
                  },
            ),
          );
        });
        const now = performance.now();
        if (i >= warmup) for (const id of ids) committedAt.set(id, now);
        inFlight--;
      })(),
    );
  }
  await Promise.all(writes);
  const elapsed = (performance.now() - started) / 1000;
  const deadline = Date.now() + 30_000;
  while ([...committedAt.keys()].some((id) => !publishedAt.has(id)) && Date.now() < deadline) await sleep(50);
  await relay.close();
  if (broker === 'rabbitmq') await channel.purgeQueue(queue);
  const latencies = [...committedAt].map(([id, at]) => Math.max(0, (publishedAt.get(id) ?? Number.NaN) - at));
  latencies.sort((a, b) => a - b);
  const pct = (p: number): number =>
    Math.round((latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? Number.NaN) * 10) / 10;
  return {
    achievedMessagesPerSec: Math.round((total * LATENCY_BATCH) / elapsed),
    measured: latencies.length,
    missing: latencies.filter(Number.isNaN).length,
    maxWritersInFlight: maxInFlight,
    p50Ms: pct(0.5),
    p99Ms: pct(0.99),
    maxMs: pct(1),
  };
}

/** The floor: a plain client publishing the same messages on the same schedule, from the send to the confirmation. */
async function plainLatency(broker: 'kafka' | 'rabbitmq'): Promise<Record<string, number>> {
  const txPerSecond = 1000 / LATENCY_BATCH;
  const total = Math.round(txPerSecond * LATENCY_SECONDS);
  const warmup = Math.round(txPerSecond * 2);
  const latencies: number[] = [];
  const sends: Promise<void>[] = [];
  const started = performance.now();
  for (let i = 0; i < total; i++) {
    const due = started + (i * 1000) / txPerSecond;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    const sent = performance.now();
    const ids = Array.from({ length: LATENCY_BATCH }, (_, j) => `plain-${broker}-${i}-${j}`);
    const confirmed =
      broker === 'kafka'
        ? producer
            .send({
              topic,
              acks: -1,
              messages: ids.map((id, j) => ({
                key: `k${(i * LATENCY_BATCH + j) % KEYS}`,
                value: Buffer.from(JSON.stringify({ id })),
                headers: { 'message-id': id },
              })),
            })
            .then(() => {})
        : Promise.all(
            ids.map(
              (id) =>
                new Promise<void>((resolve, reject) =>
                  channel.publish(
                    '',
                    queue,
                    Buffer.from(JSON.stringify({ id })),
                    { persistent: true, mandatory: true, messageId: id },
                    (err) => (err ? reject(err) : resolve()),
                  ),
                ),
            ),
          ).then(() => {});
    sends.push(
      confirmed.then(() => {
        if (i >= warmup) for (const _ of ids) latencies.push(performance.now() - sent);
      }),
    );
  }
  await Promise.all(sends);
  if (broker === 'rabbitmq') await channel.purgeQueue(queue);
  latencies.sort((a, b) => a - b);
  const pct = (p: number): number =>
    Math.round((latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? Number.NaN) * 10) / 10;
  return { measured: latencies.length, p50Ms: pct(0.5), p99Ms: pct(0.99), maxMs: pct(1) };
}

if (wanted('latency')) {
  const rows: Record<string, Record<string, number>> = {};
  for (const broker of ['kafka', 'rabbitmq'] as const) {
    rows[broker] = await latency(broker);
    rows[`${broker} plain client (send to confirmation)`] = await plainLatency(broker);
  }
  console.log(
    `\nlatency from commit to the relay's published event at 1,000 msg/s (${LATENCY_BATCH} per transaction, ${LATENCY_SECONDS} s, first 2 s not counted)`,
  );
  for (const [broker, row] of Object.entries(rows)) {
    const verdict =
      row.achievedMessagesPerSec === undefined
        ? ''
        : ` (achieved ${row.achievedMessagesPerSec} msg/s, ${row.missing} missing)  p50 < 10: ${(row.p50Ms ?? Infinity) < 10 ? 'MET' : 'MISSED'}, p99 < 50: ${(row.p99Ms ?? Infinity) < 50 ? 'MET' : 'MISSED'}`;
    console.log(`${broker}: p50 ${row.p50Ms} ms, p99 ${row.p99Ms} ms, max ${row.maxMs} ms${verdict}`);
  }
  report.latency = { batch: LATENCY_BATCH, seconds: LATENCY_SECONDS, rows, load: load() };
}

report.loadAfter = load();
console.log(`\nload average (1 min): ${report.loadBefore} before, ${report.loadAfter} after`);
saveResults('outbox', { command: `node bench/outbox.ts ${process.argv.slice(2).join(' ')}`.trim(), ...report });
await producer.disconnect();
await admin.deleteTopics({ topics: [topic] }).catch(() => {});
await admin.disconnect();
await channel.deleteQueue(queue).catch(() => {});
await amqp.close();
await db.destroy();
