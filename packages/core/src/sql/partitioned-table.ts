import { ConfigurationError } from '../errors.js';
import { type InboxTables, quoteIdentifier } from '../identifiers.js';
import type { PartitionSettings } from '../partition-options.js';

/** Partitions are named `<table>_p<YYYYMMDDHH24MISS of their start, UTC>`. */
const PARTITION_NAME_BYTES = '_p'.length + 14;
/** The former plain table, once attached as the first partition. */
export const PLAIN_PARTITION_SUFFIX = '_plain';
/** How long maintenance waits for a lock on the table before it leaves a step to the next purge. */
export const MAINTENANCE_LOCK_TIMEOUT_MS = 1000;

/**
 * The time-partitioned inbox table (docs/retention.md), as idempotent SQL that runs after
 * migrations 0001 and 0002, in one transaction:
 *
 * 1. the table becomes partitioned by range on `processed_at`: a plain table with keys is
 *    renamed `<table>_plain` and attached as the first partition (keys up to the end of
 *    the current interval), so no key is copied; an empty one is replaced;
 * 2. the claim function of 0002 is replaced by the partitioned claim, and its batch twin
 *    (an overload) is added: see {@link partitionedClaimSql};
 * 3. the maintenance function `<table>_maintain` is created ({@link maintainSql}) and run
 *    once, so the current partition and `premake` more exist before the first claim.
 */
export function partitionedTableSql(tables: InboxTables, settings: PartitionSettings): string {
  if (Buffer.byteLength(tables.table) + PARTITION_NAME_BYTES > 63) {
    throw new ConfigurationError(
      `A partitioned inbox table's name must be at most ${63 - PARTITION_NAME_BYTES} bytes (its partitions are named <table>_pYYYYMMDDHHMMSS); got ${JSON.stringify(tables.table)}.`,
    );
  }
  return `-- inboxkit: the inbox table partitioned by time (docs/retention.md). Runs after
-- 0001 and 0002; idempotent.
${convertSql(tables, settings)}
${partitionedClaimSql(tables)}
${maintainSql(tables, settings)}
SELECT created, dropped, blocked FROM ${tables.maintainFunction}(0, '${MAINTENANCE_LOCK_TIMEOUT_MS}ms');
`;
}

/** Step 1: the table becomes partitioned (nothing happens when it is already). */
function convertSql(tables: InboxTables, settings: PartitionSettings): string {
  const schema = literal(tables.schema);
  const plainName = `${tables.table}${PLAIN_PARTITION_SUFFIX}`;
  return `DO $inboxkit$
DECLARE
  v_kind "char" := (SELECT relkind FROM pg_catalog.pg_class WHERE oid = pg_catalog.to_regclass(${literal(tables.qualified)}));
  v_boundary timestamptz;
  v_pkey text;
BEGIN
  IF v_kind = 'p' THEN
    RETURN;
  END IF;
  IF v_kind = 'r' THEN
    -- Claims wait here (or time out and are retried): no key may land in the old table
    -- after its last row is counted into the first partition.
    LOCK TABLE ${tables.qualified} IN ACCESS EXCLUSIVE MODE;
    IF NOT EXISTS (SELECT 1 FROM ${tables.qualified}) THEN
      DROP TABLE ${tables.qualified};
      v_kind := NULL;
    ELSE
      v_boundary := ${intervalStart('now()', settings)} + interval '${settings.intervalMs} milliseconds';
      SELECT conname INTO v_pkey FROM pg_catalog.pg_constraint
        WHERE conrelid = ${literal(tables.qualified)}::regclass AND contype = 'p';
      -- The partitions' key includes processed_at. An index built beforehand (CONCURRENTLY,
      -- docs/retention.md) becomes it at once; without one it is built here, under the lock.
      EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', ${literal(tables.qualified)}, v_pkey);
      IF pg_catalog.to_regclass(${literal(`${quoteIdentifier(tables.schema)}.${quoteIdentifier(`${tables.table}_partition_key`)}`)}) IS NOT NULL THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I PRIMARY KEY USING INDEX %I',
          ${literal(tables.qualified)}, ${literal(`${plainName}_pkey`)}, ${literal(`${tables.table}_partition_key`)});
      ELSE
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I PRIMARY KEY (consumer, message_id, processed_at)',
          ${literal(tables.qualified)}, ${literal(`${plainName}_pkey`)});
      END IF;
      EXECUTE format('ALTER TABLE %s RENAME TO %I', ${literal(tables.qualified)}, ${literal(plainName)});
    END IF;
  END IF;
  CREATE TABLE ${tables.qualified} (
    consumer      text        NOT NULL,
    message_id    text        NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    payload_hash  bytea,
    result        jsonb,
    status        text        NOT NULL DEFAULT 'processed'
                  CONSTRAINT ${quoteIdentifier(`${tables.table}_status_check`)} CHECK (status IN ('processed', 'dead_lettered')),
    -- The partition key must be part of a partitioned table's unique index, so this one
    -- does not make (consumer, message_id) unique: the claim functions do, under a lock.
    PRIMARY KEY (consumer, message_id, processed_at)
  ) PARTITION BY RANGE (processed_at);
  IF v_boundary IS NOT NULL THEN
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES FROM (MINVALUE) TO (%L)',
      ${literal(tables.qualified)}, ${schema}, ${literal(plainName)}, v_boundary);
  END IF;
END
$inboxkit$;
`;
}

