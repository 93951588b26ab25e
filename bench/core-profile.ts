// Where the time of `inbox.process` goes, against its hand-written twin (bench/core.ts).
//
//   node bench/core-profile.ts [--messages 3000] [--rounds 3] [--only statements,cpu,profile,server,drivers]
//                              [--cases 'regexp of the drivers cases'] [--results core-profile]
//
// On the realistic mix (30% of the deliveries are redeliveries of ids already processed):
// - statements: round trips per delivery, new and duplicate, counted by wrapping pg's
//   `Client.prototype.query`;
// - cpu: this process's CPU per delivery (`process.cpuUsage`), on the real database and on
//   a fake pool that answers at once (no socket, no Postgres: what is left is the client's
//   own work), for the pg twin, the same SQL through a Kysely transaction, and the inbox;
// - profile: V8's CPU profiler (what `node --cpu-prof` records, started here around one
//   mode at a time) on the fake pool, self time per delivery grouped by package and file;
// - server: Postgres' planning and execution time per statement (EXPLAIN ANALYZE);
// - drivers: the round-trip lever, hand-written on both drivers over the same deliveries:
//   node-postgres awaiting each statement, with and without named prepared statements, and
//   postgres.js awaiting each or sending BEGIN and the claim together (pipelined), at c=1
//   and c=8, medians of interleaved rounds.
// Prints what it finds and saves bench/results/core-profile.json (or `--results`.json).
import { hash } from 'node:crypto';
import { Session } from 'node:inspector/promises';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { createInbox, type Inbox, migrateInbox } from '@inboxkit/core';
import { createPgPool } from '@inboxkit/core/pg';
import { CompiledQuery, Kysely, PostgresDialect, type PostgresPool, type PostgresPoolClient } from 'kysely';
import pg from 'pg';
import postgres from 'postgres';
import { benchDatabase, median, saveResults } from './support.ts';

const { values: args } = parseArgs({
  options: {
    messages: { type: 'string', default: '3000' },
    rounds: { type: 'string', default: '3' },
    only: { type: 'string', default: 'statements,cpu,profile,server,drivers' },
    cases: { type: 'string', default: '' },
    results: { type: 'string', default: 'core-profile' },
  },
});
const N = Number(args.messages);
const ROUNDS = Number(args.rounds);
const SECTIONS = new Set(args.only.split(','));
/** Drivers section: a regexp of the cases to run (node-postgres awaiting each always runs). */
const CASES = args.cases === '' ? undefined : new RegExp(args.cases);

interface BenchDB {
  bench_rows: { id: string; amount: number };
}
interface Delivery {
  readonly id: string;
  readonly payload: string;
}

const DEDUP = `INSERT INTO processed_messages (consumer, message_id, payload_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1`;
const BUSINESS = 'INSERT INTO bench_rows (id, amount) VALUES ($1, $2)';

/** The same seeded mix as bench/core.ts: `share` redeliveries, each 64+ places after its first. */
function deliveries(count: number, share: number, prefix = 'm'): { list: Delivery[]; unique: number } {
  let seed = 42;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const list: Delivery[] = [];
  const fresh: Delivery[] = [];
  for (let i = 0; i < count; i++) {
    if (fresh.length > 64 && random() < share) {
      list.push(fresh[Math.floor(random() * (fresh.length - 64))] as Delivery);
    } else {
      const id = `${prefix}-${i}`;
      const delivery = {
        id,
        payload: JSON.stringify({ id, amount: i % 1000, currency: 'EUR', account: `acct-${i % 97}` }),
      };
      fresh.push(delivery);
      list.push(delivery);
    }
  }
  return { list, unique: fresh.length };
}
const MIX = deliveries(N, 0.3);

async function drain<T>(items: readonly T[], concurrency: number, work: (item: T) => Promise<void>): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (;;) {
        const i = next++;
        if (i >= items.length) return;
        await work(items[i] as T);
      }
    }),
  );
  return (items.length / (performance.now() - started)) * 1000;
}

// ---- the database -------------------------------------------------------------------------

const url = await benchDatabase('inboxkit_bench_core_profile');
const admin = createPgPool({ connectionString: url, max: 1 });
await admin.query('CREATE TABLE bench_rows (id text PRIMARY KEY, amount integer NOT NULL)');
{
  const { error } = await migrateInbox(new Kysely<unknown>({ dialect: new PostgresDialect({ pool: admin }) }));
  if (error) throw error;
}
async function reset(): Promise<void> {
  await admin.query('TRUNCATE bench_rows, processed_messages');
  await admin.query('VACUUM ANALYZE bench_rows');
  await admin.query('VACUUM ANALYZE processed_messages');
}
async function rowCount(): Promise<number> {
  const { rows } = await admin.query<{ n: string }>('SELECT count(*) AS n FROM bench_rows');
  return Number(rows[0]?.n);
}

