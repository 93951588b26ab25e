import { CompiledQuery, type QueryResult } from 'kysely';

/** The part of a Kysely instance the statement needs. */
export interface QueryRunner {
  executeQuery<R>(query: CompiledQuery<R>): Promise<QueryResult<R>>;
}

/**
 * Deletes one key whose retention window has passed but that `purge()` has not removed
 * yet, so that the request carrying it runs as new (the draft lets a server forget keys
 * after its published expiry; a key must not outlive it by the purge schedule).
 *
 * Only an expired row is deleted (`processed_at < $3`, the start of the window): if a
 * request stored a fresh response under the key meanwhile, that one stays. (Not
 * `processed_at = ` the value read: a JavaScript Date drops Postgres' microseconds.) Runs on its own, outside
 * any transaction; the insert-first claim that follows decides between concurrent requests
 * as it always does. Core has no statement for one key, hence this one, written in core's
 * style: the table name checked and quoted by core, values as parameters.
 */
export function compileForgetExpiredKey(qualifiedTable: string) {
  const text = `DELETE FROM ${qualifiedTable} WHERE consumer = $1 AND message_id = $2 AND processed_at < $3`;

  return async function forgetExpiredKey(
    runner: QueryRunner,
    consumer: string,
    messageId: string,
    expiredBefore: Date,
  ): Promise<boolean> {
    const result = await runner.executeQuery(CompiledQuery.raw(text, [consumer, messageId, expiredBefore]));
    return Number(result.numAffectedRows ?? 0n) > 0;
  };
}