/**
 * Step 2: the claim on a partitioned table. `ON CONFLICT` cannot deduplicate there (no
 * index makes `(consumer, message_id)` unique across partitions), so each key is claimed
 * under a transaction-scoped advisory lock on its hash, and looked up in a new statement:
 * under READ COMMITTED that statement's snapshot sees what the lock's previous holder
 * committed (its locks are released after its commit is visible). Two deliveries of one
 * key, in the same partition or either side of a boundary: the second waits on the lock;
 * if the first commits, the second finds its row (a duplicate), if it rolls back, the
 * second inserts. `lock_timeout` bounds the wait as it bounds the plain claim's.
 *
 * Under REPEATABLE READ or SERIALIZABLE the look-up would read the transaction's first
 * snapshot, taken before the wait: both deliveries would insert. The functions refuse to
 * run there (SQLSTATE 0A000), and the inbox refuses that isolation level on a partitioned
 * table before it claims anything.
 *
 * The batch twin (an overload: the key ids and payload hashes as arrays, a status and
 * results, used for batches and dead letters) locks its keys in the order of their hashes,
 * so two batches sharing keys cannot deadlock, and returns the ids it inserted.
 */
export function partitionedClaimSql(tables: InboxTables): string {
  const seed = lockSeed(tables);
  const refuse = `IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'inboxkit: the partitioned inbox table % claims keys only under READ COMMITTED', ${literal(tables.qualified)}
      USING ERRCODE = '0A000';
  END IF;`;
  return `CREATE OR REPLACE FUNCTION ${tables.claimFunction}(
  p_consumer text, p_message_id text, p_payload_hash bytea, p_lock_timeout text, p_statement_timeout text
)
RETURNS TABLE (claimed boolean, status text, payload_hash bytea, result jsonb, processed_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $inboxkit$
#variable_conflict use_column
BEGIN
  ${refuse}
  PERFORM pg_catalog.set_config('lock_timeout', p_lock_timeout, true);
  IF p_statement_timeout IS NOT NULL THEN
    PERFORM pg_catalog.set_config('statement_timeout', p_statement_timeout, true);
  END IF;
  PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(p_consumer || ':' || p_message_id, ${seed}));
  -- A new statement after the wait: its snapshot sees what the lock's holder committed.
  RETURN QUERY SELECT false, k.status, k.payload_hash, k.result, k.processed_at
    FROM ${tables.qualified} AS k
    WHERE k.consumer = p_consumer AND k.message_id = p_message_id
    LIMIT 1;
  IF FOUND THEN
    RETURN;
  END IF;
  INSERT INTO ${tables.qualified} (consumer, message_id, payload_hash)
  VALUES (p_consumer, p_message_id, p_payload_hash);
  RETURN QUERY SELECT true, NULL::text, NULL::bytea, NULL::jsonb, NULL::timestamptz;
END
$inboxkit$;

CREATE OR REPLACE FUNCTION ${tables.claimFunction}(
  p_consumer text, p_message_ids text[], p_payload_hashes bytea[], p_status text, p_results jsonb[],
  p_lock_timeout text, p_statement_timeout text
)
RETURNS SETOF text
LANGUAGE plpgsql VOLATILE AS $inboxkit$
DECLARE
  v_key bigint;
BEGIN
  ${refuse}
  PERFORM pg_catalog.set_config('lock_timeout', p_lock_timeout, true);
  IF p_statement_timeout IS NOT NULL THEN
    PERFORM pg_catalog.set_config('statement_timeout', p_statement_timeout, true);
  END IF;
  FOR v_key IN
    SELECT DISTINCT pg_catalog.hashtextextended(p_consumer || ':' || id, ${seed}) FROM unnest(p_message_ids) AS id ORDER BY 1
  LOOP
    PERFORM pg_catalog.pg_advisory_xact_lock(v_key);
  END LOOP;
  -- A new statement after the waits: its snapshot sees what the locks' holders committed.
  RETURN QUERY
  WITH inserted AS (
    INSERT INTO ${tables.qualified} (consumer, message_id, payload_hash, status, result)
    SELECT DISTINCT ON (k.id) p_consumer, k.id, k.hash, p_status, k.result
    FROM unnest(p_message_ids, p_payload_hashes, p_results) WITH ORDINALITY AS k(id, hash, result, n)
    WHERE k.id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM ${tables.qualified} AS x WHERE x.consumer = p_consumer AND x.message_id = k.id)
    ORDER BY k.id, k.n
    RETURNING message_id
  )
  SELECT message_id FROM inserted;
END
$inboxkit$;
`;
}

