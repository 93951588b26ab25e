import type { InboxTables } from '../identifiers.js';
import { type QueryRunner, raw } from './executor.js';

/**
 * Records a message as dead-lettered, after the adapter's dead-letter publish was
 * confirmed: a redelivery is then a duplicate (`previousStatus: 'dead_lettered'`) and is
 * acked without being published again. Clears its crash-loop attempts in the same statement.
 * A key already there (processed meanwhile) is left as it is.
 *
 * `lock_timeout` bounds the wait on a key another delivery holds: the settings CTE runs
 * before both writes, which read from it, and `set_config(..., true)` is local to the
 * statement's own transaction.
 */
export function compileRecordDeadLetter(tables: InboxTables, lockTimeoutMs: number) {
  const text = `WITH settings AS MATERIALIZED (
  SELECT set_config('lock_timeout', '${lockTimeoutMs}ms', true) AS lock_timeout
), cleared AS (
  DELETE FROM ${tables.attemptsQualified}
  WHERE consumer = $1 AND message_id = $2 AND EXISTS (SELECT 1 FROM settings)
)
INSERT INTO ${tables.qualified} (consumer, message_id, payload_hash, status, result)
SELECT $1, $2, $3, 'dead_lettered', $4::jsonb FROM settings
ON CONFLICT (consumer, message_id) DO NOTHING`;

  return async function recordDeadLetter(
    runner: QueryRunner,
    consumer: string,
    messageId: string,
    payloadHash: Buffer | null,
    detailJson: string,
  ): Promise<void> {
    await runner.executeQuery(raw(text, [consumer, messageId, payloadHash, detailJson]));
  };
}

/**
 * The dead-letter record on a partitioned table: the key is inserted by the claim
 * function's batch twin (`sql/partitioned-table.ts`), under the key's lock, since
 * `ON CONFLICT` cannot deduplicate across partitions. Same contract as
 * {@link compileRecordDeadLetter}.
 */
export function compileRecordDeadLetterPartitioned(tables: InboxTables, lockTimeoutMs: number) {
  const text = `WITH cleared AS (
  DELETE FROM ${tables.attemptsQualified} WHERE consumer = $1 AND message_id = $2
)
SELECT count(*) AS recorded
FROM ${tables.claimFunction}($1::text, ARRAY[$2::text], ARRAY[$3::bytea], 'dead_lettered', ARRAY[$4::jsonb], '${lockTimeoutMs}ms', NULL)`;

  return async function recordDeadLetterPartitioned(
    runner: QueryRunner,
    consumer: string,
    messageId: string,
    payloadHash: Buffer | null,
    detailJson: string,
  ): Promise<void> {
    await runner.executeQuery(raw(text, [consumer, messageId, payloadHash, detailJson]));
  };
}

/** The dead-letter record, plain or partitioned. */
export type RecordDeadLetter = ReturnType<typeof compileRecordDeadLetter>;
