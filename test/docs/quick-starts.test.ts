// The root README's quick starts, run as written (only queue, topic and group names made
// unique), each as its own Node process, the way a reader runs `node consumer.ts`:
//
// - started while Postgres and the broker are still coming up: the program's DATABASE_URL,
//   KAFKA_BROKERS or AMQP_URL point at ports where nothing answers yet (connections
//   refused), and only after a few seconds does a proxy to the real service open there;
// - then it must do what the README says below the block: the same message sent twice is
//   one row (and one request twice one charge, one order one `order.accepted`);
// - then SIGTERM must end it promptly with exit code 0: a program that leaves a pool or a
//   client open keeps Node running until an orchestrator SIGKILLs it.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import {
  createFreshTopic,
  type KafkaTestKit,
  kafkaTestKit,
  produce,
  topicSize,
} from '../kafka/support/kafka-testkit.ts';
import { openTestBroker, type TestBroker, uniqueName } from '../rabbitmq/support/broker.ts';
import { startTcpProxy, type TcpProxy } from '../rabbitmq/support/tcp-proxy.ts';
import { withDatabase } from '../support/postgres.ts';
import { freePort } from '../support/private-postgres.ts';
import { exitsWithin, replaceOnce, runSnippet, type SnippetProcess } from '../support/readme-snippet.ts';
import { runnableBlock } from './support/markdown.ts';

/** How long the services stay "down" after the program started. */
const DOWN_MS = 4000;

let database: { name: string; url: string; client: pg.Client } | undefined;
let running: SnippetProcess | undefined;
const proxies: TcpProxy[] = [];
let broker: TestBroker | undefined;
let kit: KafkaTestKit | undefined;

// A database of its own for each quick start: they use the same table and consumer names.
beforeEach(async () => {
  const adminUrl = inject('databaseUrl');
  const name = `ik_quick_start_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE "${name}"`);
  await admin.end();
  const client = new pg.Client({ connectionString: withDatabase(adminUrl, name) });
  await client.connect();
  database = { name, url: withDatabase(adminUrl, name), client };
});