/**
 * Step 3: partition maintenance, one function so that a purge is one round trip, and so
 * that the settings live in the database, the same for every process. It creates the
 * current partition and `premake` more (each table created apart, then attached, which
 * locks the parent only in SHARE UPDATE EXCLUSIVE mode: claims go on), and detaches every
 * partition whose keys are all older than the larger of `p_older_than_ms` and the table's
 * retention floor. Detaching takes the parent's ACCESS EXCLUSIVE lock, but only for a
 * change of the catalog; the drop, whose unlinking of files takes longer, is the second
 * step, the overload `<table>_maintain(lock_timeout)`, in a transaction of its own that
 * claims never wait on. A step that does not get its lock within `p_lock_timeout` (a long
 * transaction on the table) is left to the next call and counted as `blocked`: a detach
 * waiting in the lock queue would hold up every claim behind it.
 *
 * The caller takes the maintenance lock first (one maintainer at a time).
 */
export function maintainSql(tables: InboxTables, settings: PartitionSettings): string {
  const bounds = `SELECT c.oid::regclass AS rel,
           substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM 'TO \\(''([^'']*)''\\)')::timestamptz AS upper
      FROM pg_catalog.pg_inherits AS i JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
      WHERE i.inhparent = ${literal(tables.qualified)}::regclass`;
  return `CREATE OR REPLACE FUNCTION ${tables.maintainFunction}(p_older_than_ms bigint, p_lock_timeout text)
RETURNS TABLE (created integer, dropped integer, blocked integer)
LANGUAGE plpgsql VOLATILE AS $inboxkit$
DECLARE
  v_interval constant interval := interval '${settings.intervalMs} milliseconds';
  v_now constant timestamptz := now();
  v_keep constant interval := greatest(p_older_than_ms, ${settings.retentionMs}) * interval '1 millisecond';
  v_until constant timestamptz := ${intervalStart('now()', settings)} + v_interval * ${settings.premake + 1};
  v_start timestamptz;
  v_end timestamptz;
  v_name text;
  v_part record;
BEGIN
  created := 0;
  dropped := 0;
  blocked := 0;
  PERFORM pg_catalog.set_config('lock_timeout', p_lock_timeout, true);
  -- Ahead: from the end of the last partition (or the current interval) to v_until.
  SELECT greatest(${intervalStart('v_now', settings)}, max(b.upper)) INTO v_start FROM (${bounds}) AS b;
  WHILE v_start < v_until LOOP
    v_end := ${intervalStart('v_start', settings)} + v_interval;
    v_name := ${literal(`${tables.table}_p`)} || to_char(v_start AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISS');
    BEGIN
      EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
        ${literal(tables.schema)}, v_name, ${literal(tables.qualified)});
      EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
        ${literal(tables.qualified)}, ${literal(tables.schema)}, v_name, v_start, v_end);
      created := created + 1;
    EXCEPTION WHEN lock_not_available THEN
      blocked := blocked + 1;
      EXIT;
    END;
    v_start := v_end;
  END LOOP;
  -- Behind: partitions whose every key is older than the retention, detached here (a
  -- change of the catalog) and dropped by the second step, after this transaction ends.
  FOR v_part IN SELECT b.rel FROM (${bounds}) AS b WHERE b.upper <= v_now - v_keep ORDER BY b.upper LOOP
    BEGIN
      EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', ${literal(tables.qualified)}, v_part.rel);
      EXECUTE format('COMMENT ON TABLE %s IS %L', v_part.rel, ${literal(detachedComment(tables))});
      dropped := dropped + 1;
    EXCEPTION WHEN lock_not_available THEN
      blocked := blocked + 1;
    END;
  END LOOP;
  RETURN NEXT;
END
$inboxkit$;

-- The second step: drops the partitions the first detached (found by their comment), in a
-- transaction of its own that holds no lock on the inbox table.
CREATE OR REPLACE FUNCTION ${tables.maintainFunction}(p_lock_timeout text)
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $inboxkit$
DECLARE
  v_rel regclass;
  v_dropped integer := 0;
BEGIN
  PERFORM pg_catalog.set_config('lock_timeout', p_lock_timeout, true);
  FOR v_rel IN
    SELECT c.oid::regclass FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_description AS d ON d.objoid = c.oid AND d.classoid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0
    WHERE c.relnamespace = ${literal(tables.schema)}::regnamespace AND c.relkind = 'r'
      AND d.description = ${literal(detachedComment(tables))}
  LOOP
    BEGIN
      EXECUTE format('DROP TABLE %s', v_rel);
      v_dropped := v_dropped + 1;
    EXCEPTION WHEN lock_not_available THEN
      NULL;
    END;
  END LOOP;
  RETURN v_dropped;
END
$inboxkit$;
`;
}

/**
 * The start of the interval holding `ts`: intervals are counted from 2000-01-01 00:00 UTC
 * (what `date_bin` does, written out so that Postgres 11 to 13 run it too).
 */
function intervalStart(ts: string, settings: PartitionSettings): string {
  const origin = "timestamptz '2000-01-01 00:00:00+00'";
  return `(${origin} + floor(extract(epoch FROM (${ts}) - ${origin}) * 1000 / ${settings.intervalMs}) * interval '${settings.intervalMs} milliseconds')`;
}

/** What marks a partition detached by maintenance, to be dropped. */
function detachedComment(tables: InboxTables): string {
  return `inboxkit: expired partition detached from ${tables.qualified}, to be dropped`;
}

/** The advisory lock keys' seed: the table's own, so that two inbox tables never share a key's lock. */
function lockSeed(tables: InboxTables): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(tables.qualified)) {
    hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  }
  return hash;
}

/** A SQL string literal of a checked name. */
function literal(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}
