// `inboxkit migrate | status | outbox list | outbox retry` for the outbox, run as a process
// against a real Postgres (and a real RabbitMQ relay): what each prints, its exit code, and
// that bad input changes nothing.
import { createOutbox, outboxSchemaSql } from '@inboxkit/core';
import { createRabbitRelay } from '@inboxkit/rabbitmq';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  amqpUrl,
  openTestBroker,
  type TestBroker,
  uniqueName,
  waitFor,
} from '../../../test/rabbitmq/support/broker.ts';
import { createTestDatabase, type TestDatabase } from '../../../test/support/postgres.ts';
import { type CliResult, oneLine, runCli, runInTerminal } from './support/run-cli.ts';

let t: TestDatabase;
let broker: TestBroker;
let env: Record<string, string>;

beforeAll(async () => {
  t = await createTestDatabase('cli_outbox');
  broker = await openTestBroker('cli-outbox');
  env = { DATABASE_URL: t.url };
});
afterAll(async () => {
  await broker?.dispose();
  await t?.dispose();
});

function json(result: CliResult) {
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.stdout);
}

/** A fresh outbox table in schema `schema`, with `pending` pending messages and failed ones named by `failed`. */
async function seededOutbox(schema: string, pending: number, failed: readonly string[]) {
  await sql.raw(outboxSchemaSql({ schema })).execute(t.db);
  const outbox = createOutbox({ db: t.db, schema });
  await outbox.enqueue(
    t.db,
    Array.from({ length: pending }, (_, i) => ({ topic: 'orders', key: `p-${i}`, payload: i, messageId: `p-${i}` })),
  );
  for (const id of failed) {
    await outbox.enqueue(t.db, { exchange: 'billing', routingKey: 'charge', key: id, payload: id, messageId: id });
  }
  // Set aside as a relay does past its retry budget.
  await sql`UPDATE ${sql.table(`${schema}.outbox`)} SET status = 'failed', attempts = 10,
    last_error = ${'NOT_FOUND - no exchange "billing"'} WHERE message_id = ANY(${failed as string[]})`.execute(t.db);
  return outbox;
}

async function statuses(schema: string): Promise<Record<string, string>> {
  const { rows } = await sql<{ message_id: string; status: string }>`
    SELECT message_id, status FROM ${sql.table(`${schema}.outbox`)}`.execute(t.db);
  return Object.fromEntries(rows.map((r) => [r.message_id, r.status]));
}

describe('migrate', () => {
  it('creates the inbox tables and the outbox table, in their schemas; --inbox-only and --outbox-only', async () => {
    const first = json(
      await runCli(['migrate', '--schema', 'cli_mig_in', '--outbox-schema', 'cli_mig_out', '--json'], env),
    );
    expect(first.migrations).toEqual([
      { tables: 'inbox', migration: 'inboxkit_0001_processed_messages', status: 'Success' },
      { tables: 'inbox', migration: 'inboxkit_0002_claim_function', status: 'Success' },
      { tables: 'outbox', migration: 'inboxkit_outbox_0001', status: 'Success' },
    ]);
    const tables = async (schema: string) => {
      const { rows } = await sql<{ table_name: string }>`
        SELECT table_name FROM information_schema.tables WHERE table_schema = ${schema} ORDER BY table_name`.execute(
        t.db,
      );
      return rows.map((r) => r.table_name);
    };
    expect(await tables('cli_mig_out')).toEqual(['outbox', 'outbox_migration']);
    expect(await tables('cli_mig_in')).toEqual([
      'processed_messages',
      'processed_messages_attempts',
      'processed_messages_migration',
    ]);
    const again = await runCli(['migrate', '--schema', 'cli_mig_in', '--outbox-schema', 'cli_mig_out'], env);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('The inbox and outbox tables are up to date.');

    const outboxOnly = json(await runCli(['migrate', '--schema', 'cli_mig_only', '--outbox-only', '--json'], env));
    expect(outboxOnly.migrations).toEqual([{ tables: 'outbox', migration: 'inboxkit_outbox_0001', status: 'Success' }]);
    expect(await tables('cli_mig_only')).toEqual(['outbox', 'outbox_migration']);
    const inboxOnly = json(
      await runCli(['migrate', '--schema', 'cli_mig_only2', '--outbox-table', 'events', '--inbox-only', '--json'], env),
    );
    expect(inboxOnly.migrations.map((m: { tables: string }) => m.tables)).toEqual(['inbox', 'inbox']);
    expect(await tables('cli_mig_only2')).not.toContain('events');
  });

  it('refuses a bad outbox table name before migrating anything (exit 2), and both --*-only flags together', async () => {
    const bad = await runCli(
      ['migrate', '--schema', 'cli_mig_bad', '--outbox-table', 'x"; DROP TABLE charges; --'],
      env,
    );
    expect(bad.code).toBe(2);
    expect(oneLine(bad)).toContain('plain identifier');
    const { rows } = await sql<{ n: string }>`
      SELECT count(*) AS n FROM information_schema.schemata WHERE schema_name = 'cli_mig_bad'`.execute(t.db);
    expect(Number(rows[0]?.n)).toBe(0);
    const both = await runCli(['migrate', '--inbox-only', '--outbox-only'], env);
    expect(both.code).toBe(2);
    expect(oneLine(both)).toContain('exclude each other');
  });
});

