import type { InboxTables } from '../identifiers.js';
import { type QueryRunner, raw } from './executor.js';

/**
 * Deletes one key whose retention window has passed but that `purge()` has not removed
 * yet, so that the message carrying it runs as new (HTTP: a server may forget keys after
 * its published expiry, and a key must not outlive it by the purge schedule).
 *
 * Only an expired row goes (`processed_at < $3`, the start of the window): if a fresh row
 * was stored under the key meanwhile, it stays. (Not `processed_at = ` the value read: a
 * JavaScript Date drops Postgres' microseconds.) It runs on its own, outside any
 * transaction; the claim that follows decides between concurrent deliveries as always.
 */
export function compileForgetExpiredKey(tables: InboxTables) {
  const text = `DELETE FROM ${tables.qualified} WHERE consumer = $1 AND message_id = $2 AND processed_at < $3`;

  return async function forgetExpiredKey(
    runner: QueryRunner,
    consumer: string,
    messageId: string,
    expiredBefore: Date,
  ): Promise<boolean> {
    const result = await runner.executeQuery(raw(text, [consumer, messageId, expiredBefore]));
    return Number(result.numAffectedRows ?? 0n) > 0;
  };
}
