import { DEAD_LETTER_HEADERS } from '@inboxkit/rabbitmq';
import { sql } from 'kysely';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { type OrdersRun, run } from '../../examples/rabbitmq-orders/main.ts';
import { createTestDatabase, type TestDatabase } from '../support/postgres.ts';

let t: TestDatabase;
let result: OrdersRun;
beforeAll(async () => {
  t = await createTestDatabase('example_rabbitmq_orders');
  result = await run({ databaseUrl: t.url, amqpUrl: inject('amqpUrl'), delaysMs: [300, 1000], timeoutMs: 20_000 });
}, 30_000);
afterAll(async () => {
  await t?.dispose();
});

const runsOf = (orderId: string) => result.attempts.filter((a) => a.orderId === orderId);

it('creates each order that can be created exactly once (counted in the database)', async () => {
  const { rows } = await sql<{ order_id: string; n: number }>`
    SELECT order_id, count(*)::int AS n FROM rabbitmq_orders GROUP BY order_id ORDER BY order_id`.execute(t.db);
  const { mug, lamp, chair, desk } = result.ids;
  expect(rows).toEqual([mug, lamp, chair, desk].map((order_id) => ({ order_id, n: 1 })));
  expect(result.orders.map((o) => o.order_id)).toEqual([mug, lamp, chair, desk]);
});

it('retries the transient failure through the broker, then creates the order', () => {
  const lamp = runsOf(result.ids.lamp);
  // Two in-process attempts fail, the message goes to the retry queue, the third run succeeds.
  expect(lamp.map((a) => [a.run, a.brokerRetries, a.result.split(':')[0]])).toEqual([
    [1, 0, 'WarehouseUnavailable'],
    [2, 0, 'WarehouseUnavailable'],
    [3, 1, 'created (1 x sku-lamp)'],
  ]);
  expect(result.retriesScheduled).toEqual([
    { orderId: result.ids.lamp, atMs: expect.any(Number), retry: 1, delayMs: 300 },
  ]);
  // The broker held it for the delay (the message TTL) before handing it back. Measured from
  // the second run, which precedes the retry publish: the retryScheduled event itself fires
  // only once the broker confirmed that publish, which under load can come after the TTL ran.
  expect(lamp[2]!.atMs - lamp[1]!.atMs).toBeGreaterThanOrEqual(290);
});

it('dead-letters the permanent failure at once, with the x-inboxkit- headers', async () => {
  expect(runsOf(result.ids.unicorn).map((a) => a.result)).toEqual(['NonRetryableError: unknown SKU sku-unicorn']);
  expect(result.deadLettered.map((d) => [d.orderId, d.reason])).toEqual([[result.ids.unicorn, 'non_retryable']]);
  expect(result.deadLetters).toHaveLength(1);
  const [dead] = result.deadLetters;
  expect(dead?.messageId).toBe(result.ids.unicorn);
  expect(dead?.body).toEqual({ customer: 'alan', sku: 'sku-unicorn', quantity: 1 });
  expect(dead?.headers).toMatchObject({
    [DEAD_LETTER_HEADERS.reason]: 'non_retryable',
    [DEAD_LETTER_HEADERS.errorName]: 'NonRetryableError',
    [DEAD_LETTER_HEADERS.errorMessage]: 'unknown SKU sku-unicorn',
    [DEAD_LETTER_HEADERS.attempts]: 1,
    [DEAD_LETTER_HEADERS.messageId]: result.ids.unicorn,
    [DEAD_LETTER_HEADERS.originalExchange]: '',
    [DEAD_LETTER_HEADERS.originalRoutingKey]: result.queue,
    [DEAD_LETTER_HEADERS.originalQueue]: result.queue,
    [DEAD_LETTER_HEADERS.consumer]: 'examples.rabbitmq-orders',
  });
  expect(String(dead?.headers[DEAD_LETTER_HEADERS.errorStack])).toContain('NonRetryableError');
  // The inbox remembers it as dead-lettered: a redelivery would be acked as a duplicate.
  const { rows } = await sql<{ status: string }>`
    SELECT status FROM processed_messages
    WHERE consumer = 'examples.rabbitmq-orders' AND message_id = ${result.ids.unicorn}`.execute(t.db);
  expect(rows).toEqual([{ status: 'dead_lettered' }]);
});

it('acks the re-sent order as a duplicate without running the handler again', () => {
  expect(result.duplicates.map((d) => d.orderId)).toEqual([result.ids.chair]);
  expect(runsOf(result.ids.chair)).toHaveLength(1);
  expect(runsOf(result.ids.mug)).toHaveLength(1);
  expect(runsOf(result.ids.desk)).toHaveLength(1);
});

it('deleted its queues', () => {
  expect(result.queuesDeleted).toBe(true);
});
