import { Kafka, logLevel } from 'kafkajs';
import { sql } from 'kysely';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { type PaymentsRun, run } from '../../examples/kafka-payments/main.ts';
import { CLEAN_METADATA } from '../kafka/support/handover-metadata.ts';
import { createTestDatabase, type TestDatabase } from '../support/postgres.ts';

let t: TestDatabase;
let result: PaymentsRun;
beforeAll(async () => {
  t = await createTestDatabase('example_kafka_payments');
  result = await run({ databaseUrl: t.url, brokers: inject('kafkaBrokers'), charges: 24, timeoutMs: 25_000 });
}, 45_000);
afterAll(async () => {
  await t?.dispose();
});

/** One number from a query on the example's tables in the test's own database. */
async function count(query: ReturnType<typeof sql<{ n: number }>>): Promise<number> {
  const { rows } = await query.execute(t.db);
  return rows[0]!.n;
}

it('sent every request, a quarter of them twice', () => {
  expect(result.requests).toBe(24);
  expect(result.resent).toHaveLength(6);
  expect(result.records).toBe(30);
});

it('writes one charge and two balanced ledger entries per distinct id (counted in the database)', async () => {
  expect(await count(sql`SELECT count(*)::int AS n FROM kafka_payments_charges`)).toBe(24);
  expect(await count(sql`SELECT count(DISTINCT charge_id)::int AS n FROM kafka_payments_charges`)).toBe(24);
  expect(await count(sql`SELECT count(*)::int AS n FROM kafka_payments_ledger`)).toBe(48);
  const unbalanced = sql<{ n: number }>`SELECT count(*)::int AS n FROM kafka_payments_charges c
    WHERE (SELECT count(*) FROM kafka_payments_ledger l WHERE l.charge_id = c.charge_id) <> 2
       OR (SELECT sum(amount_cents) FROM kafka_payments_ledger l WHERE l.charge_id = c.charge_id) <> 0`;
  expect(await count(unbalanced)).toBe(0);
  expect(await count(sql`SELECT sum(amount_cents)::int AS n FROM kafka_payments_charges`)).toBe(result.expectedCents);
  expect(
    await count(sql`SELECT count(*)::int AS n FROM processed_messages WHERE consumer = 'examples.kafka-payments'`),
  ).toBe(24);
  // The example's own account agrees.
  expect(result).toMatchObject({ charges: 24, distinctCharges: 24, ledgerEntries: 48, unbalancedCharges: 0 });
  expect(result.chargedCents).toBe(result.expectedCents);
});

it('the re-sent records were duplicates: the bulk handler never saw them', () => {
  expect(result.settled).toEqual({ processed: 24, duplicate: 6 });
});

it('the batch that failed between the charges and the ledger left nothing behind', () => {
  expect(result.batches.rolledBack).toBe(1);
  expect(result.batches.committed).toBeGreaterThan(0);
  // Had the charges of the failed call stayed, their second insert would have failed on the
  // primary key, or they would lack ledger entries: the counts above would not hold.
});

it('SIGTERM shut the consumer down gracefully: exit code 0, every offset committed as clean', () => {
  expect(result.shutdown.exitCode).toBe(0);
  expect(result.shutdown.stopped).toBe(true);
  expect(result.offsets.length).toBe(2);
  for (const partition of result.offsets) {
    expect(partition.committed).toBe(partition.end);
    expect(partition.metadata).toBe(CLEAN_METADATA);
  }
  expect(result.offsets.reduce((sum, p) => sum + Number(p.end), 0)).toBe(30);
});

it('deleted its topics', async () => {
  const admin = new Kafka({ brokers: inject('kafkaBrokers'), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    const topics = await admin.listTopics();
    expect(topics).not.toContain(result.topic);
    expect(topics).not.toContain(`${result.topic}.dlq`);
  } finally {
    await admin.disconnect();
  }
});
