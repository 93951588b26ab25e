import { type QueryRunner, raw } from '../../sql/executor.js';
import type { OutboxRows } from '../outbox-message.js';
import type { OutboxTables } from '../outbox-tables.js';

/**
 * Inserts every message of one `enqueue` call in one statement (docs/design.md, "The outbox"):
 * 1. `locks` takes a transaction-scoped advisory lock per distinct key (sorted, so two
 *    calls cannot deadlock each other). A second transaction enqueuing the same key waits
 *    here until the first ends, so for one key the sequence order is the commit order.
 *    The insert reads `locks` through an init plan, which runs before the first row is
 *    made and so before the first sequence number is drawn.
 * 2. `inserted` writes the rows from `unnest`, in the order given.
 * 3. `pg_notify` wakes the relays, at commit (a rolled-back enqueue wakes nobody). With
 *    `notify: false` it is left out: a notifying commit takes a lock every notifying
 *    commit in the database shares, which costs concurrent writers throughput; relays then
 *    find the rows by polling.
 */
export function compileEnqueue(tables: OutboxTables, notify: boolean) {
  const text = `WITH locks AS MATERIALIZED (
  SELECT pg_advisory_xact_lock(${tables.lockSpace}, h)
  FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest($4::text[]) AS k WHERE k IS NOT NULL ORDER BY 1) AS ks
), inserted AS (
  INSERT INTO ${tables.qualified} (message_id, destination, routing_key, key, headers, payload)
  SELECT i, d, r, k, h::jsonb, p
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[]) AS m(i, d, r, k, h, p)
  WHERE (SELECT count(*) FROM locks) >= 0
  RETURNING 1
)
SELECT ${notify ? `pg_notify('${tables.channel}', '')` : '1'} FROM (SELECT 1 FROM inserted LIMIT 1) AS any_row`;

  return async function enqueue(trx: QueryRunner, rows: OutboxRows): Promise<void> {
    await trx.executeQuery(
      raw(text, [rows.messageIds, rows.destinations, rows.routingKeys, rows.keys, rows.headers, rows.payloads]),
    );
  };
}
