import { NonRetryableError } from '../errors.js';
import type { InboxTables } from '../identifiers.js';
import { hasUnstorableJson, storableText } from '../storable.js';
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
 * (Kysely's `numAffectedRows`, int8 columns) are stored as strings. A string holding NUL or
 * a lone UTF-16 surrogate, which jsonb refuses, is stored with them replaced by U+FFFD: the
 * handler's writes stand and a redelivery gets the result back, so altered (the outcome of
 * this delivery carries the result as returned). A result that cannot be serialized at all
 * (a cycle, a throwing `toJSON`) fails the attempt for good: it would every time.
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
  if (!hasUnstorableJson(json)) return json;
  // Rare: a second pass only here, over plain JSON data, keys included.
  return JSON.stringify(storableData(JSON.parse(json)));
}

function storableData(value: unknown): unknown {
  if (typeof value === 'string') return storableText(value);
  if (Array.isArray(value)) return value.map(storableData);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([key, inner]) => [storableText(key), storableData(inner)]));
  }
  return value;
}
