import { CompiledQuery, type QueryResult } from 'kysely';
import type { OffsetTable } from '../offset-table.js';

/** The part of a Kysely instance or transaction the statements need. */
export interface QueryRunner {
  executeQuery<R>(query: CompiledQuery<R>): Promise<QueryResult<R>>;
}

/** Key of a row: `[group_id, topic, partition]`. */
type RowKey = readonly [string, string, number];

/**
 * The offsets table's statements (docs/design.md, "Kafka offsets in Postgres"), built once
 * per consumer: only values travel as parameters.
 *
 * - `lockAndAdvance`: the first statement of every transaction with `dedup: 'offsets'`. It
 *   locks the partition's row (`SELECT ... FOR UPDATE` in a subquery), returns the offset
 *   stored before, and moves it past the transaction's last record, all in one round trip:
 *   the common transaction applies every record it was given, and a rollback undoes the
 *   move. The lock makes a second owner of the partition (a zombie the group evicted, still
 *   in its transaction) wait here until the first commits; under READ COMMITTED the locked
 *   row is then the committed version, so what the first covered is seen and skipped. The
 *   inbox's `lock_timeout` (and `statement_timeout`, with `handlerTimeoutMs`) are set in
 *   the same statement with `set_config(..., true)`, local to the transaction. A volatile
 *   call is no one-time filter here: it is evaluated on the row the scan found, before the
 *   row is locked, and not at all when there is no row.
 * - `create`: a partition's first row, inside the same transaction (rolled back with it),
 *   already past the transaction's last record. It sets the same settings in a one-time
 *   filter (an `INSERT ... SELECT` without `FROM`, like core's claim), before its insert can
 *   wait: a concurrent creator (a zombie whose first transaction made the row) is waited on
 *   by the unique index only for `lock_timeout`; then the row is locked as above.
 * - `set`: the position when the transaction decided less than it was given (a failing
 *   record's predecessors, a conflict): set exactly, under the lock.
 * - `read`: the stored position, to seek to after an assignment.
 *
 * Nothing outlives the transaction (PgBouncer's transaction mode is fine).
 */
export function compileOffsetStatements(table: OffsetTable, settings: readonly string[]) {
  const key = 'group_id = $1 AND topic = $2 AND partition = $3';
  const set = settings.map((setting) => `${setting} IS NOT NULL`).join(' AND ');
  const lockAndAdvanceText = `UPDATE ${table.qualified} AS t
SET next_offset = GREATEST(t.next_offset, $4::bigint), updated_at = now()
FROM (SELECT next_offset FROM ${table.qualified} WHERE ${key} AND ${set} FOR UPDATE) AS before
WHERE t.group_id = $1 AND t.topic = $2 AND t.partition = $3
RETURNING before.next_offset::text AS next_offset`;
  const createText = `INSERT INTO ${table.qualified} (group_id, topic, partition, next_offset)
SELECT $1, $2, $3, $4::bigint
WHERE ${set}
ON CONFLICT (group_id, topic, partition) DO NOTHING
RETURNING 0::text AS next_offset`;
  const setText = `UPDATE ${table.qualified} SET next_offset = $4::bigint, updated_at = now() WHERE ${key}`;
  const readText = `SELECT next_offset::text AS next_offset FROM ${table.qualified} WHERE ${key}`;

  const one = async (runner: QueryRunner, text: string, parameters: unknown[]): Promise<string | undefined> => {
    const { rows } = await runner.executeQuery(
      CompiledQuery.raw(text, parameters) as CompiledQuery<{ next_offset: string }>,
    );
    return rows[0]?.next_offset;
  };

  return {
    /**
     * Locks the partition's row (made if missing) and moves it to at least `nextOffset`;
     * returns the offset stored before (0 for a row made here).
     */
    async lockAndAdvance(runner: QueryRunner, row: RowKey, nextOffset: bigint): Promise<bigint> {
      const parameters = [...row, nextOffset.toString()];
      const before =
        (await one(runner, lockAndAdvanceText, parameters)) ??
        (await one(runner, createText, parameters)) ??
        (await one(runner, lockAndAdvanceText, parameters));
      if (before === undefined) throw new Error('inboxkit: the offsets row was neither found nor made; retrying');
      return BigInt(before);
    },
    async set(runner: QueryRunner, row: RowKey, nextOffset: bigint): Promise<void> {
      await runner.executeQuery(CompiledQuery.raw(setText, [...row, nextOffset.toString()]));
    },
    read(runner: QueryRunner, row: RowKey): Promise<string | undefined> {
      return one(runner, readText, [...row]);
    },
  };
}
