import type { InboxTables } from '../identifiers.js';
import { type QueryRunner, raw } from './executor.js';

/** A key as `inboxkit find` shows it, with its crash-loop attempts when it has any. */
export interface AdminKeyRow {
  readonly message_id: string;
  readonly status: 'processed' | 'dead_lettered' | null;
  readonly payload_hash: Buffer | null;
  readonly result: unknown;
  readonly processed_at: Date | null;
  readonly attempts: number | null;
  readonly first_attempt_at: Date | null;
  readonly last_attempt_at: Date | null;
}

/**
 * The key statements of the operations commands: read keys, forget keys, forget
 * dead-lettered keys. Each forget deletes the key's crash-loop attempts with it, so that a
 * message let run again starts with a clean count.
 */
export function compileAdminKeys(tables: InboxTables) {
  const readText = `SELECT coalesce(k.message_id, a.message_id) AS message_id, k.status, k.payload_hash, k.result, k.processed_at,
  a.attempts, a.first_attempt_at, a.last_attempt_at
FROM (SELECT * FROM ${tables.qualified} WHERE consumer = $1 AND message_id = ANY($2::text[])) k
FULL JOIN (SELECT * FROM ${tables.attemptsQualified} WHERE consumer = $1 AND message_id = ANY($2::text[])) a
  ON a.message_id = k.message_id`;
  const anyKeyText = `SELECT EXISTS (SELECT 1 FROM ${tables.qualified} WHERE consumer = $1)
  OR EXISTS (SELECT 1 FROM ${tables.attemptsQualified} WHERE consumer = $1) AS known`;
  const lockTimeoutText = `SELECT set_config('lock_timeout', $1, true)`;
  const forgetText = `DELETE FROM ${tables.qualified} WHERE consumer = $1 AND message_id = ANY($2::text[]) RETURNING message_id`;
  // Only a dead-lettered key: a processed one must keep deduplicating.
  const forgetDeadLetteredText = `DELETE FROM ${tables.qualified}
WHERE consumer = $1 AND message_id = ANY($2::text[]) AND status = 'dead_lettered' RETURNING message_id`;
  const forgetAttemptsText = `DELETE FROM ${tables.attemptsQualified} WHERE consumer = $1 AND message_id = ANY($2::text[]) RETURNING message_id`;

  return {
    async read(runner: QueryRunner, consumer: string, ids: readonly string[]): Promise<AdminKeyRow[]> {
      const { rows } = await runner.executeQuery(raw<AdminKeyRow>(readText, [consumer, ids]));
      return rows;
    },
    async consumerKnown(runner: QueryRunner, consumer: string): Promise<boolean> {
      const { rows } = await runner.executeQuery(raw<{ known: boolean }>(anyKeyText, [consumer]));
      return rows[0]?.known === true;
    },
    async setLockTimeout(runner: QueryRunner, lockTimeoutMs: number): Promise<void> {
      await runner.executeQuery(raw(lockTimeoutText, [`${lockTimeoutMs}ms`]));
    },
    async forget(
      runner: QueryRunner,
      consumer: string,
      ids: readonly string[],
      onlyDeadLettered: boolean,
    ): Promise<{ keys: string[]; attempts: string[] }> {
      const keys = await runner.executeQuery(
        raw<{ message_id: string }>(onlyDeadLettered ? forgetDeadLetteredText : forgetText, [consumer, ids]),
      );
      const deleted = keys.rows.map((row) => row.message_id);
      // A dead-lettered key's attempts were cleared when it was recorded; with a processed
      // key kept, its attempts stay too.
      const attemptIds = onlyDeadLettered ? deleted : ids;
      const attempts =
        attemptIds.length === 0
          ? { rows: [] }
          : await runner.executeQuery(raw<{ message_id: string }>(forgetAttemptsText, [consumer, attemptIds]));
      return { keys: deleted, attempts: attempts.rows.map((row) => row.message_id) };
    },
  };
}
