// `inboxkit migrate | status | find | forget | purge` run as a process against a real
// Postgres: what each prints, its exit code, and that bad input changes nothing.
import { createHash } from 'node:crypto';
import { createInbox, migrateInbox, NonRetryableError } from '@inboxkit/core';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/support/postgres.ts';
import { oneLine, runCli, runInTerminal, startCli } from './support/run-cli.ts';

let t: TestDatabase;
let env: Record<string, string>;

beforeAll(async () => {
  t = await createTestDatabase('cli_inbox');
  env = { DATABASE_URL: t.url };
});
afterAll(async () => {
  await t?.dispose();
});

async function keyCount(consumer?: string): Promise<number> {
  const where = consumer === undefined ? sql`` : sql`WHERE consumer = ${consumer}`;
  const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM processed_messages ${where}`.execute(t.db);
  return Number(rows[0]?.n);
}

/** Processes `ids` for `consumer` through the real inbox; ids starting with `poison` are dead-lettered and recorded. */
async function seed(consumer: string, ids: readonly string[]): Promise<void> {
  const inbox = createInbox({ db: t.db, consumer });
  for (const id of ids) {
    const message = { id, payload: `payload of ${id}` };
    const outcome = await inbox.process(message, async () => {
      if (id.startsWith('poison')) throw new NonRetryableError(`cannot charge ${id}`);
      return { charged: id };
    });
    if (outcome.status === 'dead_letter') await inbox.recordDeadLetter(message, outcome);
  }
}

describe('migrate', () => {
  it('creates the tables in the given schema, and a second run changes nothing', async () => {
    const first = await runCli(['migrate', '--schema', 'cli_migrate', '--json'], env);
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout).migrations).toEqual([
      { tables: 'inbox', migration: 'inboxkit_0001_processed_messages', status: 'Success' },
      { tables: 'inbox', migration: 'inboxkit_0002_claim_function', status: 'Success' },
      { tables: 'outbox', migration: 'inboxkit_outbox_0001', status: 'Success' },
    ]);
    const { rows } = await sql<{ n: string }>`
      SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'cli_migrate'
        AND table_name IN ('processed_messages', 'processed_messages_attempts')`.execute(t.db);
    expect(Number(rows[0]?.n)).toBe(2);
    const second = await runCli(['migrate', '--schema', 'cli_migrate'], env);
    expect(second.code).toBe(0);
    expect(second.stdout).toContain('up to date');
  });

  it('--partitioned makes the inbox table partitioned by time, with the given interval, premake and retention', async () => {
    const args = [
      ...['--schema', 'cli_migrate_partitioned', 'migrate', '--inbox-only', '--partitioned'],
      ...['--partition-interval', '1h', '--premake', '2', '--partition-retention', '3d', '--json'],
    ];
    const first = await runCli(args, env);
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout).migrations.map((m: { migration: string }) => m.migration)).toContain(
      'inboxkit_partitioned',
    );
    const { rows } = await sql<{ bound: string }>`
      SELECT pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'cli_migrate_partitioned.processed_messages'::regclass`.execute(t.db);
    // The current hour and two ahead at least, each an hour long.
    expect(rows.length).toBeGreaterThanOrEqual(3);
    const hours = rows
      .map((r) => /FROM \('([^']*)'\) TO \('([^']*)'\)/.exec(r.bound))
      .filter((m) => m !== null)
      .map((m) => (Date.parse(String(m[2])) - Date.parse(String(m[1]))) / 3_600_000);
    expect(new Set(hours)).toEqual(new Set([1]));
    // Its partitions then serve the inbox. A second run applies no numbered migration again;
    // the partitioning step is re-run (idempotent) with the settings given.
    const inbox = createInbox({ db: t.db, consumer: 'cli-partitioned', schema: 'cli_migrate_partitioned' });
    expect((await inbox.process({ id: 'p-1', payload: 'x' }, async () => 1)).status).toBe('processed');
    const second = await runCli(args, env);
    expect(second.code, second.stderr).toBe(0);
    expect(JSON.parse(second.stdout).migrations).toEqual([
      { tables: 'inbox', migration: 'inboxkit_partitioned', status: 'Success' },
    ]);
    expect((await inbox.process({ id: 'p-1', payload: 'x' }, async () => 1)).status).toBe('duplicate');
    // A run without --partitioned leaves the table and its settings as they are.
    const plain = await runCli(['--schema', 'cli_migrate_partitioned', 'migrate', '--inbox-only'], env);
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stdout).toContain('up to date');
    const fresh = createInbox({ db: t.db, consumer: 'cli-partitioned', schema: 'cli_migrate_partitioned' });
    expect((await fresh.process({ id: 'p-1', payload: 'x' }, async () => 1)).status).toBe('duplicate');
    expect((await fresh.process({ id: 'p-2', payload: 'x' }, async () => 1)).status).toBe('processed');
  });

  it('partition flags without --partitioned, or malformed, are exit 2 and create nothing', async () => {
    const without = await runCli(['--schema', 'cli_migrate_nopart', 'migrate', '--premake', '2'], env);
    expect(without.code).toBe(2);
    expect(oneLine(without)).toContain('--partitioned');
    const malformed = await runCli(
      ['--schema', 'cli_migrate_nopart', 'migrate', '--partitioned', '--partition-interval', 'soon'],
      env,
    );
    expect(malformed.code).toBe(2);
    expect(oneLine(malformed)).toContain('--partition-interval');
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM information_schema.schemata WHERE schema_name = 'cli_migrate_nopart'`.execute(
      t.db,
    );
    expect(rows[0]?.n).toBe(0);
  });

  it('refuses a schema name that is no plain identifier (exit 2), creating nothing', async () => {
    const result = await runCli(['migrate', '--schema', 'x"; DROP TABLE charges; --'], env);
    expect(result.code).toBe(2);
    expect(oneLine(result)).toContain('plain identifier');
  });
});

