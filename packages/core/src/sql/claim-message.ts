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
 *   subquery cost more per message in planning (bench/core.ts). With `handlerTimeoutMs`,
 *   `statement_timeout` is set the same way, so Postgres cancels a handler statement that
 *   outlives the limit with no second connection (see `runTimed`).
 * - It is a plain insert on purpose: returning the stored row from the same statement
 *   (a CTE with a UNION) costs every new message more planning time than the extra
 *   SELECT costs a duplicate (measured: about 170 µs against one round trip), and that
 *   SELECT is needed anyway when the row was committed by the transaction we waited for
 *   (under READ COMMITTED it is visible to the next statement, not to this one).
 */
export function compileClaimMessage(tables: InboxTables, lockTimeoutMs: number, handlerTimeoutMs: number | undefined) {
  const text = `INSERT INTO ${tables.qualified} (consumer, message_id, payload_hash)
SELECT $1::text, $2::text, $3::bytea
WHERE ${transactionSettings(lockTimeoutMs, handlerTimeoutMs)
    .map((setting) => `${setting} IS NOT NULL`)
    .join(' AND ')}
ON CONFLICT (consumer, message_id) DO NOTHING
RETURNING 1 AS claimed`;

  return async function claimMessage(
    trx: QueryRunner,
    consumer: string,
    messageId: string,
    payloadHash: Buffer | null,
  ): Promise<boolean> {
    const { rows } = await trx.executeQuery(raw(text, [consumer, messageId, payloadHash]));
    return rows.length > 0;
  };
}

/**
 * The claim's settings, local to its transaction (`set_config(..., true)`): `lock_timeout`
 * bounds the wait on another delivery's key (and on any lock the handler's statements
 * wait for); `statement_timeout` cuts a handler statement that outlives `handlerTimeoutMs`.
 * Values are integers checked at construction, never user text.
 */
export function transactionSettings(lockTimeoutMs: number, handlerTimeoutMs: number | undefined): string[] {
  const settings = [`set_config('lock_timeout', '${lockTimeoutMs}ms', true)`];
  if (handlerTimeoutMs !== undefined) {
    settings.push(
      `set_config('statement_timeout', '${handlerTimeoutMs + statementGraceMs(handlerTimeoutMs)}ms', true)`,
    );
  }
  return settings;
}

/**
 * How much later than `handlerTimeoutMs` Postgres cuts a statement: the handler's signal
 * should abort first (a framework that answers a failed statement itself must already see
 * the timeout), even when a busy event loop fires the timer late. 10% of the limit, from
 * 250 ms to 2 s.
 */
export function statementGraceMs(handlerTimeoutMs: number): number {
  return Math.min(2000, Math.max(250, Math.round(handlerTimeoutMs / 10)));
}
