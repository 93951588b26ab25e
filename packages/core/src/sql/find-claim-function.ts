import type { InboxTables } from '../identifiers.js';
import { claimFunctionSignature } from './claim-message.js';
import { type QueryRunner, raw } from './executor.js';

/**
 * Whether the table's claim function (migration 0002) exists and may be called. Asked once
 * per inbox, before its first claim and outside any message's transaction, so a database
 * migrated only to 0001 (plain SQL users who have not applied 0002 yet) never sees a
 * failing call inside one.
 */
export function compileFindClaimFunction(tables: InboxTables) {
  const text = `SELECT p IS NOT NULL AND has_function_privilege(p, 'EXECUTE') AS usable
FROM to_regprocedure($1) AS p`;
  const signature = claimFunctionSignature(tables);

  return async function findClaimFunction(runner: QueryRunner): Promise<boolean> {
    const { rows } = await runner.executeQuery(raw<{ usable: boolean | null }>(text, [signature]));
    return rows[0]?.usable === true;
  };
}
