// A queue subscriber creating orders, with broker-delayed retries for a transient failure
// and a dead-letter queue for a permanent one.
//
//   node examples/rabbitmq-orders/main.ts
//
// Reads DATABASE_URL and AMQP_URL. It publishes five orders (one of them twice) to a queue of
// its own (`examples.orders.<random>`, with `.retry` and `.dlq` beside it, all deleted at the
// end), prints what became of each, and leaves the created orders in `rabbitmq_orders`.
import { randomBytes } from 'node:crypto';
import { createInbox, migrateInbox, NonRetryableError } from '@inboxkit/core';
import { createPgKysely } from '@inboxkit/core/pg';
import { DEAD_LETTER_HEADERS, type RabbitMessage, subscribe } from '@inboxkit/rabbitmq';
import amqplib from 'amqplib';
import { type Generated, type Kysely, sql } from 'kysely';

interface OrdersDB {
  rabbitmq_orders: {
    order_id: string;
    customer: string;
    sku: string;
    quantity: number;
    created_at: Generated<Date>;
  };
}

export interface PlaceOrder {
  readonly customer: string;
  readonly sku: string;
  readonly quantity: number;
}

/** The warehouse did not answer: worth trying again later. */
class WarehouseUnavailable extends Error {
  override name = 'WarehouseUnavailable';
}

/**
 * A stand-in for the warehouse service the handler calls before creating an order: it is
 * down for the first two calls about the lamp, and knows nothing of unicorns.
 */
function makeWarehouse() {
  const calls = new Map<string, number>();
  return {
    reserve(orderId: string, order: PlaceOrder): void {
      const call = (calls.get(orderId) ?? 0) + 1;
      calls.set(orderId, call);
      if (order.sku === 'sku-unicorn') throw new NonRetryableError(`unknown SKU ${order.sku}`);
      if (order.sku === 'sku-lamp' && call <= 2) throw new WarehouseUnavailable(`warehouse timed out (call ${call})`);
    },
  };
}

/** One handler run: when it started, which broker retry it was, how it ended. */
export interface Attempt {
  readonly orderId: string;
  readonly atMs: number;
  /** Handler runs for this order so far, this one included. */
  readonly run: number;
  /** How many times the message came back from the retry queue (`x-inboxkit-retries`). */
  readonly brokerRetries: number;
  readonly result: string;
}

export interface OrdersRun {
  readonly queue: string;
  /** Ids of the orders, by name. */
  readonly ids: {
    readonly mug: string;
    readonly lamp: string;
    readonly unicorn: string;
    readonly chair: string;
    readonly desk: string;
  };
  /** Every handler run, in order. */
  readonly attempts: Attempt[];
  /** Messages sent to the retry queue. */
  readonly retriesScheduled: {
    readonly orderId: string;
    readonly atMs: number;
    readonly retry: number;
    readonly delayMs: number;
  }[];
  /** Messages acked as duplicates (the handler did not run). */
  readonly duplicates: { readonly orderId: string; readonly atMs: number }[];
  /** Messages published to the dead-letter queue, and why. */
  readonly deadLettered: { readonly orderId: string; readonly atMs: number; readonly reason: string }[];
  /** What was taken off the dead-letter queue: the message id, its body and its headers. */
  readonly deadLetters: {
    readonly messageId: string;
    readonly body: PlaceOrder;
    readonly headers: Record<string, unknown>;
  }[];
  /** The orders of this run in `rabbitmq_orders`. */
  readonly orders: { readonly order_id: string; readonly sku: string; readonly quantity: number }[];
  /** Whether the queues were gone after the cleanup. */
  readonly queuesDeleted: boolean;
}

export interface RunOptions {
  readonly databaseUrl: string;
  readonly amqpUrl: string;
  /** Delays of the broker retries, in milliseconds. Default [300, 1000]. */
  readonly delaysMs?: number[];
  /** How long to wait for every order to settle. Default 20000. */
  readonly timeoutMs?: number;
}

