import type { InboxTables } from '../identifiers.js';
import { type QueryRunner, raw } from './executor.js';

/**
 * Removes keys a batch claimed for messages whose handler then failed, so the batch's
 * commit never records a message as processed that was not. Runs in the batch's own
 * transaction, once, for all failed messages.
 */
export function compileReleaseMessages(tables: InboxTables) {
  const text = `DELETE FROM ${tables.qualified} WHERE consumer = $1 AND message_id = ANY($2::text[])`;

  return async function releaseMessages(trx: QueryRunner, consumer: string, ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    await trx.executeQuery(raw(text, [consumer, ids]));
  };
}
