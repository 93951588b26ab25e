import type { InboxTables } from '../identifiers.js';
import { type QueryRunner, raw, type StoredRow } from './executor.js';

/**
 * What a claim found: the key is now this transaction's, or it was there already, with its
 * stored row (`undefined` when the row was gone again by the time it was read: a purge).
 */
export type Claim = { readonly claimed: true } | { readonly claimed: false; readonly stored: StoredRow | undefined };

/** Claims one message's key inside the transaction that will also hold the handler's writes. */
export type ClaimMessage = (
  trx: QueryRunner,
  consumer: string,
  messageId: string,
  payloadHash: Buffer | null,
) => Promise<Claim>;

/**
 * The heart of the algorithm (docs/design.md, "The algorithm"): claim a message's key by
 * inserting it, inside the transaction that will also hold the handler's writes, and on a
 * duplicate read back the stored row, in one round trip: a call of the table's claim
 * function (migration 0002, {@link claimFunctionSql}).
 *
 * - `ON CONFLICT DO NOTHING` instead of catching a unique violation, which would abort the
 *   transaction. Never SELECT-then-INSERT: that races.
 * - A concurrent delivery of the same key blocks on the unique index until the first
 *   transaction ends: if it commits we find the key (a duplicate), if it rolls back we
 *   insert. `lock_timeout` bounds that wait; with `handlerTimeoutMs`, `statement_timeout`
 *   lets Postgres cut a handler statement that outlives the limit (see `runTimed`). Both
 *   are set local to the transaction (`set_config(..., true)`) inside the function, at no
 *   round trip of their own. Values are integers checked at construction, never user text.
 * - The stored row is read by a second statement inside the function: under READ
 *   COMMITTED a row committed by the transaction the insert waited for is visible to the
 *   next statement, not to the insert.
 * - Why a function: its statements' plans are cached by the server session, so neither a
 *   named prepared statement (session state, which PgBouncer in transaction mode cannot
 *   carry) nor a longer statement planned on every call (a CTE returning the stored row
 *   cost every message about 50 µs of planning) is needed, and a duplicate costs the
 *   three statements of a hand-written consumer (BEGIN, claim, COMMIT), not four
 *   (bench/claim-function.ts).
 */
export function compileClaimMessage(
  tables: InboxTables,
  lockTimeoutMs: number,
  handlerTimeoutMs: number | undefined,
): ClaimMessage {
  const statementTimeout =
    handlerTimeoutMs === undefined ? 'NULL' : `'${handlerTimeoutMs + statementGraceMs(handlerTimeoutMs)}ms'`;
  const text = `SELECT claimed, status, payload_hash, result, processed_at
FROM ${tables.claimFunction}($1::text, $2::text, $3::bytea, '${lockTimeoutMs}ms', ${statementTimeout})`;

  return async function claimMessage(trx, consumer, messageId, payloadHash) {
    const { rows } = await trx.executeQuery(
      raw<StoredRow & { claimed: boolean }>(text, [consumer, messageId, payloadHash]),
    );
    const row = rows[0];
    if (row?.claimed === true) return CLAIMED;
    return { claimed: false, stored: row };
  };
}

const CLAIMED: Claim = Object.freeze({ claimed: true });

/**
 * The claim on a database migrated only to 0001 (no claim function yet): the insert, and
 * on a duplicate a second round trip to read the stored row.
 *
 * The settings sit in the insert's WHERE clause, which Postgres evaluates once as a
 * one-time filter before the row is produced (so before the insert can wait); the same
 * call in a `FROM (SELECT ...)` subquery cost more per message in planning.
 */
export function compileClaimMessageWithoutFunction(
  tables: InboxTables,
  lockTimeoutMs: number,
  handlerTimeoutMs: number | undefined,
): ClaimMessage {
  const insertText = `INSERT INTO ${tables.qualified} (consumer, message_id, payload_hash)
SELECT $1::text, $2::text, $3::bytea
WHERE ${transactionSettings(lockTimeoutMs, handlerTimeoutMs)
    .map((setting) => `${setting} IS NOT NULL`)
    .join(' AND ')}
ON CONFLICT (consumer, message_id) DO NOTHING
RETURNING 1 AS claimed`;
  const readText = `SELECT status, payload_hash, result, processed_at
FROM ${tables.qualified}
WHERE consumer = $1 AND message_id = $2`;

  return async function claimMessageWithoutFunction(trx, consumer, messageId, payloadHash) {
    const { rows } = await trx.executeQuery(raw(insertText, [consumer, messageId, payloadHash]));
    if (rows.length > 0) return CLAIMED;
    // A new statement: under READ COMMITTED it sees a row committed by the transaction
    // the insert waited for.
    const read = await trx.executeQuery(raw<StoredRow>(readText, [consumer, messageId]));
    return { claimed: false, stored: read.rows[0] };
  };
}

/**
 * The claim function's DDL (migration 0002). `CREATE OR REPLACE`: idempotent. No `SET`
 * clause, which would make the function's settings end with the call: `lock_timeout` and
 * `statement_timeout` must hold for the rest of the transaction.
 */
export function claimFunctionSql(tables: InboxTables): string {
  return `-- inboxkit 0002: the claim as one function. It claims a message's key and, when the key
-- was there already, returns the stored row, in one round trip (packages/core/src/sql/claim-message.ts).
CREATE OR REPLACE FUNCTION ${tables.claimFunction}(
  p_consumer text, p_message_id text, p_payload_hash bytea, p_lock_timeout text, p_statement_timeout text
)
RETURNS TABLE (claimed boolean, status text, payload_hash bytea, result jsonb, processed_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $inboxkit$
#variable_conflict use_column
BEGIN
  -- Local to the calling transaction: they bound the insert's wait and the handler's statements.
  PERFORM pg_catalog.set_config('lock_timeout', p_lock_timeout, true);
  IF p_statement_timeout IS NOT NULL THEN
    PERFORM pg_catalog.set_config('statement_timeout', p_statement_timeout, true);
  END IF;
  INSERT INTO ${tables.qualified} (consumer, message_id, payload_hash)
  VALUES (p_consumer, p_message_id, p_payload_hash)
  ON CONFLICT (consumer, message_id) DO NOTHING;
  IF FOUND THEN
    RETURN QUERY SELECT true, NULL::text, NULL::bytea, NULL::jsonb, NULL::timestamptz;
  ELSE
    -- A new statement: under READ COMMITTED it sees a row committed by the transaction
    -- the insert waited for.
    RETURN QUERY SELECT false, k.status, k.payload_hash, k.result, k.processed_at
      FROM ${tables.qualified} AS k
      WHERE k.consumer = p_consumer AND k.message_id = p_message_id;
  END IF;
END
$inboxkit$;
`;
}

/** The claim function's signature, for `to_regprocedure` (see `find-claim-function.ts`). */
export function claimFunctionSignature(tables: InboxTables): string {
  return `${tables.claimFunction}(text, text, bytea, text, text)`;
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
