// `inboxkit dlq list | show | replay --queue` against a real RabbitMQ dead-letter queue fed
// by a real subscription: poison messages are dead-lettered, the bug is fixed, the replay
// applies each exactly once and empties the queue, even when the replay is killed midway.
import { createInbox, NonRetryableError } from '@inboxkit/core';
import { subscribe } from '@inboxkit/rabbitmq';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  amqpUrl,
  openTestBroker,
  type TestBroker,
  uniqueName,
  waitFor,
} from '../../../test/rabbitmq/support/broker.ts';
import { Subscriptions } from '../../../test/rabbitmq/support/subscriptions.ts';
import { createTestDatabase, type TestDatabase, type TestDB } from '../../../test/support/postgres.ts';
import { type CliResult, oneLine, runCli, runInTerminal, startCli } from './support/run-cli.ts';

let t: TestDatabase;
let broker: TestBroker;
const subscriptions = new Subscriptions();

beforeAll(async () => {
  t = await createTestDatabase('cli_dlq_rabbitmq');
  broker = await openTestBroker('cli-dlq');
});
afterEach(async () => {
  await subscriptions.closeAll();
});
afterAll(async () => {
  await broker?.dispose();
  await t?.dispose();
});

const env = () => ({ DATABASE_URL: t.url, AMQP_URL: amqpUrl() });

/**
 * A queue whose handler charges `amountCents`, and throws NonRetryableError while the bug
 * is not fixed (and always for ids starting with `forever`).
 */
async function poisonedQueue(label: string) {
  const queue = uniqueName(label);
  const dlq = `${queue}.dlq`;
  // Declared here as the subscription declares them, so the test can publish and count at once.
  await broker.declareQueue(queue);
  await broker.declareQueue(dlq);
  const consumer = uniqueName(label);
  const state = { fixed: false };
  subscriptions.add(
    subscribe<TestDB, { amountCents: number }, void>({
      inbox: createInbox({ db: t.db, consumer }),
      url: amqpUrl(),
      queue,
      decode: 'json',
      assertTopology: true,
      handler: async (trx, message) => {
        if (!state.fixed || message.id.startsWith('forever'))
          throw new NonRetryableError(`bug: cannot charge ${message.id}`);
        await trx
          .insertInto('charges')
          .values({ id: message.id, user_id: 'u-1', amount_cents: message.body.amountCents })
          .execute();
      },
    }),
  );
  return { queue, dlq, consumer, state };
}

async function charges(prefix: string): Promise<Array<{ id: string; n: number }>> {
  const { rows } = await sql<{ id: string; n: string }>`
    SELECT id, count(*) AS n FROM charges WHERE id LIKE ${`${prefix}%`} GROUP BY id ORDER BY id`.execute(t.db);
  return rows.map((r) => ({ id: r.id, n: Number(r.n) }));
}

function json(result: CliResult) {
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.stdout);
}

/** A replay that refused some of its selection: exit 1, one line saying so, the report on stdout. */
function refusedJson(result: CliResult, refused: number) {
  expect(result.code, result.stderr).toBe(1);
  expect(oneLine(result)).toContain(`${refused} selected dead letter(s) refused`);
  return JSON.parse(result.stdout);
}

