import { CompiledQuery, type QueryResult } from 'kysely';

/** The part of a Kysely transaction the statement needs. */
export interface QueryRunner {
  executeQuery<R>(query: CompiledQuery<R>): Promise<QueryResult<R>>;
}

/**
 * Sets the transaction's `lock_timeout` for the handler's statements. The key is claimed
 * with a short lock wait, so that a request whose key is in flight gives its connection
 * back at once and waits outside a transaction; the claim leaves that short value on the
 * transaction (core sets it with `set_config(..., true)`), and the handler's own lock waits
 * get `inFlightWaitMs` back here. Local to the transaction: nothing stays on the connection.
 */
export function compileSetLockTimeout(lockTimeoutMs: number) {
  const query = CompiledQuery.raw(`SELECT set_config('lock_timeout', '${lockTimeoutMs}ms', true)`);

  return async function setLockTimeout(trx: QueryRunner): Promise<void> {
    await trx.executeQuery(query);
  };
}
