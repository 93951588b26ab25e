import type { RabbitMessage } from '@inboxkit/rabbitmq';
import { type Kysely, sql, type Transaction } from 'kysely';
import type { TestDB } from '../../support/postgres.ts';

/** The body of the messages the tests publish (messagesWithDuplicates). */
export type LedgerBody = { n: number; amountCents: number };

/** A handler that adds one ledger row per message: after `onMessage`, and a pause of `delayMs` when set. */
export function ledgerHandler(
  options: { delayMs?: number; onMessage?: () => void } = {},
): (trx: Transaction<TestDB>, message: RabbitMessage<LedgerBody>) => Promise<void> {
  const { delayMs, onMessage } = options;
  return async (trx, message) => {
    onMessage?.();
    if (delayMs !== undefined) await new Promise((resolve) => setTimeout(resolve, delayMs));
    await trx.insertInto('ledger').values({ charge_id: message.id, amount_cents: message.body.amountCents }).execute();
  };
}

/** Rows in `ledger` for ids starting with `prefix`: all of them, and distinct ids. */
export async function ledgerCounts(db: Kysely<TestDB>, prefix: string): Promise<{ rows: number; distinct: number }> {
  const { rows } = await sql<{ rows: string; distinct: string }>`
    SELECT count(*) AS rows, count(DISTINCT charge_id) AS distinct
    FROM ledger WHERE charge_id LIKE ${`${prefix}%`}`.execute(db);
  const row = rows[0];
  return { rows: Number(row?.rows ?? 0), distinct: Number(row?.distinct ?? 0) };
}

/** Ids that have more than one ledger row (applied twice). */
export async function appliedTwice(db: Kysely<TestDB>, prefix: string): Promise<string[]> {
  const { rows } = await sql<{ charge_id: string }>`
    SELECT charge_id FROM ledger WHERE charge_id LIKE ${`${prefix}%`}
    GROUP BY charge_id HAVING count(*) > 1 ORDER BY charge_id`.execute(db);
  return rows.map((row) => row.charge_id);
}

/** Keys the inbox holds for `consumer`, by status. */
export async function inboxKeys(
  db: Kysely<TestDB>,
  consumer: string,
): Promise<{ processed: number; deadLettered: number }> {
  const { rows } = await sql<{ status: string; n: string }>`
    SELECT status, count(*) AS n FROM processed_messages WHERE consumer = ${consumer} GROUP BY status`.execute(db);
  const of = (status: string) => Number(rows.find((row) => row.status === status)?.n ?? 0);
  return { processed: of('processed'), deadLettered: of('dead_lettered') };
}