export async function run(options: RunOptions): Promise<OrdersRun> {
  const { databaseUrl, amqpUrl, delaysMs = [300, 1000], timeoutMs = 20_000 } = options;
  const suffix = randomBytes(4).toString('hex');
  const queue = `examples.orders.${suffix}`;
  const ids = {
    mug: `ord-${suffix}-1`,
    lamp: `ord-${suffix}-2`,
    unicorn: `ord-${suffix}-3`,
    chair: `ord-${suffix}-4`,
    desk: `ord-${suffix}-5`,
  };
  const started = performance.now();
  const now = () => Math.round(performance.now() - started);

  const db = createPgKysely<OrdersDB>({ connectionString: databaseUrl, max: 5 });
  const connection = await amqplib.connect(amqpUrl);
  const channel = await connection.createConfirmChannel();
  try {
    const { error } = await migrateInbox(db as Kysely<unknown>);
    if (error) throw error;
    await sql`CREATE TABLE IF NOT EXISTS rabbitmq_orders (
      order_id text PRIMARY KEY,
      customer text NOT NULL,
      sku text NOT NULL,
      quantity integer NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )`.execute(db);

    const warehouse = makeWarehouse();
    const attempts: Attempt[] = [];
    const runs = new Map<string, number>();
    // In-process retries first (a short blip), then the broker's: a failure that outlasts
    // them goes to the retry queue and comes back after 300 ms, then after 1 s.
    const inbox = createInbox({ db, consumer: 'examples.rabbitmq-orders', retry: { retries: 1, minTimeout: 50 } });
    const subscription = subscribe<OrdersDB, PlaceOrder>({
      inbox,
      url: amqpUrl,
      queue,
      prefetch: 5,
      assertTopology: true, // declares the queue, `<queue>.dlq` and `<queue>.retry`
      delayedRetry: { delaysMs },
      handler: async (trx, message: RabbitMessage<PlaceOrder>) => {
        const order = message.body;
        const run = (runs.get(message.id) ?? 0) + 1;
        runs.set(message.id, run);
        const entry = { orderId: message.id, atMs: now(), run, brokerRetries: retriesOf(message) };
        try {
          warehouse.reserve(message.id, order); // throws: the transaction rolls back, nothing is written
          await trx
            .insertInto('rabbitmq_orders')
            .values({ order_id: message.id, customer: order.customer, sku: order.sku, quantity: order.quantity })
            .execute();
        } catch (error) {
          attempts.push({ ...entry, result: `${(error as Error).name}: ${(error as Error).message}` });
          throw error;
        }
        attempts.push({ ...entry, result: `created (${order.quantity} x ${order.sku})` });
        return { orderId: message.id };
      },
    });
    const retriesScheduled: OrdersRun['retriesScheduled'] = [];
    const duplicates: OrdersRun['duplicates'] = [];
    const deadLettered: OrdersRun['deadLettered'] = [];
    subscription.on('retryScheduled', ({ messageId, retry, delayMs }) => {
      retriesScheduled.push({ orderId: messageId, atMs: now(), retry, delayMs });
    });
    subscription.on('deadLettered', ({ messageId, reason }) => {
      deadLettered.push({ orderId: messageId ?? '?', atMs: now(), reason });
    });
    inbox.on('duplicate', ({ messageId }) => void duplicates.push({ orderId: messageId, atMs: now() }));
    const processed = new Set<string>();
    inbox.on('processed', ({ messageId }) => void processed.add(messageId));

    try {
      await subscription.ready();
      const orders: [string, PlaceOrder][] = [
        [ids.mug, { customer: 'ada', sku: 'sku-mug', quantity: 2 }],
        [ids.lamp, { customer: 'grace', sku: 'sku-lamp', quantity: 1 }],
        [ids.unicorn, { customer: 'alan', sku: 'sku-unicorn', quantity: 1 }],
        [ids.chair, { customer: 'edsger', sku: 'sku-chair', quantity: 4 }],
        [ids.desk, { customer: 'barbara', sku: 'sku-desk', quantity: 1 }],
      ];
      for (const [orderId, order] of orders) publish(channel, queue, orderId, order);
      await channel.waitForConfirms();
      // The chair order again, as a client that did not see the confirm would send it.
      publish(channel, queue, ids.chair, orders[3]![1]);
      await channel.waitForConfirms();

      // Four orders created, one dead letter, one duplicate.
      const deadline = started + timeoutMs;
      while (processed.size < 4 || deadLettered.length < 1 || duplicates.length < 1 || subscription.inFlight > 0) {
        if (performance.now() > deadline) {
          throw new Error(
            `rabbitmq-orders: gave up waiting (${processed.size} processed, ${deadLettered.length} dead-lettered, ${duplicates.length} duplicates)`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    } finally {
      await subscription.close(); // cancel, drain in-flight deliveries, ack, close
    }

    // Take the dead letters off their queue and look at them.
    const deadLetters: OrdersRun['deadLetters'] = [];
    for (let message = await channel.get(`${queue}.dlq`); message; message = await channel.get(`${queue}.dlq`)) {
      channel.ack(message);
      deadLetters.push({
        messageId: String(message.properties.messageId),
        body: JSON.parse(message.content.toString()) as PlaceOrder,
        headers: message.properties.headers ?? {},
      });
    }
    const rows = await db
      .selectFrom('rabbitmq_orders')
      .select(['order_id', 'sku', 'quantity'])
      .where('order_id', 'like', `ord-${suffix}-%`)
      .orderBy('order_id')
      .execute();
    return {
      queue,
      ids,
      attempts,
      retriesScheduled,
      duplicates,
      deadLettered,
      deadLetters,
      orders: rows,
      queuesDeleted: await cleanUp(),
    };
  } finally {
    await cleanUp().catch(() => {});
    await connection.close().catch(() => {});
    await db.destroy();
  }

  async function cleanUp(): Promise<boolean> {
    const names = [queue, `${queue}.retry`, `${queue}.dlq`];
    for (const name of names) await channel.deleteQueue(name);
    // checkQueue on a missing queue closes the channel: use a throwaway one.
    const probe = await connection.createChannel();
    probe.on('error', () => {});
    try {
      for (const name of names) await probe.checkQueue(name);
      await probe.close();
      return false;
    } catch {
      return true;
    }
  }
}

function publish(channel: amqplib.ConfirmChannel, queue: string, orderId: string, order: PlaceOrder): void {
  channel.sendToQueue(queue, Buffer.from(JSON.stringify(order)), {
    messageId: orderId, // the inbox key: the same order sent twice is created once
    contentType: 'application/json',
    persistent: true,
  });
}

function retriesOf(message: RabbitMessage<unknown>): number {
  const value = message.headers[DEAD_LETTER_HEADERS.retries];
  return typeof value === 'number' ? value : 0;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const result = await run({
    databaseUrl: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres',
    amqpUrl: process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672',
  });
  const name = (id: string) => Object.entries(result.ids).find(([, v]) => v === id)?.[0] ?? id;
  const timeline = [
    ...result.attempts.map((a) => ({
      atMs: a.atMs,
      text: `${name(a.orderId).padEnd(8)} run ${a.run}${a.brokerRetries > 0 ? ` (broker retry ${a.brokerRetries})` : ''}: ${a.result}`,
    })),
    ...result.retriesScheduled.map((r) => ({
      atMs: r.atMs,
      text: `${name(r.orderId).padEnd(8)} -> ${result.queue}.retry, back in ${r.delayMs} ms`,
    })),
    ...result.deadLettered.map((d) => ({
      atMs: d.atMs,
      text: `${name(d.orderId).padEnd(8)} -> ${result.queue}.dlq (${d.reason})`,
    })),
    ...result.duplicates.map((d) => ({
      atMs: d.atMs,
      text: `${name(d.orderId).padEnd(8)} sent again: duplicate, acked without running`,
    })),
  ].sort((a, b) => a.atMs - b.atMs);
  console.log(`queue ${result.queue}\n`);
  for (const entry of timeline) console.log(`+${String(entry.atMs).padStart(5)} ms  ${entry.text}`);
  for (const dead of result.deadLetters) {
    console.log(`\ndead-letter queue: ${name(dead.messageId)} ${JSON.stringify(dead.body)}`);
    for (const [key, value] of Object.entries(dead.headers)) {
      if (key.startsWith('x-inboxkit-') && key !== DEAD_LETTER_HEADERS.errorStack) {
        console.log(`  ${key}: ${value === '' ? "''" : value}`);
      }
    }
  }
  console.log(`\norders created (rabbitmq_orders):`);
  for (const order of result.orders) console.log(`  ${order.order_id}  ${order.quantity} x ${order.sku}`);
}