// ---- the modes ----------------------------------------------------------------------------

type Work = (delivery: Delivery) => Promise<void>;

/** The pg twin of bench/core.ts; `named` gives the two statements names (prepared once per connection). */
function pgTwin(pool: pg.Pool | PostgresPool, named = false): Work {
  const dedup = named ? { name: 'bench_dedup', text: DEDUP } : { text: DEDUP };
  const business = named ? { name: 'bench_business', text: BUSINESS } : { text: BUSINESS };
  return async (d) => {
    const client = (await pool.connect()) as pg.PoolClient;
    try {
      await client.query('BEGIN');
      const { rowCount } = await client.query({ ...dedup, values: ['bench', d.id, null] });
      if (rowCount === 1) await client.query({ ...business, values: [d.id, 1] });
      await client.query('COMMIT');
      client.release();
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      client.release(error as Error);
      throw error;
    }
  };
}

/** The same SQL through a Kysely transaction: the transaction machinery without the inbox. */
function kyselyTwin(db: Kysely<BenchDB>): Work {
  return (d) =>
    db
      .transaction()
      .setIsolationLevel('read committed')
      .execute(async (trx) => {
        const { rows } = await trx.executeQuery(CompiledQuery.raw(DEDUP, ['bench', d.id, null]));
        if (rows.length === 1) await trx.executeQuery(CompiledQuery.raw(BUSINESS, [d.id, 1]));
      });
}

function viaInbox(inbox: Inbox<BenchDB>): Work {
  return async (d) => {
    const outcome = await inbox.process(d, async (trx) => {
      await trx.executeQuery(CompiledQuery.raw(BUSINESS, [d.id, 1]));
    });
    if (outcome.status !== 'processed' && outcome.status !== 'duplicate') {
      throw new Error(`unexpected ${outcome.status}`, { cause: 'error' in outcome ? outcome.error : undefined });
    }
  };
}

/** The inbox's own statements, as `inbox.process` sends them (default options). */
const INBOX_BEGIN = 'start transaction isolation level read committed';
const INBOX_CLAIM = `INSERT INTO "public"."processed_messages" (consumer, message_id, payload_hash)
SELECT $1::text, $2::text, $3::bytea
WHERE set_config('lock_timeout', '5000ms', true) IS NOT NULL
ON CONFLICT (consumer, message_id) DO NOTHING
RETURNING 1 AS claimed`;
const INBOX_READ = `SELECT message_id, status, payload_hash, result, processed_at
FROM "public"."processed_messages"
WHERE consumer = $1 AND message_id = ANY($2::text[])`;
/** The claim that returns the stored row on a conflict, so a duplicate needs no read (measured prepared). */
const CLAIM_OR_READ = `WITH claim AS (
  INSERT INTO "public"."processed_messages" (consumer, message_id, payload_hash)
  SELECT $1::text, $2::text, $3::bytea
  WHERE set_config('lock_timeout', '5000ms', true) IS NOT NULL
  ON CONFLICT (consumer, message_id) DO NOTHING
  RETURNING 1 AS claimed)
SELECT true AS claimed, NULL::text AS status, NULL::bytea AS payload_hash, NULL::jsonb AS result, NULL::timestamptz AS processed_at FROM claim
UNION ALL
SELECT false, status, payload_hash, result, processed_at FROM "public"."processed_messages"
WHERE consumer = $1::text AND message_id = $2::text AND NOT EXISTS (SELECT 1 FROM claim)`;

/**
 * `inbox.process`'s SQL written by hand on pg (its BEGIN, claim with the payload hash, the
 * read of the stored row on a duplicate, commit): the SQL's cost without Kysely and the
 * inbox. `named` names the inbox's statements (not the handler's); `claimOrRead` uses the
 * claim that returns the stored row.
 */
function pgReplica(pool: pg.Pool, named: boolean, claimOrRead = false): Work {
  const q = (name: string, text: string) => (named ? { name, text } : { text });
  const claim = claimOrRead ? q('inbox_claim_or_read', CLAIM_OR_READ) : q('inbox_claim', INBOX_CLAIM);
  const read = q('inbox_read', INBOX_READ);
  return async (d) => {
    const client = await pool.connect();
    try {
      await client.query(INBOX_BEGIN);
      const fingerprint = hash('sha256', d.payload, 'buffer');
      const { rows } = await client.query({ ...claim, values: ['bench', d.id, fingerprint] });
      const claimed = claimOrRead ? rows[0]?.claimed === true : rows.length === 1;
      if (claimed) await client.query(BUSINESS, [d.id, 1]);
      else if (!claimOrRead || rows.length === 0) await client.query({ ...read, values: ['bench', [d.id]] });
      await client.query('commit');
      client.release();
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      client.release(error as Error);
      throw error;
    }
  };
}