describe('dlq on a RabbitMQ dead-letter queue', () => {
  it('lists and shows dead letters; a dry run and a replay without a selection change nothing', async () => {
    const { queue, dlq, consumer } = await poisonedQueue('list');
    await broker.publish(queue, [
      { id: 'list-1', body: { amountCents: 100 } },
      { id: 'list-2', body: { amountCents: 200 } },
    ]);
    await waitFor('2 dead letters', async () => (await broker.count(dlq)) === 2, 30_000);

    const listed = json(await runCli(['dlq', 'list', '--queue', dlq, '--json'], env())).deadLetters;
    expect(listed).toHaveLength(2);
    // The consumer handles both at once: which one reached the dead-letter queue first varies.
    const order = listed.map((d: { messageId: string }) => d.messageId);
    expect([...order].sort()).toEqual(['list-1', 'list-2']);
    const first = listed.find((d: { messageId: string }) => d.messageId === 'list-1');
    expect(first).toMatchObject({
      position: `#${order.indexOf('list-1') + 1}`,
      messageId: 'list-1',
      consumer,
      reason: 'non_retryable',
      errorName: 'NonRetryableError',
      errorMessage: 'bug: cannot charge list-1',
      attempts: 1,
      replays: 0,
      key: 'dead_lettered',
      destination: { kind: 'rabbitmq', exchange: '', routingKey: queue },
    });
    expect(first.ageMs).toBeGreaterThanOrEqual(0);
    const table = await runCli(['dlq', 'list', '--queue', dlq], env());
    expect(table.stdout).toContain('list-2');
    expect(table.stdout).toContain('non_retryable');

    const shown = json(await runCli(['dlq', 'show', 'list-2', '--queue', dlq, '--json'], env())).deadLetters;
    expect(shown).toHaveLength(1);
    expect(Buffer.from(shown[0].payload, 'base64').toString()).toBe('{"amountCents":200}');
    expect(shown[0].headers['x-inboxkit-error-stack']).toContain('NonRetryableError');
    const missing = await runCli(['dlq', 'show', 'list-none', '--queue', dlq], env());
    expect(missing.code).toBe(1);
    expect(oneLine(missing)).toBe('inboxkit: No dead letter with message id "list-none".');

    const dry = json(await runCli(['dlq', 'replay', '--queue', dlq, '--all', '--dry-run', '--json'], env()));
    expect(dry).toMatchObject({ dryRun: true, wouldReplay: 2, replayed: 0 });
    const unselected = await runCli(['dlq', 'replay', '--queue', dlq], env());
    expect(unselected.code).toBe(2);
    expect(oneLine(unselected)).toContain('--all');
    // Listing, showing and the dry run left every message in place, in order, and the keys dead-lettered.
    await waitFor('the dead letters requeued', async () => (await broker.count(dlq)) === 2, 10_000);
    expect(
      json(await runCli(['dlq', 'list', '--queue', dlq, '--json'], env())).deadLetters.map(
        (d: { messageId: string }) => d.messageId,
      ),
    ).toEqual(order);
    expect(await charges('list-')).toEqual([]);
  });

  it('after the fix, a replay applies each selected message exactly once and leaves the others', async () => {
    const { queue, dlq, state } = await poisonedQueue('fix');
    await broker.publish(queue, [
      { id: 'fix-1', body: { amountCents: 100 } },
      { id: 'fix-2', body: { amountCents: 200 } },
      { id: 'fix-3', body: { amountCents: 300 } },
    ]);
    await waitFor('3 dead letters', async () => (await broker.count(dlq)) === 3, 30_000);
    state.fixed = true;

    const some = json(await runCli(['dlq', 'replay', '--queue', dlq, '--id', 'fix-1', 'fix-3', '--json'], env()));
    expect(some).toMatchObject({ replayed: 2, notSelected: 1 });
    await waitFor('fix-1 and fix-3 applied', async () => (await charges('fix-')).length === 2, 30_000);
    expect(await charges('fix-')).toEqual([
      { id: 'fix-1', n: 1 },
      { id: 'fix-3', n: 1 },
    ]);
    await waitFor('fix-2 left', async () => (await broker.count(dlq)) === 1, 10_000);

    // At a terminal: a progress bar, then the summary.
    const rest = await runInTerminal(['dlq', 'replay', '--queue', dlq, '--reason', 'non_retryable'], env());
    expect(rest.code, rest.stdout).toBe(0);
    expect(rest.stdout).toContain('replay [');
    expect(rest.stdout).toContain('1/1');
    expect(rest.stdout).toContain('Replayed 1; refused 0; not selected 0 (left in place).');
    await waitFor('fix-2 applied', async () => (await charges('fix-')).length === 3, 30_000);
    expect(await charges('fix-')).toEqual([
      { id: 'fix-1', n: 1 },
      { id: 'fix-2', n: 1 },
      { id: 'fix-3', n: 1 },
    ]);
    expect(await broker.count(dlq)).toBe(0);
    expect(json(await runCli(['dlq', 'list', '--queue', dlq, '--json'], env())).deadLetters).toEqual([]);
  });

  it('a replay killed midway loses nothing: run again, every message applies once, the queue ends empty', async () => {
    const { queue, dlq, consumer, state } = await poisonedQueue('kill');
    const ids = Array.from({ length: 6 }, (_, i) => `kill-${i + 1}`);
    await broker.publish(
      queue,
      ids.map((id) => ({ id, body: { amountCents: 100 } })),
    );
    await waitFor('6 dead letters', async () => (await broker.count(dlq)) === 6, 30_000);
    state.fixed = true;

    // Hold the key of the fourth dead letter in queue order: the replay replays the first
    // three, then waits on that key.
    const order: string[] = json(await runCli(['dlq', 'list', '--queue', dlq, '--json'], env())).deadLetters.map(
      (d: { messageId: string }) => d.messageId,
    );
    await waitFor('the dead letters requeued', async () => (await broker.count(dlq)) === 6, 10_000);
    const holder = new pg.Client({ connectionString: t.url });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM processed_messages WHERE consumer = $1 AND message_id = $2 FOR UPDATE', [
        consumer,
        order[3],
      ]);
      const replay = startCli(['dlq', 'replay', '--queue', dlq, '--all'], env());
      await waitFor('the first three applied', async () => (await charges('kill-')).length === 3, 30_000);
      await waitFor('the replay to wait on the fourth key', async () => {
        const { rows } = await holder.query<{ n: string }>(
          `SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`,
        );
        return Number(rows[0]?.n) === 1;
      });
      expect(await charges('kill-')).toHaveLength(3);
      replay.child.kill('SIGKILL');
      const killed = await replay.done;
      expect(killed.signal).toBe('SIGKILL');
    } finally {
      await holder.query('ROLLBACK');
      await holder.end();
    }
    // The broker took the killed process's unacked messages back.
    await waitFor('the last three back in the queue', async () => (await broker.count(dlq)) === 3, 30_000);

    const again = json(await runCli(['dlq', 'replay', '--queue', dlq, '--all', '--json'], env()));
    expect(again).toMatchObject({ replayed: 3 });
    await waitFor('all applied', async () => (await charges('kill-')).length === 6, 30_000);
    expect(await charges('kill-')).toEqual(ids.map((id) => ({ id, n: 1 })));
    expect(await broker.count(dlq)).toBe(0);
  });

  it('refuses loops (--max-replays) and messages older than the retention window unless --force', async () => {
    const { queue, dlq, state } = await poisonedQueue('loop');
    state.fixed = true;
    await broker.publish(queue, [{ id: 'forever-1', body: { amountCents: 100 } }]);
    await waitFor('a dead letter', async () => (await broker.count(dlq)) === 1, 30_000);

    const old = refusedJson(
      await runCli(['dlq', 'replay', '--queue', dlq, '--all', '--retention', '1ms', '--json'], env()),
      1,
    );
    expect(old).toMatchObject({ replayed: 0, refused: 1 });
    expect(old.deadLetters[0].why).toContain('retention');
    const dry = await runCli(['dlq', 'replay', '--queue', dlq, '--all', '--retention', '1ms', '--dry-run'], env());
    expect(dry.code).toBe(1);
    expect(oneLine(dry)).toBe(
      'inboxkit: 1 selected dead letter(s) refused (dry run); they stay in the dead-letter destination (see "why").',
    );
    expect(dry.stdout).toContain('Dry run: 0 would be replayed, 1 refused');
    expect(await broker.count(dlq)).toBe(1);

    const first = json(
      await runCli(
        ['dlq', 'replay', '--queue', dlq, '--all', '--retention', '1ms', '--force', '--max-replays', '1', '--json'],
        env(),
      ),
    );
    expect(first).toMatchObject({ replayed: 1 });
    // Still poison: dead-lettered again, carrying its replay count.
    await waitFor('dead-lettered again', async () => (await broker.count(dlq)) === 1, 30_000);
    const listed = json(await runCli(['dlq', 'list', '--queue', dlq, '--json'], env())).deadLetters;
    expect(listed[0]).toMatchObject({ messageId: 'forever-1', replays: 1 });
    const second = refusedJson(
      await runCli(['dlq', 'replay', '--queue', dlq, '--all', '--max-replays', '1', '--json'], env()),
      1,
    );
    expect(second).toMatchObject({ replayed: 0, refused: 1 });
    expect(second.deadLetters[0].why).toContain('--max-replays 1');
    expect(await broker.count(dlq)).toBe(1);
  });

  it("replays a broker dead letter (deadLetter: 'nack', no x-inboxkit headers) only with --consumer", async () => {
    const queue = uniqueName('nack');
    const dlq = `${queue}.dlq`;
    const deadLetterArgs = { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': dlq };
    await broker.declareQueue(dlq);
    await broker.declareQueue(queue, deadLetterArgs);
    const consumer = uniqueName('nack');
    const state = { fixed: false };
    subscriptions.add(
      subscribe<TestDB, { amountCents: number }, void>({
        inbox: createInbox({ db: t.db, consumer }),
        url: amqpUrl(),
        queue,
        decode: 'json',
        deadLetter: 'nack',
        assertTopology: { queueArguments: deadLetterArgs },
        handler: async (trx, message) => {
          if (!state.fixed) throw new NonRetryableError('bug');
          await trx.insertInto('charges').values({ id: message.id, user_id: 'u-1', amount_cents: 1 }).execute();
        },
      }),
    );
    await broker.publish(queue, [{ id: 'nack-1', body: { amountCents: 1 } }]);
    await waitFor('a dead letter', async () => (await broker.count(dlq)) === 1, 30_000);
    const [listed] = json(await runCli(['dlq', 'list', '--queue', dlq, '--json'], env())).deadLetters;
    expect(listed).toMatchObject({
      messageId: 'nack-1',
      consumer: null,
      destination: { exchange: '', routingKey: queue },
    });
    state.fixed = true;

    // Without the consumer its dead-lettered key cannot be cleared: a replay would be acked as a duplicate.
    const refused = refusedJson(await runCli(['dlq', 'replay', '--queue', dlq, '--all', '--json'], env()), 1);
    expect(refused).toMatchObject({ replayed: 0, refused: 1 });
    expect(refused.deadLetters[0].why).toContain('--consumer');
    await waitFor('left in place', async () => (await broker.count(dlq)) === 1, 10_000);

    const replayed = json(
      await runCli(['dlq', 'replay', '--queue', dlq, '--all', '--consumer', consumer, '--json'], env()),
    );
    expect(replayed).toMatchObject({ replayed: 1 });
    await waitFor('applied', async () => (await charges('nack-')).length === 1, 30_000);
    expect(await charges('nack-')).toEqual([{ id: 'nack-1', n: 1 }]);
    expect(await broker.count(dlq)).toBe(0);
  });

  it('an unknown queue or an unreachable broker is exit 1 with one line', async () => {
    const missing = await runCli(['dlq', 'list', '--queue', uniqueName('none')], env());
    expect(missing.code).toBe(1);
    expect(oneLine(missing)).toMatch(/^inboxkit: RabbitMQ queue ".*" does not exist\.$/);
    const down = await runCli(['dlq', 'list', '--queue', 'q'], { AMQP_URL: 'amqp://guest:guest@127.0.0.1:1' });
    expect(down.code).toBe(1);
    expect(oneLine(down)).toBe('inboxkit: Cannot reach RabbitMQ at 127.0.0.1:1: connect ECONNREFUSED 127.0.0.1:1');
    const both = await runCli(['dlq', 'list', '--queue', 'q', '--topic', 't'], env());
    expect(both.code).toBe(2);
  });
});
