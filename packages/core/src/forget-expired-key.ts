import { type Inbox, inboxConfig } from './inbox.js';
import type { QueryRunner } from './sql/executor.js';
import { compileForgetExpiredKey } from './sql/forget-expired-key.js';

type ForgetExpiredKey = ReturnType<typeof compileForgetExpiredKey>;

// The statement is compiled once per inbox, on first use.
const compiled = new WeakMap<Inbox<unknown>, ForgetExpiredKey>();

/**
 * Deletes the key `messageId` of this inbox's consumer if it was stored before
 * `expiredBefore` (its retention window is over) and `purge()` has not removed it yet;
 * a fresher row under the same key stays. Returns whether a row was deleted. Runs outside
 * any transaction.
 *
 * A function of the adapter subpath rather than an `Inbox` method while the `Inbox` class
 * is being split; it may become one.
 */
export function forgetExpiredKey<DB>(inbox: Inbox<DB>, messageId: string, expiredBefore: Date): Promise<boolean> {
  const key = inbox as Inbox<unknown>;
  let forget = compiled.get(key);
  if (forget === undefined) {
    forget = compileForgetExpiredKey(inboxConfig(inbox).tables);
    compiled.set(key, forget);
  }
  return forget(inboxConfig(inbox).db as unknown as QueryRunner, inbox.consumer, messageId, expiredBefore);
}