/** The part of pg's internal connection a query writes its protocol messages to. */
interface PgWire {
  parse(config: { text: string }): void;
  bind(config: object): void;
  execute(config: object): void;
}
const PgQuery = (pg as unknown as { Query: new (...args: unknown[]) => { prepare(connection: PgWire): void } }).Query;
/**
 * A pg query that sends `BEGIN` in the same write, ahead of its own Parse/Bind/Execute and
 * before the one Sync (extended-protocol pipelining): `BEGIN` and the claim cost one round
 * trip on node-postgres. Its result is the array [BEGIN's, the statement's].
 */
class BeginAnd extends PgQuery {
  begin = 'BEGIN';
  override prepare(connection: PgWire): void {
    connection.parse({ text: this.begin });
    connection.bind({});
    connection.execute({});
    super.prepare(connection);
  }
}
function beginAnd(
  client: pg.PoolClient,
  config: { name?: string; text: string; values: unknown[] },
  begin = 'BEGIN',
): Promise<pg.QueryResult> {
  return new Promise((resolve, reject) => {
    const query = new BeginAnd(config, undefined, (error: Error | null, results: pg.QueryResult[]) => {
      if (error !== null && error !== undefined) reject(error);
      else resolve(results[1] as pg.QueryResult);
    });
    query.begin = begin;
    (client as unknown as { query(submittable: unknown): void }).query(query);
  });
}

/**
 * A pg pool whose clients can send some statements as named (prepared once per connection,
 * then only bound and executed): the inbox's own (`inbox`) or every statement with
 * parameters (`all`); and can hold a transaction's BEGIN back and send it in one write with
 * the next statement (`deferBegin`: a failed BEGIN then fails that statement). What an
 * opt-in pg fast path in `@inboxkit/core/pg` could do, under Kysely, with no change to it.
 */
function fastPathPool(max: number, name: 'none' | 'inbox' | 'all', deferBegin: boolean): pg.Pool {
  const pool = createPgPool({ connectionString: url, max });
  const names = new Map<string, string>();
  const isBegin = /^\s*(begin|start transaction)/i;
  pool.on('connect', (client) => {
    const original = client.query.bind(client) as (...args: unknown[]) => Promise<pg.QueryResult>;
    let pendingBegin: string | undefined;
    (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
      const [text, values] = args;
      if (typeof text !== 'string') return original(...args);
      const hasValues = Array.isArray(values) && values.length > 0;
      if (deferBegin && !hasValues && isBegin.test(text)) {
        pendingBegin = text;
        return Promise.resolve({ command: 'BEGIN', rowCount: null, rows: [], fields: [] });
      }
      let config: { name?: string; text: string; values: unknown[] } | undefined;
      if (hasValues && (name === 'all' || (name === 'inbox' && text.includes('processed_messages')))) {
        let found = names.get(text);
        if (found === undefined) {
          found = `inboxkit_${names.size}`;
          names.set(text, found);
        }
        config = { name: found, text, values: values as unknown[] };
      }
      const begin = pendingBegin;
      pendingBegin = undefined;
      if (begin !== undefined) {
        if (hasValues) return beginAnd(client, config ?? { text, values: values as unknown[] }, begin);
        return original(begin).then(() => original(...args));
      }
      return config === undefined ? original(...args) : original(config);
    };
  });
  return pool;
}

/** The claim of migration 0002, as `inbox.process` sends it (default options). */
const INBOX_CLAIM_FUNCTION = `SELECT claimed, status, payload_hash, result, processed_at
FROM "public"."processed_messages_claim"($1::text, $2::text, $3::bytea, '5000ms', NULL)`;

/**
 * `inbox.process`'s SQL with the claim function, by hand: on pg (`pool`), or in a Kysely
 * transaction (`db`): the SQL's cost without the inbox, with and without Kysely.
 */
