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

/** What one claim locked, and where its walk over the keys ended. */
export interface Claim {
  readonly rows: ClaimedRow[];
  /** The last key walked; `undefined` when the walk reached the last key (start again from the first). */
  readonly nextKey: string | undefined;
}

/**
 * Locks up to `limit` publishable rows for this relay's transaction, oldest first, without
 * a cursor over the sequence (docs/design.md, "The outbox"):
 * - `FOR UPDATE SKIP LOCKED`: rows another relay holds are passed over, not waited for; a
 *   row that commits late is simply found by a later claim;
 * - a keyed row is taken only when it is its key's oldest row (so one message per key is in
 *   flight across relays, and a failed message blocks its own key only). The status and due
 *   time are checked on the locked row itself, so a row another relay updated meanwhile is
 *   seen as it is now.
 *
 * The candidates come from two bounded places, so a key with a deep backlog behind a head
 * that cannot go (failed, backing off, held by another relay) costs every claim little:
 * - the `4 * limit` oldest pending rows, those that are their key's head;
 * - the heads of the next `limit` keys after `fromKey` in key order (`walk`, a loose index
 *   scan: each step jumps from a key to the first row of the next), and the `limit` oldest
 *   keyless rows. They only spread the claims over all
 *   keys, so that no key and no keyless message starves behind another key's backlog;
 *   correctness does not depend on them.
 */
/** Larger than any sequence: `(key, MAX)` sorts after every row of `key`. */
const MAX_SEQUENCE = '9223372036854775807';

export function compileClaim(tables: OutboxTables) {
  const t = tables.qualified;
  // Every per-key lookup is a row comparison on (key, sequence) ordered by both: only the
  // (key, sequence) index can answer it in order, so the plan does not depend on the
  // statistics (a key with a deep backlog looks common enough to the planner to scan the
  // primary key for it instead).
  const text = `WITH RECURSIVE walk AS (
  (SELECT key, sequence FROM ${t} WHERE (key, sequence) > ($2::text, ${MAX_SEQUENCE}) ORDER BY key, sequence LIMIT 1)
  UNION ALL
  SELECT n.key, n.sequence FROM walk AS w
  CROSS JOIN LATERAL (
    SELECT e.key, e.sequence FROM ${t} AS e
    WHERE (e.key, e.sequence) > (w.key, ${MAX_SEQUENCE}) ORDER BY e.key, e.sequence LIMIT 1
  ) AS n
), walked AS MATERIALIZED (
  SELECT key, sequence FROM walk LIMIT $1
), candidates AS (
  SELECT sequence FROM walked
  UNION
  (SELECT sequence FROM ${t} WHERE key IS NULL AND status = 'pending' ORDER BY sequence LIMIT $1)
  UNION
  SELECT o.sequence FROM (SELECT sequence, key FROM ${t} WHERE status = 'pending' ORDER BY sequence LIMIT 4 * $1) AS o
  WHERE o.key IS NULL OR o.sequence = (
    SELECT e.sequence FROM ${t} AS e WHERE (e.key, e.sequence) >= (o.key, 0) ORDER BY e.key, e.sequence LIMIT 1)
), claimed AS MATERIALIZED (
  SELECT c.sequence::text AS sequence, c.message_id, c.destination, c.routing_key, c.key, c.headers, c.payload,
    c.attempts, c.created_at
  FROM ${t} AS c
  WHERE c.sequence = ANY (ARRAY(SELECT sequence FROM candidates)) AND c.status = 'pending' AND c.next_attempt_at <= now()
  ORDER BY c.sequence
  LIMIT $1
  FOR UPDATE OF c SKIP LOCKED
)
SELECT claimed.*, ends.walked, ends.last_key
FROM (SELECT count(*)::int AS walked, max(key) AS last_key FROM walked) AS ends
LEFT JOIN claimed ON true
ORDER BY claimed.sequence::bigint`;

  return async function claim(trx: QueryRunner, limit: number, fromKey: string): Promise<Claim> {
    const { rows } = await trx.executeQuery<ClaimedRow & { walked: number; last_key: string | null }>(
      raw(text, [limit, fromKey]),
    );
    const ends = rows[0];
    const nextKey = ends !== undefined && ends.walked >= limit && ends.last_key !== null ? ends.last_key : undefined;
    return { rows: rows.filter((row) => row.sequence !== null), nextKey };
  };
}
