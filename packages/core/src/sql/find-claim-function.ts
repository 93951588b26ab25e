import type { InboxTables } from '../identifiers.js';
import { claimFunctionSignature } from './claim-message.js';
import { type QueryRunner, raw } from './executor.js';

/** What the look-up found: whether the claim function may be called, and whether the table is partitioned. */
export interface TableLayout {
  readonly claimFunction: boolean;
  readonly partitioned: boolean;
}

/**
 * Whether the table's claim function (migration 0002) exists and may be called, and
 * whether the table is partitioned by time (docs/retention.md). Asked once per inbox,
 * before its first claim and outside any message's transaction, so a database migrated
 * only to 0001 (plain SQL users who have not applied 0002 yet) never sees a failing call
 * inside one.
 */
export function compileFindClaimFunction(tables: InboxTables) {
  const text = `SELECT p IS NOT NULL AND has_function_privilege(p, 'EXECUTE') AS usable,
  coalesce((SELECT relkind = 'p' FROM pg_catalog.pg_class WHERE oid = to_regclass($2)), false) AS partitioned
FROM to_regprocedure($1) AS p`;
  const signature = claimFunctionSignature(tables);

  return async function findClaimFunction(runner: QueryRunner): Promise<TableLayout> {
    const { rows } = await runner.executeQuery(
      raw<{ usable: boolean | null; partitioned: boolean }>(text, [signature, tables.qualified]),
    );
    return { claimFunction: rows[0]?.usable === true, partitioned: rows[0]?.partitioned === true };
  };
}
