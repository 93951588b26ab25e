import type { InboxTables } from '../identifiers.js';
import { type QueryRunner, raw, type StoredRow } from './executor.js';

/** Reads stored keys: the duplicate path of a batch, and the fast path of a suspect delivery. */
export function compileReadStored(tables: InboxTables) {
  const text = `SELECT message_id, status, payload_hash, result, processed_at
FROM ${tables.qualified}
WHERE consumer = $1 AND message_id = ANY($2::text[])`;

  return async function readStored(
    runner: QueryRunner,
    consumer: string,
    ids: readonly string[],
  ): Promise<Map<string, StoredRow>> {
    const { rows } = await runner.executeQuery(raw<StoredRow & { message_id: string }>(text, [consumer, ids]));
    return new Map(rows.map((row) => [row.message_id, row]));
  };
}