function claimFunctionByHand(pool: pg.Pool): Work {
  return async (d) => {
    const client = await pool.connect();
    try {
      await client.query(INBOX_BEGIN);
      const fingerprint = hash('sha256', d.payload, 'buffer');
      const { rows } = await client.query(INBOX_CLAIM_FUNCTION, ['bench', d.id, fingerprint]);
      if (rows[0]?.claimed === true) await client.query(BUSINESS, [d.id, 1]);
      await client.query('commit');
      client.release();
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      client.release(error as Error);
      throw error;
    }
  };
}
function claimFunctionInKysely(db: Kysely<BenchDB>): Work {
  return (d) =>
    db
      .transaction()
      .setIsolationLevel('read committed')
      .execute(async (trx) => {
        const fingerprint = hash('sha256', d.payload, 'buffer');
        const { rows } = await trx.executeQuery(
          CompiledQuery.raw(INBOX_CLAIM_FUNCTION, ['bench', d.id, fingerprint]) as CompiledQuery<{ claimed: boolean }>,
        );
        if (rows[0]?.claimed === true) await trx.executeQuery(CompiledQuery.raw(BUSINESS, [d.id, 1]));
      });
}

/** The pg twin with BEGIN and the dedup insert in one round trip. */
function pgTwinBeginAnd(pool: pg.Pool, named: boolean): Work {
  return async (d) => {
    const client = await pool.connect();
    try {
      const claimed = await beginAnd(client, {
        ...(named ? { name: 'bench_dedup' } : {}),
        text: DEDUP,
        values: ['bench', d.id, null],
      });
      if (claimed.rowCount === 1)
        await client.query(
          named ? { name: 'bench_business', text: BUSINESS, values: [d.id, 1] } : { text: BUSINESS, values: [d.id, 1] },
        );
      await client.query('COMMIT');
      client.release();
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      client.release(error as Error);
      throw error;
    }
  };
}

function postgresJsTwin(sql: postgres.Sql, pipelined: boolean, prepare: boolean): Work {
  return async (d) => {
    const reserved = await sql.reserve();
    try {
      let claimed: postgres.RowList<postgres.Row[]>;
      if (pipelined) {
        // BEGIN and the claim leave together; the claim's reply is the only wait.
        const begun = reserved.unsafe('BEGIN');
        const claim = reserved.unsafe(DEDUP, ['bench', d.id, null], { prepare });
        [, claimed] = await Promise.all([begun, claim]);
      } else {
        await reserved.unsafe('BEGIN');
        claimed = await reserved.unsafe(DEDUP, ['bench', d.id, null], { prepare });
      }
      if (claimed.length === 1) await reserved.unsafe(BUSINESS, [d.id, 1], { prepare });
      await reserved.unsafe('COMMIT');
    } catch (error) {
      await reserved.unsafe('ROLLBACK').catch(() => {});
      throw error;
    } finally {
      reserved.release();
    }
  };
}

/** A pool whose one client answers every statement at once, as Postgres would on this mix. */
function fakePool(): PostgresPool & pg.Pool {
  const claimed = new Map<string, Buffer | null>();
  const result = (command: string, rows: object[]) => ({ command, rowCount: rows.length, rows, fields: [] });
  const client: PostgresPoolClient = {
    async query(sqlOrConfig: unknown, parameters?: readonly unknown[]) {
      const text = typeof sqlOrConfig === 'string' ? sqlOrConfig : (sqlOrConfig as { text: string }).text;
      const values = (parameters ?? (sqlOrConfig as { values?: unknown[] }).values ?? []) as unknown[];
      const verb = text.trimStart().slice(0, 6).toUpperCase();
      if (text.includes('to_regprocedure')) return result('SELECT', [{ usable: true }]);
      if (text.includes('"processed_messages_claim"(')) {
        const id = values[1] as string;
        const stored = claimed.get(id);
        if (stored === undefined) {
          claimed.set(id, (values[2] as Buffer | null) ?? null);
          return result('SELECT', [{ claimed: true }]);
        }
        return result('SELECT', [
          { claimed: false, status: 'processed', payload_hash: stored, result: null, processed_at: new Date() },
        ]);
      }
      if (verb === 'INSERT' && text.includes('processed_messages')) {
        const id = values[1] as string;
        if (claimed.has(id)) return result('INSERT', []);
        claimed.set(id, (values[2] as Buffer | null) ?? null);
        return result('INSERT', [{ claimed: 1 }]);
      }
      if (verb === 'SELECT' && text.includes('processed_messages')) {
        const rows = ((values[1] as string[]) ?? [])
          .filter((id) => claimed.has(id))
          .map((id) => ({
            message_id: id,
            status: 'processed',
            payload_hash: claimed.get(id),
            result: null,
            processed_at: new Date(),
          }));
        return result('SELECT', rows);
      }
      if (verb === 'COMMIT' || verb === 'ROLLBA') return result(verb === 'COMMIT' ? 'COMMIT' : 'ROLLBACK', []);
      return result(verb, []);
    },
    release() {},
  } as unknown as PostgresPoolClient;
  return { connect: async () => client, end: async () => {} } as unknown as PostgresPool & pg.Pool;
}

