import { type QueryRunner, raw } from '../../sql/executor.js';
import type { OutboxTables } from '../outbox-tables.js';

/** A claimed outbox row, as the relay reads it. */
export interface ClaimedRow {
  /** bigint, as text. */
  readonly sequence: string;
  readonly message_id: string;
  readonly destination: string;
  readonly routing_key: string | null;
  readonly key: string | null;
  readonly headers: Record<string, string>;
  readonly payload: Buffer;
  readonly attempts: number;
  readonly created_at: Date;
}

/**
 * Locks up to `limit` publishable rows for this relay's transaction, oldest first, without
 * a cursor (docs/design.md, "The outbox"):
 * - `FOR UPDATE SKIP LOCKED`: rows another relay holds are passed over, not waited for;
 *   a row that commits late is simply found by a later claim (no sequence is ever skipped
 *   for good, unlike a cursor's "everything up to N is done");
 * - a keyed row is taken only when no older row of its key exists (pending, waiting for a
 *   retry, failed, or held by another relay): one message per key in flight, across relays,
 *   and a failed message blocks its own key only.
 */
export function compileClaim(tables: OutboxTables) {
  const text = `SELECT o.sequence::text AS sequence, o.message_id, o.destination, o.routing_key, o.key,
  o.headers, o.payload, o.attempts, o.created_at
FROM ${tables.qualified} AS o
WHERE o.status = 'pending' AND o.next_attempt_at <= now()
  AND (o.key IS NULL OR NOT EXISTS (
    SELECT 1 FROM ${tables.qualified} AS e WHERE e.key = o.key AND e.sequence < o.sequence))
ORDER BY o.sequence
LIMIT $1
FOR UPDATE OF o SKIP LOCKED`;

  return async function claim(trx: QueryRunner, limit: number): Promise<ClaimedRow[]> {
    return (await trx.executeQuery<ClaimedRow>(raw(text, [limit]))).rows;
  };
}
