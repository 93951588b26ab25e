import type { InboxTables } from '../identifiers.js';
import { type QueryRunner, raw } from './executor.js';

/**
 * Retention. Deletes expired keys in small batches, each its own short transaction, so a
 * purge never holds many row locks or one long transaction; `SKIP LOCKED` steps around
 * rows a consumer is writing. One process at a time deletes: each batch's transaction
 * first takes the purge lock (see `compileTryPurgeLock`).
 */
export function compilePurgeExpired(tables: InboxTables) {
  const keysText = `DELETE FROM ${tables.qualified}
WHERE (consumer, message_id) IN (
  SELECT consumer, message_id FROM ${tables.qualified}
  WHERE consumer = $1 AND processed_at < $2
  LIMIT $3
  FOR UPDATE SKIP LOCKED
)`;
  const attemptsText = `DELETE FROM ${tables.attemptsQualified} WHERE consumer = $1 AND last_attempt_at < $2`;

  return {
    async purgeBatch(runner: QueryRunner, consumer: string, before: Date, batchSize: number): Promise<number> {
      const result = await runner.executeQuery(raw(keysText, [consumer, before, batchSize]));
      return Number(result.numAffectedRows ?? 0n);
    },
    async purgeAttempts(runner: QueryRunner, consumer: string, before: Date): Promise<number> {
      const result = await runner.executeQuery(raw(attemptsText, [consumer, before]));
      return Number(result.numAffectedRows ?? 0n);
    },
  };
}

/**
 * The purge lock of a (table, consumer), taken without waiting by each batch's transaction
 * and released by its end. Transaction-scoped, never a session lock: behind PgBouncer in
 * transaction mode the next statement may run on another server connection, which could
 * neither see nor release a session lock, and the pooled connection would keep it
 * (docs/pgbouncer.md).
 */
export function compileTryPurgeLock() {
  const lockText = 'SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0)) AS locked';
  return async function tryPurgeLock(trx: QueryRunner, key: string): Promise<boolean> {
    const { rows } = await trx.executeQuery(raw<{ locked: boolean }>(lockText, [key]));
    return rows[0]?.locked === true;
  };
}