// ---- statements per delivery ----------------------------------------------------------------

const report: Record<string, unknown> = { load: [loadavg()[0]] };
let statementLog: string[] = [];
const query = pg.Client.prototype.query;
pg.Client.prototype.query = function (this: pg.Client, ...rest: unknown[]) {
  const first = rest[0];
  statementLog.push(typeof first === 'string' ? first : String((first as { text?: string })?.text));
  return (query as (...a: unknown[]) => unknown).apply(this, rest);
} as typeof query;

if (SECTIONS.has('statements')) {
  const pool = createPgPool({ connectionString: url, max: 1 });
  const db = new Kysely<BenchDB>({ dialect: new PostgresDialect({ pool }) });
  const modes: Record<string, Work> = {
    'hand-written twin (pg)': pgTwin(pool),
    'inbox.process': viaInbox(createInbox({ db, consumer: 'bench' })),
    'inbox.process duplicateFastPath': viaInbox(createInbox({ db, consumer: 'bench', duplicateFastPath: true })),
  };
  const statements: Record<string, { new: number; duplicate: number; newSeq: string[]; duplicateSeq: string[] }> = {};
  for (const [name, work] of Object.entries(modes)) {
    await reset();
    const batch = deliveries(300, 0, 's').list;
    const counts = { new: 0, duplicate: 0, newSeq: [] as string[], duplicateSeq: [] as string[] };
    for (const kind of ['new', 'duplicate'] as const) {
      statementLog = [];
      for (const d of batch) await work(d);
      counts[kind] = statementLog.length / batch.length;
      const perMessage = statementLog.length / batch.length;
      counts[`${kind}Seq`] = statementLog.slice(0, perMessage).map((s) => s.replace(/\s+/g, ' ').slice(0, 60));
    }
    statements[name] = counts;
    console.log(`statements per delivery, ${name}: new ${counts.new}, duplicate ${counts.duplicate}`);
    for (const kind of ['newSeq', 'duplicateSeq'] as const) console.log(`  ${kind}: ${counts[kind].join(' | ')}`);
  }
  report.statements = statements;
  await db.destroy();
}
pg.Client.prototype.query = query;

// ---- client CPU per delivery ----------------------------------------------------------------

async function cpuPerDelivery(list: readonly Delivery[], concurrency: number, work: Work): Promise<number> {
  const before = process.cpuUsage();
  await drain(list, concurrency, work);
  const used = process.cpuUsage(before);
  return (used.user + used.system) / list.length;
}

function fakeModes(): Record<string, Work> {
  const make = () => {
    const pool = fakePool();
    return { pool, db: new Kysely<BenchDB>({ dialect: new PostgresDialect({ pool }) }) };
  };
  return {
    'pg twin (fake pool: the loop and the fake only)': pgTwin(make().pool),
    'Kysely transaction, same SQL': kyselyTwin(make().db),
    'inbox.process': viaInbox(createInbox({ db: make().db, consumer: 'bench' })),
    'inbox.process fingerprintPayloads: false': viaInbox(
      createInbox({ db: make().db, consumer: 'bench', fingerprintPayloads: false }),
    ),
    'inbox.process duplicateFastPath': viaInbox(
      createInbox({ db: make().db, consumer: 'bench', duplicateFastPath: true }),
    ),
  };
}

