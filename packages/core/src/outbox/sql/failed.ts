import { type QueryRunner, raw } from '../../sql/executor.js';
import type { OutboxTables } from '../outbox-tables.js';

/** A row set aside as failed, as `outbox.failed()` lists it. */
export interface FailedRow {
  readonly sequence: string;
  readonly message_id: string;
  readonly destination: string;
  readonly routing_key: string | null;
  readonly key: string | null;
  readonly headers: Record<string, string>;
  readonly attempts: number;
  readonly last_error: string | null;
  readonly created_at: Date;
}

/** Lists failed rows, oldest first. */
export function compileListFailed(tables: OutboxTables) {
  const text = `SELECT sequence::text AS sequence, message_id, destination, routing_key, key, headers, attempts,
  last_error, created_at
FROM ${tables.qualified} WHERE status = 'failed' AND sequence > $2::bigint ORDER BY sequence LIMIT $1`;
  return async function listFailed(db: QueryRunner, limit: number, after: string): Promise<FailedRow[]> {
    return (await db.executeQuery<FailedRow>(raw(text, [limit, after]))).rows;
  };
}

/**
 * Puts failed rows (all, or those with the given message ids) back to pending with a fresh
 * attempt count, and wakes the relays at commit.
 */
export function compileRetryFailed(tables: OutboxTables) {
  const text = `WITH retried AS (
  UPDATE ${tables.qualified}
  SET status = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL
  WHERE status = 'failed' AND ($1::text[] IS NULL OR message_id = ANY($1::text[]))
  RETURNING 1
)
SELECT (SELECT count(*) FROM retried)::int AS retried, pg_notify('${tables.channel}', '') AS notified`;
  return async function retryFailed(db: QueryRunner, messageIds: readonly string[] | null): Promise<number> {
    const { rows } = await db.executeQuery<{ retried: number }>(raw(text, [messageIds]));
    return rows[0]?.retried ?? 0;
  };
}

/** Pending and failed counts and the age of the oldest pending row, for the `backlog` event. */
export function compileBacklog(tables: OutboxTables) {
  const text = `SELECT count(*) FILTER (WHERE status = 'pending')::int AS pending,
  count(*) FILTER (WHERE status = 'failed')::int AS failed,
  (extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending')) * 1000)::float8 AS oldest_ms
FROM ${tables.qualified}`;
  return async function backlog(db: QueryRunner) {
    const { rows } = await db.executeQuery<{ pending: number; failed: number; oldest_ms: number | null }>(
      raw(text, []),
    );
    const row = rows[0];
    return { pending: row?.pending ?? 0, failed: row?.failed ?? 0, oldestPendingMs: row?.oldest_ms ?? null };
  };
}
