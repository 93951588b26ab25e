import { NonRetryableError } from '../errors.js';
import type { InboxTables } from '../identifiers.js';
import { hasUnstorableJson } from '../storable.js';
import { type QueryRunner, raw } from './executor.js';

/**
 * Stores handlers' results (JSON) on their keys, in the transaction that claimed them.
 * One statement for any number of messages; skipped when no handler returned anything.
 */
export function compileStoreResults(tables: InboxTables) {
  const text = `UPDATE ${tables.qualified} AS t
SET result = r.result
FROM unnest($2::text[], $3::jsonb[]) AS r(id, result)
WHERE t.consumer = $1 AND t.message_id = r.id`;

  return async function storeResults(
    trx: QueryRunner,
    consumer: string,
    ids: readonly string[],
    jsonResults: readonly string[],
  ): Promise<void> {
    await trx.executeQuery(raw(text, [consumer, ids, jsonResults]));
  };
}

/**
 * JSON text of a handler's result; `undefined` when there is nothing to store. BigInts
 * (Kysely's `numAffectedRows`, int8 columns) are stored as strings. A result that cannot
 * be stored (a cycle, a throwing `toJSON`, a string holding NUL or a lone surrogate, which
 * jsonb refuses) fails the attempt for good, before any statement: it would every time.
 * The result is the user's data, so it is refused rather than altered.
 */
export function resultJson(result: unknown): string | undefined {
  if (result === undefined) return undefined;
  let json: string;
  try {
    json = JSON.stringify(result, (_key, value) => (typeof value === 'bigint' ? value.toString() : value));
  } catch (error) {
    throw new NonRetryableError(
      `The handler's result cannot be stored as JSON (${(error as Error).message}): return a JSON-serializable value, or nothing, or set storeResults: false.`,
      { cause: error },
    );
  }
  if (hasUnstorableJson(json)) {
    throw new NonRetryableError(
      "The handler's result holds a NUL character or a lone UTF-16 surrogate, which Postgres jsonb cannot store: remove it from the result, or set storeResults: false.",
    );
  }
  return json;
}
