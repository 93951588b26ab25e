import type { InboxTables } from '../identifiers.js';
import { type QueryRunner, raw } from './executor.js';
import { MAINTENANCE_LOCK_TIMEOUT_MS } from './partitioned-table.js';

/** What one maintenance run did. */
export interface Maintenance {
  /** Partitions created ahead. */
  readonly created: number;
  /** Partitions taken out behind (detached, then dropped by {@link compileDropDetachedPartitions}). */
  readonly dropped: number;
  /** Steps that did not get their lock in time, left to the next run. */
  readonly blocked: number;
}

/**
 * Retention of a partitioned table: one call of its maintenance function
 * (`sql/partitioned-table.ts`), which creates partitions ahead and drops those whose keys
 * are all older than `olderThanMs` (or the table's retention floor, if larger). The
 * caller holds the maintenance lock (see `compileTryPurgeLock`).
 */
export function compileMaintainPartitions(tables: InboxTables) {
  const text = `SELECT created, dropped, blocked FROM ${tables.maintainFunction}($1::bigint, '${MAINTENANCE_LOCK_TIMEOUT_MS}ms')`;
  return async function maintainPartitions(runner: QueryRunner, olderThanMs: number): Promise<Maintenance> {
    const { rows } = await runner.executeQuery(raw<Maintenance>(text, [Math.floor(olderThanMs)]));
    const row = rows[0];
    return { created: row?.created ?? 0, dropped: row?.dropped ?? 0, blocked: row?.blocked ?? 0 };
  };
}

/**
 * The second step of maintenance: drops the partitions the first detached, in a
 * transaction of its own (one that holds no lock on the inbox table, so claims never wait
 * on the unlinking of files). Returns how many it dropped.
 */
export function compileDropDetachedPartitions(tables: InboxTables) {
  const text = `SELECT ${tables.maintainFunction}('${MAINTENANCE_LOCK_TIMEOUT_MS}ms') AS dropped`;
  return async function dropDetachedPartitions(runner: QueryRunner): Promise<number> {
    const { rows } = await runner.executeQuery(raw<{ dropped: number }>(text, []));
    return rows[0]?.dropped ?? 0;
  };
}
