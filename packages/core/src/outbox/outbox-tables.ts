import { createHash } from 'node:crypto';
import { checkIdentifier, quoteIdentifier } from '../identifiers.js';

/** The outbox's table, checked and quoted once (docs/design.md, "The outbox"). */
export interface OutboxTables {
  readonly schema: string;
  readonly table: string;
  /** `"schema"."table"` */
  readonly qualified: string;
  /**
   * The `NOTIFY` channel of this table: one per table, so relays of another outbox in the
   * same database are not woken. A hash keeps it under Postgres' 63-byte limit.
   */
  readonly channel: string;
  /** The first key of the per-key advisory locks enqueue takes (the second is the key's hash). */
  readonly lockSpace: number;
}

export function outboxTables(schema: unknown = 'public', table: unknown = 'outbox'): OutboxTables {
  const s = checkIdentifier('schema', schema);
  const t = checkIdentifier('table', table, 63 - '_keyless_idx'.length);
  const qualified = `${quoteIdentifier(s)}.${quoteIdentifier(t)}`;
  const digest = createHash('sha256').update(qualified).digest();
  return Object.freeze({
    schema: s,
    table: t,
    qualified,
    channel: `inboxkit_outbox_${digest.subarray(0, 8).toString('hex')}`,
    lockSpace: digest.readInt32BE(8),
  });
}
