import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import amqplib from 'amqplib';
import { inject } from 'vitest';

const run = promisify(execFile);

/** The AMQP URL the global setup resolved (or AMQP_URL). */
export function amqpUrl(): string {
  return inject('amqpUrl');
}

/** A name no other test uses: `ik.<label>.<random>`. */
export function uniqueName(label: string): string {
  return `ik.${label}.${randomBytes(4).toString('hex')}`;
}

/** A message the tests publish. */
export interface TestMessage {
  /** Goes to `properties.messageId` unless `idHeader` is set. */
  readonly id?: string;
  /** Put the id in this header instead of `properties.messageId`. */
  readonly idHeader?: string;
  /** JSON-encoded unless it is a Buffer or a string. */
  readonly body: unknown;
  readonly headers?: Record<string, unknown>;
  readonly replyTo?: string;
  readonly correlationId?: string;
}

/**
 * The test's own side of the broker: a connection of its own (named after the test) with
 * a confirm channel to publish and declare, and the queues it made, deleted by `dispose`.
 */
export interface TestBroker {
  readonly connection: amqplib.ChannelModel;
  readonly channel: amqplib.ConfirmChannel;
  /** Declares a durable queue (remembered for `dispose`). */
  declareQueue(name: string, args?: Record<string, unknown>): Promise<void>;
  /** Remembers a queue someone else declared, for `dispose`. */
  track(...names: string[]): void;
  /** Publishes to a queue through the default exchange and waits for every confirm. */
  publish(queue: string, messages: readonly TestMessage[]): Promise<void>;
  /** Ready messages in a queue (not counting unacked ones). */
  count(queue: string): Promise<number>;
  /** Takes every ready message off a queue (acked). */
  drain(queue: string): Promise<amqplib.GetMessage[]>;
  /** Deletes the queues it declared or tracked, and closes its connection. */
  dispose(): Promise<void>;
}

export async function openTestBroker(label: string): Promise<TestBroker> {
  const connection = await amqplib.connect(amqpUrl(), {
    clientProperties: { connection_name: `ik-test ${label}` },
  });
  connection.on('error', () => {});
  const channel = await connection.createConfirmChannel();
  channel.on('error', () => {});
  const queues = new Set<string>();
  return {
    connection,
    channel,
    async declareQueue(name, args) {
      queues.add(name);
      await channel.assertQueue(name, { durable: true, arguments: args });
    },
    track(...names) {
      for (const name of names) queues.add(name);
    },
    async publish(queue, messages) {
      for (const message of messages) {
        const content = Buffer.isBuffer(message.body)
          ? message.body
          : Buffer.from(typeof message.body === 'string' ? message.body : JSON.stringify(message.body));
        const headers = { ...(message.headers ?? {}) };
        if (message.idHeader !== undefined && message.id !== undefined) headers[message.idHeader] = message.id;
        const ok = channel.sendToQueue(queue, content, {
          persistent: true,
          contentType: 'application/json',
          messageId: message.idHeader === undefined ? message.id : undefined,
          headers,
          replyTo: message.replyTo,
          correlationId: message.correlationId,
        });
        if (!ok) await new Promise<void>((resolve) => channel.once('drain', () => resolve()));
      }
      await channel.waitForConfirms();
    },
    async count(queue) {
      return (await channel.checkQueue(queue)).messageCount;
    },
    async drain(queue) {
      const taken: amqplib.GetMessage[] = [];
      for (;;) {
        const message = await channel.get(queue, { noAck: true });
        if (message === false) return taken;
        taken.push(message);
      }
    },
    async dispose() {
      // A fresh channel: the test may have got the other one closed by the broker.
      const cleanup = await connection.createChannel().catch(() => undefined);
      cleanup?.on('error', () => {});
      for (const name of queues) await cleanup?.deleteQueue(name).catch(() => {});
      await connection.close().catch(() => {});
    },
  };
}

/** Declares a queue named after `label` (uniqueName) and its `.dlq`, both deleted by `dispose`; returns the name. */
export async function declareQueueWithDlq(broker: TestBroker, label: string): Promise<string> {
  const queue = uniqueName(label);
  await broker.declareQueue(queue);
  await broker.declareQueue(`${queue}.dlq`);
  return queue;
}

/**
 * Closes the broker connections whose client-provided name is `name` (and only those:
 * other test files run beside this one). Returns how many were closed.
 */
export async function closeConnectionsNamed(name: string): Promise<number> {
  const { stdout } = await run('rabbitmqctl', [
    'list_connections',
    'pid',
    'client_properties',
    '-q',
    '--no-table-headers',
  ]);
  const needle = `{"connection_name",${JSON.stringify(name)}}`;
  const pids = stdout
    .split('\n')
    .filter((line) => line.includes(needle))
    .map((line) => line.split('\t')[0]?.trim())
    .filter((pid): pid is string => pid?.startsWith('<') === true);
  for (const pid of pids) {
    await run('rabbitmqctl', ['close_connection', pid, 'inboxkit test: connection cut']);
  }
  return pids.length;
}

/**
 * Messages in a queue, ready and unacknowledged together, as the broker counts them
 * (`rabbitmqctl list_queues`): zero means every delivery was acked.
 */
export async function messagesInQueue(queue: string): Promise<number> {
  const { stdout } = await run('rabbitmqctl', ['list_queues', 'name', 'messages', '-q', '--no-table-headers']);
  for (const line of stdout.split('\n')) {
    const [name, messages] = line.split('\t');
    if (name === queue) return Number(messages);
  }
  throw new Error(`queue ${queue} not found by rabbitmqctl list_queues`);
}

/** Polls `check` until it returns true; fails with `what` after `timeoutMs`. */
export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 60_000,
  intervalMs = 50,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/**
 * `count` messages of which `duplicateShare` repeat the id of another one (with the same
 * content), in random order; half of the copies follow their original at once, so that
 * both are in flight together when the prefetch allows it.
 */
export function messagesWithDuplicates(
  prefix: string,
  count: number,
  duplicateShare = 0.3,
): { messages: TestMessage[]; distinct: number } {
  const distinct = Math.round(count * (1 - duplicateShare));
  const slots: TestMessage[][] = [];
  for (let i = 0; i < distinct; i++) slots.push([{ id: `${prefix}-${i}`, body: { n: i, amountCents: (i % 97) + 1 } }]);
  shuffle(slots);
  for (let i = distinct; i < count; i++) {
    const slot = slots[Math.floor(Math.random() * distinct)] as TestMessage[];
    const original = slot[0] as TestMessage;
    if (Math.random() < 0.5) slot.push(original);
    else slots.splice(Math.floor(Math.random() * (slots.length + 1)), 0, [original]);
  }
  return { messages: slots.flat(), distinct };
}

function shuffle<V>(items: V[]): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j] as V, items[i] as V];
  }
}
