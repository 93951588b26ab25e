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
 * - `lock`: the first statement of every transaction in `dedup: 'offsets'`. `FOR UPDATE`
 *   makes a second owner of the partition (a zombie the group evicted, still in its
 *   transaction) wait here until the first commits, and then read what it wrote. The
 *   inbox's `lock_timeout` (and `statement_timeout`, with `handlerTimeoutMs`) are set in
 *   the same statement with `set_config(..., true)`, local to the transaction, at no extra
 *   round trip. A volatile call is no one-time filter here: it is evaluated on the row the
 *   scan found, before the row is locked, and not at all when there is no row.
 * - `create`: a partition's first row, inside the same transaction (rolled back with it).
 *   It sets the same settings, in a one-time filter (an `INSERT ... SELECT` without
 *   `FROM`, like core's claim), before its insert can wait: a concurrent creator (a zombie
 *   whose first transaction made the row) is waited on by the unique index only for
 *   `lock_timeout`. Then the row is locked again.
 *   Nothing outlives the transaction (PgBouncer's transaction mode is fine).
 * - `advance`: the next offset, never moved back (`GREATEST`).
 * - `read`: the stored position, to seek to after an assignment.
 */
export function compileOffsetStatements(table: OffsetTable, settings: readonly string[]) {
  const key = 'group_id = $1 AND topic = $2 AND partition = $3';
  const set = settings.map((setting) => `${setting} IS NOT NULL`).join(' AND ');
  const lockText = `SELECT next_offset::text AS next_offset FROM ${table.qualified}
WHERE ${key} AND ${set}
FOR UPDATE`;
  const createText = `INSERT INTO ${table.qualified} (group_id, topic, partition, next_offset)
SELECT $1, $2, $3, 0
WHERE ${set}
ON CONFLICT (group_id, topic, partition) DO NOTHING
RETURNING next_offset::text AS next_offset`;
  const advanceText = `UPDATE ${table.qualified} SET next_offset = GREATEST(next_offset, $4::bigint), updated_at = now()
WHERE ${key}`;
  const readText = `SELECT next_offset::text AS next_offset FROM ${table.qualified} WHERE ${key}`;

  const one = async (runner: QueryRunner, text: string, row: RowKey): Promise<string | undefined> => {
    const { rows } = await runner.executeQuery(
      CompiledQuery.raw(text, [...row]) as CompiledQuery<{ next_offset: string }>,
    );
    return rows[0]?.next_offset;
  };

  return {
    /** Locks the partition's row (made if missing); returns its next offset. */
    async lock(runner: QueryRunner, row: RowKey): Promise<bigint> {
      const found =
        (await one(runner, lockText, row)) ??
        (await one(runner, createText, row)) ??
        (await one(runner, lockText, row));
      if (found === undefined) throw new Error('inboxkit: the offsets row was neither found nor made; retrying');
      return BigInt(found);
    },
    async advance(runner: QueryRunner, row: RowKey, nextOffset: bigint): Promise<void> {
      await runner.executeQuery(CompiledQuery.raw(advanceText, [...row, nextOffset.toString()]));
    },
    read(runner: QueryRunner, row: RowKey): Promise<string | undefined> {
      return one(runner, readText, row);
    },
  };
}
