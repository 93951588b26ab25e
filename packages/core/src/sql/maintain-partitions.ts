import type { InboxTables } from '../identifiers.js';
import { type QueryRunner, raw } from './executor.js';
import { MAINTENANCE_LOCK_TIMEOUT_MS } from './partitioned-table.js';

/** What one maintenance run did. */
export interface Maintenance {
  /** Partitions created ahead. */
  readonly created: number;
  /** Partitions dropped behind. */
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
