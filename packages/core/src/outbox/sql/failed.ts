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

/** Lists failed rows (all, or those with the given message ids), oldest first. */
export function compileListFailed(tables: OutboxTables) {
  const text = `SELECT sequence::text AS sequence, message_id, destination, routing_key, key, headers, attempts,
  last_error, created_at
FROM ${tables.qualified}
WHERE status = 'failed' AND sequence > $2::bigint AND ($3::text[] IS NULL OR message_id = ANY($3::text[]))
ORDER BY sequence LIMIT $1`;
  return async function listFailed(
    db: QueryRunner,
    limit: number,
    after: string,
    messageIds: readonly string[] | null,
  ): Promise<FailedRow[]> {
    return (await db.executeQuery<FailedRow>(raw(text, [limit, after, messageIds]))).rows;
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

/** What `outbox.backlog()` reads: bounded counts, statistics, the oldest pending rows. */
export interface BoundedBacklogRow {
  /** Rows among the first `bound` of the table (any order): all of them when fewer. */
  readonly sampled: number;
  readonly sampled_pending: number;
  readonly sampled_failed: number;
  /** Pending rows counted on the pending index, up to `bound`. */
  readonly pending: number;
  /** The earliest `created_at` among the first pending rows in sequence order. */
  readonly oldest_pending_at: Date | null;
  readonly reltuples: number | null;
  readonly status_vals: string[] | null;
  readonly status_freqs: number[] | null;
}

/**
 * The backlog's figures, none of which reads the whole table (docs/outbox.md, "Operating
 * the outbox"): at most `bound` rows of the table, at most `bound` entries of the pending
 * index, the first 100 entries of it for the oldest, and the planner's statistics.
 */
export function compileBoundedBacklog(tables: OutboxTables) {
  const text = `SELECT sample.sampled, sample.sampled_pending, sample.sampled_failed,
  (SELECT count(*)::int FROM (SELECT 1 FROM ${tables.qualified} WHERE status = 'pending' LIMIT $1) p) AS pending,
  (SELECT min(created_at) FROM (SELECT created_at FROM ${tables.qualified} WHERE status = 'pending' ORDER BY sequence LIMIT 100) o) AS oldest_pending_at,
  (SELECT c.reltuples::float8 FROM pg_class c WHERE c.oid = to_regclass($2)) AS reltuples,
  (SELECT s.most_common_vals::text::text[] FROM pg_stats s WHERE s.schemaname = $3 AND s.tablename = $4 AND s.attname = 'status') AS status_vals,
  (SELECT s.most_common_freqs FROM pg_stats s WHERE s.schemaname = $3 AND s.tablename = $4 AND s.attname = 'status') AS status_freqs
FROM (SELECT count(*)::int AS sampled, count(*) FILTER (WHERE status = 'pending')::int AS sampled_pending,
    count(*) FILTER (WHERE status = 'failed')::int AS sampled_failed
  FROM (SELECT status FROM ${tables.qualified} LIMIT $1) r) sample`;
  return async function boundedBacklog(db: QueryRunner, bound: number): Promise<BoundedBacklogRow> {
    const { rows } = await db.executeQuery<BoundedBacklogRow>(
      raw(text, [bound, tables.qualified, tables.schema, tables.table]),
    );
    return rows[0] as BoundedBacklogRow;
  };
}