afterEach(async () => {
  running?.dispose();
  running = undefined;
  for (const proxy of proxies.splice(0)) await proxy.close();
  await broker?.dispose();
  broker = undefined;
  await kit?.dispose();
  kit = undefined;
  if (database === undefined) return;
  await database.client.end();
  const admin = new pg.Client({ connectionString: inject('databaseUrl') });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS "${database.name}" WITH (FORCE)`);
  await admin.end();
  database = undefined;
});

function db(): { url: string; client: pg.Client } {
  if (database === undefined) throw new Error('no database');
  return database;
}

/** A URL like `url` on 127.0.0.1:`port`. */
function onPort(url: string, port: number): string {
  const moved = new URL(url);
  moved.hostname = '127.0.0.1';
  moved.port = String(port);
  return moved.toString();
}

/** `target` (host:port in a URL) reachable on `port` from now on. */
async function comeUp(target: string, port: number): Promise<void> {
  proxies.push(await startTcpProxy(target, { port }));
}

/**
 * Starts the README's block `run` with `env` plus a DATABASE_URL on a port where Postgres is
 * not up yet; `services` maps each further env var to the real service's URL: it too points
 * at a closed port at first. After DOWN_MS, every service comes up behind a proxy.
 */
async function startWhileServicesComeUp(
  code: string,
  services: Record<string, { real: string; asEnv: (url: string) => string }>,
  env: Record<string, string> = {},
): Promise<SnippetProcess> {
  const pgPort = await freePort();
  const ports: Record<string, number> = {};
  const programEnv: Record<string, string> = { ...env, DATABASE_URL: onPort(db().url, pgPort) };
  for (const [name, service] of Object.entries(services)) {
    ports[name] = await freePort();
    programEnv[name] = service.asEnv(onPort(service.real, ports[name] as number));
  }
  running = runSnippet(code, programEnv);
  const child = running;
  await new Promise((resolve) => setTimeout(resolve, DOWN_MS));
  expect(child.process.exitCode, `the quick start gave up while the services were down:\n${child.output()}`).toBe(null);
  await comeUp(db().url, pgPort);
  for (const [name, service] of Object.entries(services)) await comeUp(service.real, ports[name] as number);
  return child;
}

/** Polls until `condition` holds, failing early with the program's output if it exited. */
async function until(child: SnippetProcess, what: string, condition: () => Promise<boolean>, timeoutMs = 90_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.process.exitCode !== null)
      throw new Error(`the quick start exited while waiting for ${what}:\n${child.output()}`);
    if (await condition()) return;
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}; the quick start printed:\n${child.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function rows(sql: string, params: unknown[] = []): Promise<number> {
  try {
    const result = await db().client.query(sql, params);
    return Number(result.rows[0]?.n ?? 0);
  } catch (error) {
    // The program creates its tables itself: before that, there are none.
    if ((error as { code?: string }).code === '42P01') return 0;
    throw error;
  }
}

/** SIGTERM, then a clean exit within a liveness bound generous for a loaded machine. */
async function stopsOnSigterm(child: SnippetProcess): Promise<void> {
  child.process.kill('SIGTERM');
  // kafkajs' disconnect may wait for a fetch in flight (maxWaitTimeInMs, 5 s by default).
  const exit = await exitsWithin(child.exited, 20_000);
  expect(exit, child.output()).toEqual({ code: 0, signal: null });
}

/** The Kafka broker's address as a URL, so the proxy can read host and port. */
function kafkaAsUrl(brokers: readonly string[]): string {
  return `kafka://${brokers[0]}`;
}

describe("the README's quick starts, started while Postgres and the broker come up", () => {
  it('Kafka: a record produced twice is one row; SIGTERM exits', async () => {
    const brokers = inject('kafkaBrokers');
    kit = await kafkaTestKit(brokers);
    const { topic, groupId } = await createFreshTopic(kit.admin, {
      topic: 'qs-charges',
      group: 'qs-payments',
      partitions: 1,
    });
    const code = replaceOnce(runnableBlock('README.md', 'kafka').code, [
      ["topics: ['charges']", `topics: ['${topic}']`],
      ["groupId: 'payments'", `groupId: '${groupId}'`],
    ]);
    const child = await startWhileServicesComeUp(code, {
      KAFKA_BROKERS: { real: kafkaAsUrl(brokers), asEnv: (url) => new URL(url).host },
    });
    const record = { id: 'c-1', value: JSON.stringify({ userId: 'u-1', amountCents: 1200 }) };
    await produce(kit.producer, topic, [record, record]);
    await until(
      child,
      'the charge',
      async () => (await rows("SELECT count(*) AS n FROM charges WHERE id = 'c-1'")) === 1,
    );
    await until(child, 'both records to be settled', async () => {
      const [offsets] = await (kit as KafkaTestKit).admin.fetchOffsets({ groupId, topics: [topic] });
      return offsets?.partitions[0]?.offset === '2';
    });
    expect(await rows('SELECT count(*) AS n FROM charges')).toBe(1);
    // The copy was a duplicate, not a second insert that failed on the key and was dead-lettered.
    expect(await topicSize(kit.admin, `${topic}.dlq`)).toBe(0);
    await stopsOnSigterm(child);
  });

  it('RabbitMQ: a message published twice is one row; SIGTERM exits', async () => {
    broker = await openTestBroker('quick-start');
    const queue = uniqueName('qs-charges');
    broker.track(queue, `${queue}.dlq`);
    const code = replaceOnce(runnableBlock('README.md', 'rabbitmq').code, [["queue: 'charges'", `queue: '${queue}'`]]);
    const child = await startWhileServicesComeUp(code, {
      AMQP_URL: { real: inject('amqpUrl'), asEnv: (url) => url },
    });
    await until(child, 'the queue to be declared', () => queueExists(queue));
    const message = { id: 'c-1', body: { userId: 'u-1', amountCents: 1200 } };
    await broker.publish(queue, [message, message]);
    await until(
      child,
      'the charge',
      async () => (await rows("SELECT count(*) AS n FROM charges WHERE id = 'c-1'")) === 1,
    );
    await until(child, 'both deliveries to be taken', async () => (await (broker as TestBroker).count(queue)) === 0);
    await stopsOnSigterm(child);
    // A delivery it had not acked would be back in the queue now that its connection is closed.
    expect(await broker.count(queue)).toBe(0);
    expect(await broker.count(`${queue}.dlq`)).toBe(0);
    expect(await rows('SELECT count(*) AS n FROM charges')).toBe(1);
  });

  it('HTTP: a request sent twice with one Idempotency-Key is one charge and a replay; SIGTERM exits', async () => {
    const port = await freePort();
    const code = runnableBlock('README.md', 'http').code;
    const child = await startWhileServicesComeUp(code, {}, { PORT: String(port) });
    const send = () =>
      fetch(`http://127.0.0.1:${port}/charges`, {
        method: 'POST',
        headers: { 'idempotency-key': 'k-1', 'content-type': 'application/json', 'x-client-id': 'client-1' },
        body: JSON.stringify({ amountCents: 1200 }),
      });
    await until(child, 'the server to listen', async () => {
      try {
        await fetch(`http://127.0.0.1:${port}/`);
        return true;
      } catch {
        return false;
      }
    });
    const first = await send();
    const firstBody = await first.text();
    const second = await send();
    expect(first.status, firstBody).toBe(201);
    expect(second.status).toBe(201);
    expect(await second.text()).toBe(firstBody);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect(first.headers.get('idempotent-replayed')).toBeNull();
    expect(await rows('SELECT count(*) AS n FROM charges')).toBe(1);
    await stopsOnSigterm(child);
  });

  it('outbox: an order published twice is one row and one order.accepted; SIGTERM exits', async () => {
    broker = await openTestBroker('quick-start-outbox');
    const orders = uniqueName('qs-orders');
    const accepted = uniqueName('qs-order-accepted');
    await broker.declareQueue(accepted);
    broker.track(orders, `${orders}.dlq`);
    const code = replaceOnce(runnableBlock('README.md', 'outbox').code, [
      ["queue: 'orders'", `queue: '${orders}'`],
      ["routingKey: 'order.accepted'", `routingKey: '${accepted}'`],
    ]);
    const child = await startWhileServicesComeUp(code, {
      AMQP_URL: { real: inject('amqpUrl'), asEnv: (url) => url },
    });
    await until(child, 'the orders queue to be declared', () => queueExists(orders));
    const order = { id: 'o-1', body: { total_cents: 500 } };
    await broker.publish(orders, [order, order]);
    await until(
      child,
      'order.accepted to be published',
      async () => (await (broker as TestBroker).count(accepted)) === 1,
    );
    await until(child, 'the outbox to be empty', async () => (await rows('SELECT count(*) AS n FROM outbox')) === 0);
    await until(child, 'both orders to be taken', async () => (await (broker as TestBroker).count(orders)) === 0);
    await stopsOnSigterm(child);
    expect(await broker.count(orders)).toBe(0);
    expect(await broker.count(`${orders}.dlq`)).toBe(0);
    expect(await rows('SELECT count(*) AS n FROM orders')).toBe(1);
    const sent = await broker.drain(accepted);
    expect(sent.map((m) => JSON.parse(String(m.content)))).toEqual([{ orderId: 'o-1' }]);
  });
});

describe("docs/inbox.md's whole program, started while Postgres comes up", () => {
  it('handles one message twice: true true, one row, and exits by itself', async () => {
    const child = await startWhileServicesComeUp(runnableBlock('docs/inbox.md', 'inbox').code, {});
    const exit = await exitsWithin(child.exited, 60_000);
    expect(exit, child.output()).toEqual({ code: 0, signal: null });
    expect(child.output().trim()).toBe('true true');
    expect(await rows("SELECT count(*) AS n FROM charges WHERE id = 'c-1'")).toBe(1);
    expect(await rows("SELECT count(*) AS n FROM processed_messages WHERE message_id = 'c-1'")).toBe(1);
  });
});

/** Whether `queue` exists (asked on a connection of its own: a missing queue closes the channel that asks). */
async function queueExists(queue: string): Promise<boolean> {
  const probe = await openTestBroker('quick-start-probe');
  try {
    await probe.channel.checkQueue(queue);
    return true;
  } catch {
    return false;
  } finally {
    await probe.dispose().catch(() => {});
  }
}