describe('status', () => {
  it('reports keys, dead-lettered keys, the oldest key and crash-loop suspects per consumer', async () => {
    await seed('status-a', ['a1', 'a2', 'poison-a3']);
    await seed('status-b', ['b1']);
    await sql`INSERT INTO processed_messages_attempts (consumer, message_id, attempts) VALUES ('status-a', 'crashing', 2)`.execute(
      t.db,
    );
    const result = await runCli(['status', '--json'], env);
    expect(result.code, result.stderr).toBe(0);
    const consumers = JSON.parse(result.stdout).consumers as Array<Record<string, unknown>>;
    const a = consumers.find((c) => c.consumer === 'status-a');
    expect(a).toMatchObject({
      keys: 3,
      keysEstimated: false,
      deadLettered: 1,
      deadLetteredEstimated: false,
      crashLoopSuspects: 1,
      maxAttempts: 2,
      oldestTimedOut: false,
    });
    expect(typeof a?.oldestKeyAt).toBe('string');
    expect(consumers.find((c) => c.consumer === 'status-b')).toMatchObject({
      keys: 1,
      deadLettered: 0,
      crashLoopSuspects: 0,
    });

    const table = await runCli(['status', '--consumer', 'status-a'], env);
    expect(table.code).toBe(0);
    expect(table.stdout).toContain('status-a');
    expect(table.stdout).toContain('1 (most attempts: 2)');
  });

  it('estimates past --exact-up-to, and says the figures are estimates', async () => {
    await seed('status-big', ['c1', 'c2', 'c3', 'c4', 'poison-c5']);
    await sql`ANALYZE processed_messages`.execute(t.db);
    const result = await runCli(['status', '--consumer', 'status-big', '--exact-up-to', '2', '--json'], env);
    expect(result.code, result.stderr).toBe(0);
    const [big] = JSON.parse(result.stdout).consumers;
    expect(big).toMatchObject({ consumer: 'status-big', keysEstimated: true, deadLetteredEstimated: true });
    expect(big.keys).toBeGreaterThanOrEqual(3);
    const text = await runCli(['status', '--consumer', 'status-big', '--exact-up-to', '2'], env);
    expect(text.stdout).toContain('~');
    expect(text.stdout).toContain('estimate');
  });

  it('--watch prints a document per refresh until interrupted, then exits 0', async () => {
    const watching = startCli(['status', '--watch', '--interval', '100ms', '--json'], env);
    await expect
      .poll(() => watching.stdout().split('\n').filter(Boolean).length, { timeout: 20_000 })
      .toBeGreaterThanOrEqual(2);
    watching.child.kill('SIGINT');
    const result = await watching.done;
    expect(result.code).toBe(0);
    for (const line of result.stdout.split('\n').filter(Boolean))
      expect(JSON.parse(line).consumers).toBeInstanceOf(Array);
  });

  it('an unknown consumer is exit 1 with one line', async () => {
    const result = await runCli(['status', '--consumer', 'nobody-at-all'], env);
    expect(result.code).toBe(1);
    expect(oneLine(result)).toBe('inboxkit: Consumer "nobody-at-all" has no keys and no crash-loop attempts.');
  });
});

