import type { InboxTables } from '../identifiers.js';
import { type QueryRunner, raw } from './executor.js';

/**
 * The statements behind `inboxkit status` (docs/design.md, "Operations"). None of them
 * reads a whole table: the inbox may hold a hundred million keys.
 *
 * - consumers: a loose index scan of the primary key (one index probe per consumer),
 *   plus the consumers of the (small) attempts table;
 * - keys and dead-lettered keys: counted exactly up to a bound (`LIMIT` on the primary
 *   key's range for the consumer), else estimated from the planner's statistics;
 * - the oldest key: the first row of the `processed_at` index that belongs to the
 *   consumer, under the caller's `statement_timeout`;
 * - crash-loop suspects: the attempts table, which holds only deliveries that may have
 *   crashed and is cleared when they finish.
 */
export function compileAdminStatus(tables: InboxTables) {
  const consumersText = `WITH RECURSIVE c(consumer) AS (
  (SELECT consumer FROM ${tables.qualified} ORDER BY consumer LIMIT 1)
  UNION ALL
  SELECT (SELECT p.consumer FROM ${tables.qualified} p WHERE p.consumer > c.consumer ORDER BY p.consumer LIMIT 1)
  FROM c WHERE c.consumer IS NOT NULL
)
SELECT consumer FROM c WHERE consumer IS NOT NULL
UNION
SELECT DISTINCT consumer FROM ${tables.attemptsQualified}
ORDER BY consumer`;
  const boundedCountText = `SELECT count(*)::int AS keys, count(*) FILTER (WHERE status = 'dead_lettered')::int AS dead_lettered
FROM (SELECT status FROM ${tables.qualified} WHERE consumer = $1 LIMIT $2) bounded`;
  const oldestText = `SELECT processed_at FROM ${tables.qualified} WHERE consumer = $1 ORDER BY processed_at LIMIT 1`;
  const attemptsText = `SELECT count(*)::int AS suspects, max(attempts)::int AS max_attempts, max(last_attempt_at) AS last_attempt_at
FROM ${tables.attemptsQualified} WHERE consumer = $1`;
  // pg_stats' most common values are an anyarray: cast through text to read them.
  const statsText = `SELECT c.reltuples::float8 AS reltuples,
  (SELECT s.most_common_vals::text::text[] FROM pg_stats s WHERE s.schemaname = $1 AND s.tablename = $2 AND s.attname = 'consumer') AS consumer_vals,
  (SELECT s.most_common_freqs FROM pg_stats s WHERE s.schemaname = $1 AND s.tablename = $2 AND s.attname = 'consumer') AS consumer_freqs,
  (SELECT s.n_distinct FROM pg_stats s WHERE s.schemaname = $1 AND s.tablename = $2 AND s.attname = 'consumer') AS consumer_distinct,
  (SELECT s.most_common_vals::text::text[] FROM pg_stats s WHERE s.schemaname = $1 AND s.tablename = $2 AND s.attname = 'status') AS status_vals,
  (SELECT s.most_common_freqs FROM pg_stats s WHERE s.schemaname = $1 AND s.tablename = $2 AND s.attname = 'status') AS status_freqs
FROM pg_class c WHERE c.oid = to_regclass($3)`;
  const expiredText = `SELECT count(*)::int AS expired FROM (
  SELECT 1 FROM ${tables.qualified} WHERE consumer = $1 AND processed_at < $2 LIMIT $3
) bounded`;

  return {
    async consumers(runner: QueryRunner): Promise<string[]> {
      const { rows } = await runner.executeQuery(raw<{ consumer: string }>(consumersText, []));
      return rows.map((row) => row.consumer);
    },
    async boundedCount(
      runner: QueryRunner,
      consumer: string,
      bound: number,
    ): Promise<{ keys: number; deadLettered: number }> {
      const { rows } = await runner.executeQuery(
        raw<{ keys: number; dead_lettered: number }>(boundedCountText, [consumer, bound]),
      );
      return { keys: rows[0]?.keys ?? 0, deadLettered: rows[0]?.dead_lettered ?? 0 };
    },
    async oldest(runner: QueryRunner, consumer: string): Promise<Date | null> {
      const { rows } = await runner.executeQuery(raw<{ processed_at: Date }>(oldestText, [consumer]));
      return rows[0]?.processed_at ?? null;
    },
    async attempts(
      runner: QueryRunner,
      consumer: string,
    ): Promise<{ suspects: number; maxAttempts: number | null; lastAttemptAt: Date | null }> {
      const { rows } = await runner.executeQuery(
        raw<{ suspects: number; max_attempts: number | null; last_attempt_at: Date | null }>(attemptsText, [consumer]),
      );
      const row = rows[0];
      return {
        suspects: row?.suspects ?? 0,
        maxAttempts: row?.max_attempts ?? null,
        lastAttemptAt: row?.last_attempt_at ?? null,
      };
    },
    async stats(runner: QueryRunner): Promise<TableStats | undefined> {
      const { rows } = await runner.executeQuery(
        raw<TableStatsRow>(statsText, [tables.schema, tables.table, tables.qualified]),
      );
      const row = rows[0];
      if (row === undefined) return undefined;
      return {
        reltuples: row.reltuples,
        consumerValues: row.consumer_vals ?? [],
        consumerFreqs: row.consumer_freqs ?? [],
        consumerDistinct: row.consumer_distinct,
        statusValues: row.status_vals ?? [],
        statusFreqs: row.status_freqs ?? [],
      };
    },
    async boundedExpired(runner: QueryRunner, consumer: string, before: Date, bound: number): Promise<number> {
      const { rows } = await runner.executeQuery(raw<{ expired: number }>(expiredText, [consumer, before, bound]));
      return rows[0]?.expired ?? 0;
    },
  };
}

interface TableStatsRow {
  readonly reltuples: number;
  readonly consumer_vals: string[] | null;
  readonly consumer_freqs: number[] | null;
  readonly consumer_distinct: number | null;
  readonly status_vals: string[] | null;
  readonly status_freqs: number[] | null;
}

/** What the planner knows of the inbox table (from the last `ANALYZE`). */
export interface TableStats {
  /** Estimated rows; `-1` when the table was never analyzed. */
  readonly reltuples: number;
  readonly consumerValues: readonly string[];
  readonly consumerFreqs: readonly number[];
  /** pg_stats' `n_distinct`: a count, or minus a fraction of the rows. */
  readonly consumerDistinct: number | null;
  readonly statusValues: readonly string[];
  readonly statusFreqs: readonly number[];
}
