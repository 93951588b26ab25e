import { type QueryRunner, raw } from '../../sql/executor.js';
import type { OutboxTables } from '../outbox-tables.js';

/** A row the broker refused: its new attempt count, delay and error. */
export interface Refusal {
  readonly sequence: string;
  readonly error: string;
  readonly delayMs: number;
  /** Past the policy: set aside as `failed`. */
  readonly fail: boolean;
}

/**
 * What a relay writes after the broker answered, in the claim's transaction, in one
 * statement: confirmed rows deleted, refused rows given their next attempt time (or set
 * aside as failed) and their error.
 */
export function compileSettle(tables: OutboxTables) {
  const text = `WITH deleted AS (
  DELETE FROM ${tables.qualified} WHERE sequence = ANY($1::bigint[]) RETURNING 1
), refused AS (
  UPDATE ${tables.qualified} AS o
  SET attempts = o.attempts + 1,
      last_error = r.error,
      next_attempt_at = now() + r.delay_ms * interval '1 millisecond',
      status = CASE WHEN r.fail THEN 'failed' ELSE 'pending' END
  FROM unnest($2::bigint[], $3::text[], $4::float8[], $5::boolean[]) AS r(sequence, error, delay_ms, fail)
  WHERE o.sequence = r.sequence
  RETURNING 1
)
SELECT (SELECT count(*) FROM deleted)::int AS deleted, (SELECT count(*) FROM refused)::int AS refused`;

  return async function settle(trx: QueryRunner, confirmed: readonly string[], refusals: readonly Refusal[]) {
    await trx.executeQuery(
      raw(text, [
        confirmed,
        refusals.map((r) => r.sequence),
        refusals.map((r) => r.error),
        refusals.map((r) => r.delayMs),
        refusals.map((r) => r.fail),
      ]),
    );
  };
}