describe('find', () => {
  it('prints the stored key: status, result, fingerprint, times', async () => {
    await seed('find', ['f1', 'poison-f2']);
    const result = await runCli(['find', 'find', 'f1', '--json'], env);
    expect(result.code, result.stderr).toBe(0);
    const key = JSON.parse(result.stdout);
    expect(key).toMatchObject({ consumer: 'find', messageId: 'f1', status: 'processed', result: { charged: 'f1' } });
    expect(key.fingerprint).toBe(createHash('sha256').update('payload of f1').digest('hex'));
    expect(Number.isNaN(Date.parse(key.processedAt))).toBe(false);
    const dead = JSON.parse((await runCli(['find', 'find', 'poison-f2', '--json'], env)).stdout);
    expect(dead).toMatchObject({ status: 'dead_lettered', result: { reason: 'non_retryable' } });
    const text = await runCli(['find', 'find', 'f1'], env);
    expect(text.stdout).toContain('processed');
  });

  it('not found is exit 1 with one line; a malformed id is exit 2', async () => {
    const missing = await runCli(['find', 'find', 'f-none'], env);
    expect(missing.code).toBe(1);
    expect(oneLine(missing)).toBe('inboxkit: No key for message id "f-none" of consumer "find".');
    const unknown = await runCli(['find', 'nobody-at-all', 'f1'], env);
    expect(unknown.code).toBe(1);
    expect(oneLine(unknown)).toContain('consumer "nobody-at-all" has no keys');
    const tooLong = await runCli(['find', 'find', 'x'.repeat(2001)], env);
    expect(tooLong.code).toBe(2);
    expect(oneLine(tooLong)).toContain('over the limit');
    const empty = await runCli(['find', 'find', ''], env);
    expect(empty.code).toBe(2);
    expect(oneLine(empty)).toBe('inboxkit: Message id is empty.');
  });
});

describe('forget', () => {
  it('with --yes deletes the keys: the messages run again', async () => {
    await seed('forget', ['g1', 'g2', 'g3']);
    const result = await runCli(['forget', 'forget', 'g1', 'g2', '--yes', '--json'], env);
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout).forgotten.sort()).toEqual(['g1', 'g2']);
    expect(await keyCount('forget')).toBe(1);
    const inbox = createInbox({ db: t.db, consumer: 'forget' });
    const again = await inbox.process({ id: 'g1', payload: 'payload of g1' }, async () => 'ran again');
    expect(again.status).toBe('processed');
  });

  it('without a terminal and without --yes it refuses (exit 2), deleting nothing', async () => {
    await seed('forget-ask', ['h1']);
    const result = await runCli(['forget', 'forget-ask', 'h1'], env);
    expect(result.code).toBe(2);
    expect(oneLine(result)).toContain('pass --yes');
    expect(await keyCount('forget-ask')).toBe(1);
  });

  it('on a terminal it asks: yes deletes, anything else deletes nothing (exit 1)', async () => {
    await seed('forget-tty', ['t1', 't2']);
    const prompt = '[y/N]';
    const declined = await runInTerminal(['forget', 'forget-tty', 't1'], env, { prompt, input: 'n\r' });
    expect(declined.code).toBe(1);
    expect(declined.stdout).toContain('Forget 1 key(s) of consumer "forget-tty"? 1 of them processed');
    expect(declined.stdout).toContain('Not confirmed; nothing was deleted.');
    expect(await keyCount('forget-tty')).toBe(2);
    const accepted = await runInTerminal(['forget', 'forget-tty', 't1'], env, { prompt, input: 'y\r' });
    expect(accepted.code, accepted.stdout).toBe(0);
    expect(accepted.stdout).toContain('Forgot 1 key(s) of consumer forget-tty.');
    expect(await keyCount('forget-tty')).toBe(1);
  });

  it('an id without a key, or an unknown consumer, is exit 1 and deletes nothing', async () => {
    await seed('forget-some', ['k1', 'k2']);
    const result = await runCli(['forget', 'forget-some', 'k1', 'k-none', '--yes'], env);
    expect(result.code).toBe(1);
    expect(oneLine(result)).toBe('inboxkit: No key for "k-none" of consumer "forget-some"; nothing was deleted.');
    expect(await keyCount('forget-some')).toBe(2);
    const unknown = await runCli(['forget', 'nobody-at-all', 'k1', '--yes'], env);
    expect(unknown.code).toBe(1);
    expect(oneLine(unknown)).toContain('has no keys');
    const before = await keyCount();
    const malformed = await runCli(['forget', 'forget-some', '', '--yes'], env);
    expect(malformed.code).toBe(2);
    expect(await keyCount()).toBe(before);
  });
});

