import { sql } from 'kysely';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { type RpcRun, run } from '../../examples/rabbitmq-rpc/main.ts';
import { createTestDatabase, type TestDatabase } from '../support/postgres.ts';

let t: TestDatabase;
let result: RpcRun;
beforeAll(async () => {
  t = await createTestDatabase('example_rabbitmq_rpc');
  result = await run({
    databaseUrl: t.url,
    amqpUrl: inject('amqpUrl'),
    handlerMs: 500,
    firstTimeoutMs: 200,
    retryTimeoutMs: 5000,
  });
}, 30_000);
afterAll(async () => {
  await t?.dispose();
});

it('the first attempt times out while the server works; the retry, same message id, gets a reply', () => {
  const [first, retry] = result.attempts;
  expect(result.attempts).toHaveLength(2);
  expect(first?.reply).toBeUndefined();
  expect(retry?.reply).toMatchObject({
    correlationId: retry?.correlationId,
    messageId: result.requestId,
    duplicate: true,
  });
  expect(retry?.correlationId).not.toBe(first?.correlationId);
  // The retry went out before the first request was answered: the server had it in hand.
  expect(retry!.sentAtMs).toBeLessThan(result.lateReplies[0]!.atMs);
});

it("the retry's reply is the original reply, stored with the request's key", async () => {
  const original = result.lateReplies;
  expect(original).toHaveLength(1);
  expect(original[0]).toMatchObject({
    correlationId: result.attempts[0]?.correlationId,
    messageId: result.requestId,
    duplicate: false,
  });
  const retried = result.attempts[1]!.reply!;
  // Equal as JSON (the stored copy comes back from jsonb, whose key order differs).
  expect(retried.body).toEqual(original[0]!.body);
  expect(result.storedResult).toEqual(original[0]!.body);
  const { rows } = await sql<{ reservation_id: string }>`
    SELECT reservation_id::text FROM rabbitmq_rpc_reservations`.execute(t.db);
  expect(rows).toEqual([{ reservation_id: retried.body.reservationId }]);
});

it('the handler ran once', async () => {
  expect(result.handlerRuns).toBe(1);
  expect(result.serverLog.filter((e) => e.text.startsWith('handler runs'))).toHaveLength(1);
  expect(result.reservations).toHaveLength(1);
  const { rows } = await sql<{ n: number }>`
    SELECT count(*)::int AS n FROM processed_messages WHERE consumer = 'examples.rabbitmq-rpc'`.execute(t.db);
  expect(rows[0]?.n).toBe(1);
});
