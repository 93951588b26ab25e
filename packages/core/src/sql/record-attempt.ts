import type { InboxTables } from '../identifiers.js';
import { type QueryRunner, raw } from './executor.js';

/**
 * Crash-loop protection. A delivery that may be a repeat of one that killed the process
 * (a RabbitMQ redelivery, the first new Kafka messages after an assignment) has its
 * attempt counted and committed *before* the handler runs, outside the business
 * transaction, so the count survives the process dying. The hot path never runs this.
 */
export function compileRecordAttempt(tables: InboxTables) {
  const text = `INSERT INTO ${tables.attemptsQualified} AS a (consumer, message_id, attempts)
VALUES ($1, $2, 1)
ON CONFLICT (consumer, message_id) DO UPDATE SET attempts = a.attempts + 1, last_attempt_at = now()
RETURNING attempts, first_attempt_at`;

  return async function recordAttempt(
    runner: QueryRunner,
    consumer: string,
    messageId: string,
  ): Promise<{ attempts: number; firstAttemptAt: Date }> {
    const { rows } = await runner.executeQuery(
      raw<{ attempts: number; first_attempt_at: Date }>(text, [consumer, messageId]),
    );
    const row = rows[0];
    if (row === undefined) throw new Error('inboxkit: recording an attempt returned no row');
    return { attempts: row.attempts, firstAttemptAt: row.first_attempt_at };
  };
}

/** Forgets a message's attempts, inside the transaction that finally processed it. */
export function compileClearAttempts(tables: InboxTables) {
  const text = `DELETE FROM ${tables.attemptsQualified} WHERE consumer = $1 AND message_id = $2`;

  return async function clearAttempts(trx: QueryRunner, consumer: string, messageId: string): Promise<void> {
    await trx.executeQuery(raw(text, [consumer, messageId]));
  };
}

/**
 * Takes back an attempt counted for a suspect that then did not run because another
 * delivery held its key: only a real crash may count (docs/design.md, "Liveness").
 */
export function compileUncountAttempt(tables: InboxTables) {
  const text = `UPDATE ${tables.attemptsQualified} SET attempts = attempts - 1
WHERE consumer = $1 AND message_id = $2 AND attempts > 0`;

  return async function uncountAttempt(runner: QueryRunner, consumer: string, messageId: string): Promise<void> {
    await runner.executeQuery(raw(text, [consumer, messageId]));
  };
}