describe('purge', () => {
  it('deletes the keys older than --retention and keeps the others', async () => {
    await seed('purge', ['p1', 'p2', 'p3', 'p4']);
    await sql`UPDATE processed_messages SET processed_at = now() - interval '10 days'
      WHERE consumer = 'purge' AND message_id IN ('p1', 'p2', 'p3')`.execute(t.db);
    const result = await runCli(
      ['purge', '--consumer', 'purge', '--retention', '9d', '--batch-size', '2', '--json'],
      env,
    );
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout).consumers).toEqual([{ consumer: 'purge', deleted: 3, skipped: false }]);
    expect(await keyCount('purge')).toBe(1);
    // The default window is the inbox's, 7 days: nothing here is that old any more.
    const again = await runCli(['purge', '--consumer', 'purge'], env);
    expect(again.code).toBe(0);
    expect(await keyCount('purge')).toBe(1);
  });

  it('draws a progress bar on a terminal, and none with --json', async () => {
    await seed('purge-bar', ['q1', 'q2', 'q3']);
    await sql`UPDATE processed_messages SET processed_at = now() - interval '10 days' WHERE consumer = 'purge-bar'`.execute(
      t.db,
    );
    const drawn = await runInTerminal(['purge', '--consumer', 'purge-bar', '--batch-size', '1'], env);
    expect(drawn.code, drawn.stdout).toBe(0);
    expect(drawn.stdout).toContain('purge purge-bar [');
    expect(drawn.stdout).toContain('3/3');
    await seed('purge-bar', ['q4']);
    await sql`UPDATE processed_messages SET processed_at = now() - interval '10 days' WHERE consumer = 'purge-bar'`.execute(
      t.db,
    );
    const quiet = await runInTerminal(['purge', '--consumer', 'purge-bar', '--json'], env);
    expect(quiet.code).toBe(0);
    expect(quiet.stdout).not.toContain('purge purge-bar [');
    expect(JSON.parse(quiet.stdout.trim()).consumers).toEqual([{ consumer: 'purge-bar', deleted: 1, skipped: false }]);
  });

  it('on a table partitioned by time, reports the partitions it dropped and created', async () => {
    const schema = 'cli_partitioned';
    const { error } = await migrateInbox(t.db, {
      schema,
      partitioned: { intervalMs: 1000, premake: 3, retentionMs: 2000 },
    });
    if (error) throw error;
    const inbox = createInbox({ db: t.db, consumer: 'partitioned', schema });
    expect((await inbox.process({ id: 'old-1', payload: 'p' }, async () => 1)).status).toBe('processed');
    await new Promise((resolve) => setTimeout(resolve, 3500));

    // A partition goes once its keys are older than both --retention and the table's floor (2 s).
    const json = await runCli(['--schema', schema, 'purge', '--retention', '2s', '--json'], env);
    expect(json.code, json.stderr).toBe(0);
    const [entry] = JSON.parse(json.stdout).consumers;
    expect(entry).toMatchObject({ consumer: 'partitioned', deleted: 0, skipped: false });
    expect(entry.partitions.dropped).toBeGreaterThanOrEqual(1);
    expect(entry.partitions.created).toBeGreaterThanOrEqual(1);
    const { rows } = await sql<{
      n: number;
    }>`SELECT count(*)::int AS n FROM cli_partitioned.processed_messages`.execute(t.db);
    expect(rows[0]?.n).toBe(0);

    // The table says so too, instead of a bare "deleted 0".
    expect((await inbox.process({ id: 'old-2', payload: 'p' }, async () => 1)).status).toBe('processed');
    await new Promise((resolve) => setTimeout(resolve, 3500));
    const table = await runCli(['--schema', schema, 'purge', '--retention', '2s'], env);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/dropped [1-9]\d* partitions?/);
  });

  it('a malformed --retention is exit 2 and deletes nothing', async () => {
    const before = await keyCount();
    const result = await runCli(['purge', '--retention', 'soon'], env);
    expect(result.code).toBe(2);
    expect(oneLine(result)).toContain('--retention');
    expect(await keyCount()).toBe(before);
  });
});

describe('usage and services', () => {
  it('an unreachable database is exit 1 with one line', async () => {
    const result = await runCli(['status'], { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none' });
    expect(result.code).toBe(1);
    expect(oneLine(result)).toBe(
      'inboxkit: Cannot reach the database at 127.0.0.1:1/none: connect ECONNREFUSED 127.0.0.1:1',
    );
  });

  it('no database configured, an unknown option or command: exit 2', async () => {
    const none = await runCli(['status']);
    expect(none.code).toBe(2);
    expect(oneLine(none)).toBe('inboxkit: No database: set DATABASE_URL or pass --database-url.');
    expect((await runCli(['status', '--bogus'], env)).code).toBe(2);
    expect((await runCli(['frobnicate'], env)).code).toBe(2);
    expect((await runCli([], env)).code).toBe(2);
    expect((await runCli(['--help'], env)).code).toBe(0);
  });
});
