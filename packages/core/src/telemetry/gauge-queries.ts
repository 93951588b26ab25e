import type { Kysely } from 'kysely';
import type { InboxTables } from '../identifiers.js';
import { type QueryRunner, raw } from '../sql/executor.js';

/** The most rows a gauge ever counts: past it, it reports the bound. */
export const COUNT_BOUND = 10_000;
/** The longest one gauge statement may run before Postgres cancels it. */
export const GAUGE_STATEMENT_TIMEOUT_MS = 2000;

/** What one reading of the gauges found. */
export interface GaugeFigures {
  /** Rows of the inbox table (every consumer): the planner's estimate, or a bounded count. */
  readonly keys: number | undefined;
  /** When the consumer's oldest key was stored; `undefined` with no key or when the look-up ran out of time. */
  readonly oldestKeyAt: Date | undefined;
  /** The consumer's crash-loop suspects (bounded by {@link COUNT_BOUND}). */
  readonly suspects: number;
}

/**
 * The gauges' statements (docs/telemetry.md, "Gauges"). None reads a whole table, however
 * large it grows:
 * - keys: `pg_class.reltuples`, the planner's row estimate kept by `ANALYZE` and autovacuum;
 *   a table never analyzed (`-1`) is counted instead, up to {@link COUNT_BOUND} rows;
 * - the oldest key: the first row of the `processed_at` index that is the consumer's,
 *   `LIMIT 1`; with many other consumers' older keys in front it may walk far, so every
 *   statement runs under a `statement_timeout`, and a look-up cut short reports nothing;
 * - suspects: the attempts table holds only deliveries that may have crashed; counted up
 *   to {@link COUNT_BOUND}.
 * All in one short transaction (`set_config(..., true)`: no session state, PgBouncer-safe).
 */
export function compileGaugeQueries(tables: InboxTables) {
  const timeout = raw<unknown>(`SELECT set_config('statement_timeout', $1, true)`, [`${GAUGE_STATEMENT_TIMEOUT_MS}ms`]);
  const estimateText = `SELECT reltuples::float8 AS reltuples FROM pg_class WHERE oid = to_regclass($1)`;
  const countText = `SELECT count(*)::int AS n FROM (SELECT 1 FROM ${tables.qualified} LIMIT ${COUNT_BOUND}) bounded`;
  const suspectsText = `SELECT count(*)::int AS n FROM (SELECT 1 FROM ${tables.attemptsQualified} WHERE consumer = $1 LIMIT ${COUNT_BOUND}) bounded`;
  const oldestText = `SELECT processed_at FROM ${tables.qualified} WHERE consumer = $1 ORDER BY processed_at LIMIT 1`;

  return async function readGauges<DB>(db: Kysely<DB>, consumer: string): Promise<GaugeFigures> {
    return db.transaction().execute(async (trx) => {
      const runner = trx as unknown as QueryRunner;
      await runner.executeQuery(timeout);
      const estimate = (await runner.executeQuery(raw<{ reltuples: number }>(estimateText, [tables.qualified]))).rows[0]
        ?.reltuples;
      let keys = estimate;
      if (estimate !== undefined && estimate < 0) {
        keys = (await runner.executeQuery(raw<{ n: number }>(countText, []))).rows[0]?.n;
      }
      const suspects = (await runner.executeQuery(raw<{ n: number }>(suspectsText, [consumer]))).rows[0]?.n ?? 0;
      let oldestKeyAt: Date | undefined;
      try {
        oldestKeyAt = (await runner.executeQuery(raw<{ processed_at: Date }>(oldestText, [consumer]))).rows[0]
          ?.processed_at;
      } catch {
        // Cut short by the statement timeout: the transaction is aborted and ends in a
        // rollback; the figures read before it stand.
        oldestKeyAt = undefined;
      }
      return { keys: keys === undefined ? undefined : Math.round(keys), oldestKeyAt, suspects };
    });
  };
}
