import type { InboxTables } from '../identifiers.js';
import { type QueryRunner, raw } from './executor.js';

/**
 * The heart of the algorithm: claim a message's key by inserting it, inside the
 * transaction that will also hold the handler's writes. Returns the connection's backend
 * pid when this transaction now owns the message (`handlerTimeoutMs` cancels the
 * handler's statement by it), `undefined` when the key was already there.
 *
 * - `ON CONFLICT DO NOTHING` instead of catching a unique violation, which would abort
 *   the transaction. Never SELECT-then-INSERT: that races.
 * - A concurrent delivery of the same key blocks on the unique index until the first
 *   transaction ends: if it commits we get no row (a duplicate), if it rolls back we
 *   insert. `lock_timeout` bounds that wait. It is set with `set_config(..., true)`, local
 *   to this transaction, inside the same statement, so it costs no round trip. It sits in
 *   the WHERE clause, which Postgres evaluates once as a one-time filter before the row
 *   is produced (so before the insert can wait); the same call in a `FROM (SELECT ...)`
 *   subquery cost about 50 µs more per message in planning (bench/core.ts).
 * - It is a plain insert on purpose: returning the stored row from the same statement
 *   (a CTE with a UNION) costs every new message more planning time than the extra
 *   SELECT costs a duplicate (measured: about 170 µs against one round trip), and that
 *   SELECT is needed anyway when the row was committed by the transaction we waited for
 *   (under READ COMMITTED it is visible to the next statement, not to this one).
 */
export function compileClaimMessage(tables: InboxTables, lockTimeoutMs: number) {
  const text = `INSERT INTO ${tables.qualified} (consumer, message_id, payload_hash)
SELECT $1::text, $2::text, $3::bytea
WHERE set_config('lock_timeout', '${lockTimeoutMs}ms', true) IS NOT NULL
ON CONFLICT (consumer, message_id) DO NOTHING
RETURNING pg_backend_pid() AS pid`;

  return async function claimMessage(
    trx: QueryRunner,
    consumer: string,
    messageId: string,
    payloadHash: Buffer | null,
  ): Promise<number | undefined> {
    const { rows } = await trx.executeQuery(raw<{ pid: number }>(text, [consumer, messageId, payloadHash]));
    return rows[0]?.pid;
  };
}
