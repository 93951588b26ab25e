import type { InboxTables } from '../identifiers.js';
import { statementGraceMs, transactionSettings } from './claim-message.js';
import { type QueryRunner, raw } from './executor.js';

/**
 * The batch twin of `claimMessage`: all of a batch's keys in one statement, so a batch of
 * 500 pays one round trip for deduplication, not 500.
 *
 * Keys are inserted in id order so that two batches sharing keys lock them in the same
 * order and cannot deadlock each other. Returns the ids this transaction now owns (the
 * others were already there, or committed by a transaction we waited for).
 *
 * Unlike the single claim, `set_config` stays in a `FROM` subquery here: in the `WHERE`
 * clause of a query over `unnest(...)` it would be a filter run once per row, and the
 * subquery's planning is paid once per batch.
 */
export function compileClaimMessages(tables: InboxTables, lockTimeoutMs: number, handlerTimeoutMs: number | undefined) {
  const text = `INSERT INTO ${tables.qualified} (consumer, message_id, payload_hash)
SELECT $1::text, k.id, k.hash
FROM unnest($2::text[], $3::bytea[]) AS k(id, hash),
     (SELECT ${transactionSettings(lockTimeoutMs, handlerTimeoutMs).join(', ')}) AS settings
ORDER BY k.id
ON CONFLICT (consumer, message_id) DO NOTHING
RETURNING message_id`;

  return async function claimMessages(
    trx: QueryRunner,
    consumer: string,
    ids: readonly string[],
    hashes: readonly (Buffer | null)[],
  ): Promise<Set<string>> {
    const { rows } = await trx.executeQuery(raw<{ message_id: string }>(text, [consumer, ids, hashes]));
    return new Set(rows.map((row) => row.message_id));
  };
}

/**
 * The batch claim on a partitioned table: the claim function's batch twin
 * (`sql/partitioned-table.ts`), which locks each key's hash and inserts the keys it does
 * not find, since `ON CONFLICT` cannot deduplicate across partitions. Same contract as
 * {@link compileClaimMessages}.
 */
export function compileClaimMessagesPartitioned(
  tables: InboxTables,
  lockTimeoutMs: number,
  handlerTimeoutMs: number | undefined,
) {
  const statementTimeout =
    handlerTimeoutMs === undefined ? 'NULL' : `'${handlerTimeoutMs + statementGraceMs(handlerTimeoutMs)}ms'`;
  const text = `SELECT k AS message_id
FROM ${tables.claimFunction}($1::text, $2::text[], $3::bytea[], 'processed', NULL::jsonb[], '${lockTimeoutMs}ms', ${statementTimeout}) AS k`;

  return async function claimMessagesPartitioned(
    trx: QueryRunner,
    consumer: string,
    ids: readonly string[],
    hashes: readonly (Buffer | null)[],
  ): Promise<Set<string>> {
    const { rows } = await trx.executeQuery(raw<{ message_id: string }>(text, [consumer, ids, hashes]));
    return new Set(rows.map((row) => row.message_id));
  };
}

/** The batch claim, plain or partitioned. */
export type ClaimMessages = ReturnType<typeof compileClaimMessages>;