if (SECTIONS.has('cpu')) {
  // On the fake pool: many deliveries, medians of 5 interleaved passes (fresh fakes each).
  const fakeList = deliveries(20_000, 0.3, 'f').list;
  const fake: Record<string, number[]> = {};
  for (let pass = 0; pass < 6; pass++) {
    for (const [name, work] of Object.entries(fakeModes())) {
      const us = await cpuPerDelivery(fakeList, 1, work);
      if (pass > 0) fake[name] = [...(fake[name] ?? []), us];
    }
  }
  // Parts measured alone.
  const payload = MIX.list[0]?.payload ?? '';
  const alone = (count: number, fn: () => unknown) => {
    const before = process.cpuUsage();
    for (let i = 0; i < count; i++) fn();
    const used = process.cpuUsage(before);
    return (used.user + used.system) / count;
  };
  alone(50_000, () => hash('sha256', payload, 'buffer'));
  const parts = {
    'sha256 of an 80-byte payload (crypto.hash)': alone(200_000, () => hash('sha256', payload, 'buffer')),
    'new AbortController() and its signal': alone(200_000, () => new AbortController().signal),
    'new Date()': alone(200_000, () => new Date()),
  };
  // On the real database, c=1 and c=8.
  const real: Record<string, Record<string, number[]>> = {};
  for (const c of [1, 8]) {
    const pool = createPgPool({ connectionString: url, max: c });
    const db = new Kysely<BenchDB>({ dialect: new PostgresDialect({ pool }) });
    const modes: Record<string, Work> = {
      'pg twin': pgTwin(pool),
      'Kysely transaction, same SQL': kyselyTwin(db),
      'inbox.process': viaInbox(createInbox({ db, consumer: 'bench' })),
      'inbox.process fingerprintPayloads: false': viaInbox(
        createInbox({ db, consumer: 'bench', fingerprintPayloads: false }),
      ),
    };
    real[`c=${c}`] = {};
    for (let round = 0; round <= ROUNDS; round++) {
      for (const [name, work] of Object.entries(modes)) {
        await reset();
        const us = await cpuPerDelivery(MIX.list, c, work);
        if ((await rowCount()) !== MIX.unique) throw new Error(`${name}: wrong row count`);
        if (round > 0) (real[`c=${c}`] as Record<string, number[]>)[name] = [...(real[`c=${c}`]?.[name] ?? []), us];
      }
    }
    await db.destroy();
  }
  const med = (table: Record<string, number[]>) =>
    Object.fromEntries(Object.entries(table).map(([name, values]) => [name, Number(median(values).toFixed(1))]));
  report.cpu = {
    fakePoolMicrosPerDelivery: med(fake),
    partsMicros: Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, Number(v.toFixed(2))])),
    realMicrosPerDelivery: Object.fromEntries(Object.entries(real).map(([c, table]) => [c, med(table)])),
  };
  console.log('client CPU per delivery (µs), 30% redeliveries:');
  console.log(JSON.stringify(report.cpu, null, 2));
}

// ---- CPU profile ----------------------------------------------------------------------------

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
}

/** Self time per delivery (µs) by package, and by file for inboxkit and Node internals. */
function bucketOf(frame: ProfileNode['callFrame']): string {
  const { url, functionName } = frame;
  if (url === '') return `(native) ${functionName || '(anonymous)'}`;
  if (url.includes('/kysely/')) return 'kysely';
  if (url.includes('/p-retry/') || url.includes('is-network-error')) return 'p-retry';
  if (/\/(pg|pg-pool|pg-protocol|pg-types|pgpass)\//.test(url)) return 'pg';
  if (url.includes('/postgres/')) return 'postgres.js';
  if (url.includes('/packages/core/') || url.includes('@inboxkit/core')) {
    return `inboxkit core ${url.split('/').pop()}`;
  }
  if (url.includes('/bench/')) return 'bench (loop, fake pool)';
  if (url.startsWith('node:')) return url.replace(/^node:(internal\/)?/, 'node ');
  return url;
}

async function profile(list: readonly Delivery[], work: Work): Promise<Record<string, number>> {
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 100 });
  await session.post('Profiler.start');
  await drain(list, 1, work);
  const { profile: recorded } = await session.post('Profiler.stop');
  session.disconnect();
  const nodes = new Map<number, ProfileNode>(recorded.nodes.map((n: ProfileNode) => [n.id, n]));
  const self = new Map<string, number>();
  const samples = recorded.samples ?? [];
  const deltas = recorded.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    const node = nodes.get(samples[i] as number);
    if (node === undefined) continue;
    const bucket = bucketOf(node.callFrame);
    self.set(bucket, (self.get(bucket) ?? 0) + (deltas[i] ?? 0));
  }
  return Object.fromEntries(
    [...self]
      .filter(([bucket]) => bucket !== '(native) (idle)')
      .sort((a, b) => b[1] - a[1])
      .map(([bucket, micros]) => [bucket, Number((micros / list.length).toFixed(1))]),
  );
}

if (SECTIONS.has('profile')) {
  const list = deliveries(20_000, 0.3, 'p').list;
  const profiles: Record<string, Record<string, number>> = {};
  for (const [name, work] of Object.entries(fakeModes())) {
    if (name.includes('fingerprint') || name.includes('FastPath')) continue;
    await drain(list.slice(0, 2000), 1, work); // warm-up on the same fake (its keys then count as redeliveries)
    profiles[`fake pool: ${name}`] = await profile(list, work);
  }
  {
    const pool = createPgPool({ connectionString: url, max: 1 });
    const db = new Kysely<BenchDB>({ dialect: new PostgresDialect({ pool }) });
    for (const [name, work] of Object.entries({
      'pg twin': pgTwin(pool),
      'inbox.process': viaInbox(createInbox({ db, consumer: 'bench' })),
    })) {
      await reset();
      profiles[`real database, c=1: ${name}`] = await profile(MIX.list, work);
    }
    await db.destroy();
  }
  report.profileSelfMicrosPerDelivery = profiles;
  for (const [name, buckets] of Object.entries(profiles)) {
    const total = Object.values(buckets).reduce((a, b) => a + b, 0);
    console.log(`\nprofile, ${name}: ${total.toFixed(0)} µs of samples per delivery (idle excluded)`);
    for (const [bucket, us] of Object.entries(buckets).slice(0, 14))
      console.log(`  ${us.toFixed(1).padStart(7)}  ${bucket}`);
  }
}