describe('status and outbox list', () => {
  it('status says nothing of an outbox without an outbox table; with one, its backlog, oldest and failed counts', async () => {
    const inboxOnly = await runCli(['migrate', '--schema', 'cli_st_none', '--inbox-only'], env);
    expect(inboxOnly.code, inboxOnly.stderr).toBe(0);
    const without = await runCli(['status', '--schema', 'cli_st_none', '--json'], env);
    expect(json(without)).not.toHaveProperty('outbox');
    const withoutText = await runCli(['status', '--schema', 'cli_st_none'], env);
    expect(withoutText.stdout).not.toContain('outbox');

    await runCli(['migrate', '--schema', 'cli_st'], env);
    await seededOutbox('cli_st', 4, ['f-1', 'f-2']);
    const { rows } = await sql<{ at: Date }>`
      SELECT min(created_at) AS at FROM cli_st.outbox WHERE status = 'pending'`.execute(t.db);
    const status = json(await runCli(['status', '--schema', 'cli_st', '--json'], env));
    expect(status.outbox).toMatchObject({
      pending: 4,
      pendingEstimated: false,
      failed: 2,
      failedEstimated: false,
      oldestPendingAt: rows[0]?.at.toISOString(),
    });
    expect(status.outbox.oldestPendingAgeMs).toBeGreaterThanOrEqual(0);
    const text = await runCli(['status', '--schema', 'cli_st'], env);
    expect(text.stdout).toMatch(/outbox: 4 pending \(oldest \d+s ago\), 2 failed/);
    // Past --exact-up-to, the figures are marked as estimates.
    const bounded = await runCli(['status', '--schema', 'cli_st', '--exact-up-to', '3'], env);
    expect(bounded.stdout).toMatch(/outbox: ~\d+ pending .*, ~\d+ failed \(~ estimated/);
  });

  it('outbox list: the failed messages with destination, key, attempts, last error and age, and the backlog', async () => {
    await seededOutbox('cli_list', 3, ['f-a', 'f-b']);
    const listed = json(await runCli(['outbox', 'list', '--outbox-schema', 'cli_list', '--json'], env));
    expect(listed.backlog).toMatchObject({ pending: 3, failed: 2, pendingEstimated: false, failedEstimated: false });
    expect(listed.failed.map((m: { messageId: string }) => m.messageId)).toEqual(['f-a', 'f-b']);
    expect(listed.failed[0]).toMatchObject({
      destination: 'billing',
      routingKey: 'charge',
      key: 'f-a',
      attempts: 10,
      lastError: 'NOT_FOUND - no exchange "billing"',
    });
    expect(listed.failed[0].ageMs).toBeGreaterThanOrEqual(0);
    const text = await runCli(['outbox', 'list', '--outbox-schema', 'cli_list'], env);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain('outbox: 3 pending');
    expect(text.stdout).toMatch(/f-a .*"billing" \/ charge .* f-a .* 10 .* NOT_FOUND - no exchange "billing"/);
    const limited = json(
      await runCli(['outbox', 'list', '--outbox-schema', 'cli_list', '--limit', '1', '--json'], env),
    );
    expect(limited.failed.map((m: { messageId: string }) => m.messageId)).toEqual(['f-a']);
  });

  it('outbox list without an outbox table: one line, exit 1', async () => {
    const result = await runCli(['outbox', 'list', '--outbox-schema', 'cli_nothing_here'], env);
    expect(result.code).toBe(1);
    expect(oneLine(result)).toContain('No outbox table cli_nothing_here.outbox');
  });
});

describe('outbox retry', () => {
  it('puts the named failed messages back in line, leaving the others failed', async () => {
    await seededOutbox('cli_retry', 1, ['r-1', 'r-2', 'r-3']);
    const result = json(
      await runCli(['outbox', 'retry', 'r-1', 'r-3', '--outbox-schema', 'cli_retry', '--yes', '--json'], env),
    );
    expect(result).toEqual({ retried: 2 });
    expect(await statuses('cli_retry')).toEqual({
      'p-0': 'pending',
      'r-1': 'pending',
      'r-2': 'failed',
      'r-3': 'pending',
    });
    const { rows } = await sql<{ attempts: number; last_error: string | null }>`
      SELECT attempts, last_error FROM cli_retry.outbox WHERE message_id = 'r-1'`.execute(t.db);
    expect(rows[0]).toEqual({ attempts: 0, last_error: null });
    const all = json(
      await runCli(['outbox', 'retry', '--all', '--outbox-schema', 'cli_retry', '--yes', '--json'], env),
    );
    expect(all).toEqual({ retried: 1 });
    expect(Object.values(await statuses('cli_retry'))).toEqual(['pending', 'pending', 'pending', 'pending']);
    const none = await runCli(['outbox', 'retry', '--all', '--outbox-schema', 'cli_retry', '--yes'], env);
    expect(none.code, none.stderr).toBe(0);
    expect(none.stdout).toContain('No failed messages');
  });

  it('refuses bad input with one line and a non-zero exit, retrying nothing', async () => {
    await seededOutbox('cli_retry_bad', 0, ['b-1', 'b-2']);
    const before = await statuses('cli_retry_bad');
    const cases: Array<[string[], number, string]> = [
      [['b-1', 'unknown-id'], 1, 'No failed outbox message with id "unknown-id"; nothing was retried.'],
      [['b-1', 'x'.repeat(256)], 2, 'Expected a message id of 1 to 255 characters'],
      [['b-1', ''], 2, 'Expected a message id of 1 to 255 characters'],
      [[], 2, 'Say what to retry'],
      [['b-1', '--all'], 2, '--all retries every failed message'],
    ];
    for (const [args, code, message] of cases) {
      const result = await runCli(['outbox', 'retry', ...args, '--outbox-schema', 'cli_retry_bad', '--yes'], env);
      expect(result.code, args.join(' ')).toBe(code);
      expect(oneLine(result)).toContain(message);
    }
    // Without --yes and without a terminal to ask on: refused (exit 2).
    const unconfirmed = await runCli(['outbox', 'retry', 'b-1', '--outbox-schema', 'cli_retry_bad'], env);
    expect(unconfirmed.code).toBe(2);
    expect(oneLine(unconfirmed)).toContain('pass --yes');
    const unreachable = await runCli(['outbox', 'retry', 'b-1', '--yes'], {
      DATABASE_URL: 'postgres://postgres@127.0.0.1:1/nowhere',
    });
    expect(unreachable.code).toBe(1);
    expect(oneLine(unreachable)).toContain('Cannot reach the database');
    expect(await statuses('cli_retry_bad')).toEqual(before);
  });

  it('asks at a terminal: no retries nothing, yes retries', async () => {
    await seededOutbox('cli_retry_tty', 0, ['t-1']);
    const args = ['outbox', 'retry', 't-1', '--outbox-schema', 'cli_retry_tty'];
    const no = await runInTerminal(args, env, { prompt: '[y/N]', input: 'n\n' });
    expect(no.code).toBe(1);
    expect(no.stdout).toContain('nothing was retried');
    expect(await statuses('cli_retry_tty')).toEqual({ 't-1': 'failed' });
    const yes = await runInTerminal(args, env, { prompt: '[y/N]', input: 'y\n' });
    expect(yes.code, yes.stdout).toBe(0);
    expect(await statuses('cli_retry_tty')).toEqual({ 't-1': 'pending' });
  });

  it('with a real RabbitMQ relay: a message refused for a missing exchange is set aside, and published after `outbox retry`', async () => {
    const schema = 'cli_relay';
    const migrated = await runCli(['migrate', '--schema', schema, '--outbox-only'], env);
    expect(migrated.code, migrated.stderr).toBe(0);
    const outbox = createOutbox({ db: t.db, schema });
    const exchange = uniqueName('cli-outbox-ex');
    const queue = uniqueName('cli-outbox-q');
    await broker.declareQueue(queue);
    const relay = createRabbitRelay({
      outbox,
      url: amqpUrl(),
      pollIntervalMs: 50,
      retry: { maxAttempts: 2, minDelayMs: 20, maxDelayMs: 50 },
    });
    try {
      await outbox.enqueue(t.db, { exchange, routingKey: 'r', payload: { amount: 5 }, messageId: 'charge-5' });
      let listed: { failed: Array<{ messageId: string; attempts: number; lastError: string }> } = { failed: [] };
      await waitFor(
        'the refused message set aside',
        async () => {
          listed = json(await runCli(['outbox', 'list', '--outbox-schema', schema, '--json'], env));
          return listed.failed.length === 1;
        },
        30_000,
      );
      expect(listed.failed[0]).toMatchObject({ messageId: 'charge-5', attempts: 2 });
      expect(listed.failed[0]?.lastError).toMatch(/NOT_FOUND|404|channel/);

      await broker.channel.assertExchange(exchange, 'direct', { durable: false, autoDelete: true });
      await broker.channel.bindQueue(queue, exchange, 'r');
      const retried = json(
        await runCli(['outbox', 'retry', 'charge-5', '--outbox-schema', schema, '--yes', '--json'], env),
      );
      expect(retried).toEqual({ retried: 1 });
      await waitFor('published', async () => (await broker.count(queue)) === 1, 30_000);
      const [message] = await broker.drain(queue);
      expect(message?.properties.messageId).toBe('charge-5');
      await waitFor('the outbox row deleted', async () => Object.keys(await statuses(schema)).length === 0, 30_000);
      const after = json(await runCli(['outbox', 'list', '--outbox-schema', schema, '--json'], env));
      expect(after).toMatchObject({ backlog: { pending: 0, failed: 0 }, failed: [] });
    } finally {
      await relay.close();
    }
  });
});