// ---- server time per statement ----------------------------------------------------------------

if (SECTIONS.has('server')) {
  // Postgres' own planning and execution time per statement (EXPLAIN ANALYZE, in a
  // transaction rolled back), for a new key and a stored one: what naming a statement saves
  // (planning, once a generic plan is kept) and what the claim's shape costs.
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await reset();
  await client.query(
    `INSERT INTO processed_messages (consumer, message_id) SELECT 'bench', 'stored-' || i FROM generate_series(1, 2000) AS i`,
  );
  await client.query('VACUUM ANALYZE processed_messages');
  const statements: Record<string, { text: string; values: (id: string) => unknown[] }> = {
    'twin dedup insert': { text: DEDUP, values: (id) => ['bench', id, null] },
    'inbox claim (set_config in WHERE, payload hash)': {
      text: INBOX_CLAIM,
      values: (id) => ['bench', id, hash('sha256', id, 'buffer')],
    },
    'inbox read of the stored row': { text: INBOX_READ, values: (id) => ['bench', [id]] },
    'claim returning the stored row (CTE)': {
      text: CLAIM_OR_READ,
      values: (id) => ['bench', id, hash('sha256', id, 'buffer')],
    },
    'business insert': { text: BUSINESS, values: (id) => [id, 1] },
  };
  const server: Record<string, Record<string, { planningMs: number; executionMs: number }>> = {};
  for (const [name, statement] of Object.entries(statements)) {
    server[name] = {};
    for (const kind of ['new', 'stored'] as const) {
      const planning: number[] = [];
      const execution: number[] = [];
      for (let i = 0; i < 300; i++) {
        const id = kind === 'new' ? `new-${i}` : `stored-${(i % 2000) + 1}`;
        await client.query('BEGIN');
        const { rows } = await client.query<{
          'QUERY PLAN': Array<{ 'Planning Time': number; 'Execution Time': number }>;
        }>(`EXPLAIN (ANALYZE, SUMMARY ON, FORMAT JSON) ${statement.text}`, statement.values(id));
        await client.query('ROLLBACK');
        const plan = rows[0]?.['QUERY PLAN'][0];
        if (i >= 20 && plan !== undefined) {
          planning.push(plan['Planning Time']);
          execution.push(plan['Execution Time']);
        }
      }
      server[name][kind] = {
        planningMs: Number(median(planning).toFixed(3)),
        executionMs: Number(median(execution).toFixed(3)),
      };
    }
  }
  await client.end();
  report.serverMillisPerStatement = server;
  console.log('Postgres planning / execution per statement (ms, medians, EXPLAIN ANALYZE, unnamed):');
  for (const [name, kinds] of Object.entries(server)) {
    console.log(
      `  ${name.padEnd(50)} new: ${kinds.new?.planningMs} / ${kinds.new?.executionMs}   stored key: ${kinds.stored?.planningMs} / ${kinds.stored?.executionMs}`,
    );
  }
}

// ---- drivers: the round-trip lever ----------------------------------------------------------

if (SECTIONS.has('drivers')) {
  const rates: Record<string, number[]> = {};
  const cpu: Record<string, number[]> = {};
  for (const c of [1, 8]) {
    const pool = createPgPool({ connectionString: url, max: c });
    const prepared = postgres(url, { max: c, prepare: true, onnotice: () => {} });
    const namingInbox = fastPathPool(c, 'inbox', false);
    const deferring = fastPathPool(c, 'none', true);
    const deferringNaming = fastPathPool(c, 'inbox', true);
    const modes: Record<string, Work> = {
      'node-postgres, awaiting each': pgTwin(pool),
      'node-postgres, awaiting each, named statements': pgTwin(pool, true),
      'node-postgres, BEGIN + claim in one write (extended-protocol pipeline)': pgTwinBeginAnd(pool, false),
      'node-postgres, BEGIN + claim in one write, named statements': pgTwinBeginAnd(pool, true),
      "inbox.process's SQL by hand on pg": pgReplica(pool, false),
      "inbox.process's SQL by hand on pg, inbox statements named": pgReplica(pool, true),
      "inbox.process's SQL by hand on pg, named, claim returns the stored row": pgReplica(pool, true, true),
      "inbox.process's SQL by hand on pg, the claim function": claimFunctionByHand(pool),
      "inbox.process's SQL in a Kysely transaction, the claim function": claimFunctionInKysely(
        new Kysely<BenchDB>({ dialect: new PostgresDialect({ pool }) }),
      ),
      'inbox.process': viaInbox(
        createInbox({ db: new Kysely<BenchDB>({ dialect: new PostgresDialect({ pool }) }), consumer: 'bench' }),
      ),
      'inbox.process, pool naming the inbox statements': viaInbox(
        createInbox({
          db: new Kysely<BenchDB>({ dialect: new PostgresDialect({ pool: namingInbox }) }),
          consumer: 'bench',
        }),
      ),
      'inbox.process, pool sending BEGIN with the claim': viaInbox(
        createInbox({
          db: new Kysely<BenchDB>({ dialect: new PostgresDialect({ pool: deferring }) }),
          consumer: 'bench',
        }),
      ),
      'inbox.process, pool sending BEGIN with the claim, naming the inbox statements': viaInbox(
        createInbox({
          db: new Kysely<BenchDB>({ dialect: new PostgresDialect({ pool: deferringNaming }) }),
          consumer: 'bench',
        }),
      ),
      'postgres.js, awaiting each, unnamed': postgresJsTwin(prepared, false, false),
      'postgres.js, awaiting each, prepared': postgresJsTwin(prepared, false, true),
      'postgres.js, BEGIN + claim pipelined, unnamed': postgresJsTwin(prepared, true, false),
      'postgres.js, BEGIN + claim pipelined, prepared': postgresJsTwin(prepared, true, true),
    };
    for (const name of Object.keys(modes)) {
      if (CASES !== undefined && name !== 'node-postgres, awaiting each' && !CASES.test(name)) delete modes[name];
    }
    for (const work of Object.values(modes)) {
      await reset();
      await drain(MIX.list.slice(0, 500), c, work);
    }
    for (let round = 0; round < ROUNDS; round++) {
      const names = Object.keys(modes);
      const order = names.map((_, i) => names[(i + round) % names.length] as string);
      for (const name of order) {
        await reset();
        const before = process.cpuUsage();
        const rate = await drain(MIX.list, c, modes[name] as Work);
        const used = process.cpuUsage(before);
        if ((await rowCount()) !== MIX.unique) throw new Error(`${name}: wrong row count`);
        const keyName = `${name} @c=${c}`;
        rates[keyName] = [...(rates[keyName] ?? []), rate];
        cpu[keyName] = [...(cpu[keyName] ?? []), (used.user + used.system) / MIX.list.length];
        process.stderr.write(`  round ${round + 1}/${ROUNDS} ${keyName}: ${Math.round(rate)} msg/s\n`);
      }
    }
    await pool.end();
    await namingInbox.end();
    await deferring.end();
    await deferringNaming.end();
    await prepared.end();
  }
  const table = Object.keys(rates).map((name) => {
    const c = name.slice(name.lastIndexOf('@'));
    const floor = rates[`node-postgres, awaiting each ${c}`] ?? [];
    const rate = median(rates[name] ?? []);
    return {
      name,
      messagesPerSec: Math.round(rate),
      // The median of per-round ratios: pairs taken minutes apart drift less than medians.
      ratioToNodePostgres: Number(median((rates[name] ?? []).map((r, i) => r / (floor[i] ?? Number.NaN))).toFixed(2)),
      samples: (rates[name] ?? []).map(Math.round),
      clientCpuMicros: Math.round(median(cpu[name] ?? [])),
    };
  });
  report.drivers = table;
  console.log('\ndrivers, hand-written, 30% redeliveries:');
  for (const row of table) {
    console.log(
      `  ${row.name.padEnd(60)} ${String(row.messagesPerSec).padStart(6)} msg/s  ${row.ratioToNodePostgres.toFixed(2)}x  ${row.clientCpuMicros} µs CPU`,
    );
  }
}

await admin.end();
(report.load as number[]).push(loadavg()[0] ?? Number.NaN);
saveResults(args.results, {
  settings: {
    messages: N,
    distinct: MIX.unique,
    rounds: ROUNDS,
    sections: [...SECTIONS],
    command: `node bench/core-profile.ts${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}`,
  },
  ...report,
});
