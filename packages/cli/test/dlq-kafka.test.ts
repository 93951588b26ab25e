// `inboxkit dlq list | replay --topic` against a real Kafka dead-letter topic fed by a real
// inbox consumer: the fix replayed exactly once, a replay killed midway, what `list` shows
// after a partial replay, and the replay count carried through a second dead-lettering.
import { createInbox, NonRetryableError } from '@inboxkit/core';
import { type KafkaInboxControl, runInboxConsumer } from '@inboxkit/kafka';
import { sql } from 'kysely';
import pg from 'pg';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { setUpKafkaFile } from '../../../test/kafka/support/file-setup.ts';
import {
  consumerSettings,
  createFreshTopic,
  produce,
  topicSize,
  uniqueName,
  waitFor,
} from '../../../test/kafka/support/kafka-testkit.ts';
import type { TestDB } from '../../../test/support/postgres.ts';
import { type CliResult, oneLine, runCli, startCli } from './support/run-cli.ts';

const setup = setUpKafkaFile('cli_dlq_kafka');
const running: KafkaInboxControl[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.close()));
});

const env = () => ({ DATABASE_URL: setup.t.url, KAFKA_BROKERS: inject('kafkaBrokers').join(',') });

/** A topic whose consumer charges `amountCents`, and dead-letters while the bug is not fixed (ids `forever*` always). */
async function poisonedTopic(label: string) {
  const { t, kit } = setup;
  const { topic, dlq, groupId } = await createFreshTopic(kit.admin, { topic: label, group: label, partitions: 1 });
  const consumer = uniqueName(label);
  const state = { fixed: false };
  running.push(
    await runInboxConsumer<TestDB, { amountCents: number }>(kit.kafka.consumer({ groupId, ...consumerSettings }), {
      mode: 'eachMessage',
      inbox: createInbox({ db: t.db, consumer }),
      kafka: kit.kafka,
      groupId,
      decode: 'json',
      subscribe: { topics: [topic], fromBeginning: true },
      handler: async (trx, message) => {
        if (!state.fixed || message.id.startsWith('forever'))
          throw new NonRetryableError(`bug: cannot charge ${message.id}`);
        await trx
          .insertInto('charges')
          .values({ id: message.id, user_id: 'u-1', amount_cents: message.value.amountCents })
          .execute();
      },
    }),
  );
  return { topic, dlq, consumer, state };
}

async function charges(prefix: string): Promise<Array<{ id: string; n: number }>> {
  const { rows } = await sql<{ id: string; n: string }>`
    SELECT id, count(*) AS n FROM charges WHERE id LIKE ${`${prefix}%`} GROUP BY id ORDER BY id`.execute(setup.t.db);
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

describe('dlq on a Kafka dead-letter topic', () => {
  it('replays the fixed poison exactly once, survives a kill midway, and list shows what a partial replay left', async () => {
    const { topic, dlq, consumer, state } = await poisonedTopic('cli-kafka');
    const ids = Array.from({ length: 6 }, (_, i) => `k-${i + 1}`);
    await produce(
      setup.kit.producer,
      topic,
      ids.map((id) => ({ id, value: JSON.stringify({ amountCents: 100 }) })),
    );
    await waitFor(async () => (await topicSize(setup.kit.admin, dlq)) === 6, { what: '6 dead letters' });

    const listed = json(await runCli(['dlq', 'list', '--topic', dlq, '--json'], env())).deadLetters;
    expect(listed.map((d: { messageId: string }) => d.messageId)).toEqual(ids);
    expect(listed[0]).toMatchObject({
      position: '0/0',
      consumer,
      reason: 'non_retryable',
      errorMessage: 'bug: cannot charge k-1',
      attempts: 1,
      replays: 0,
      key: 'dead_lettered',
      destination: { kind: 'kafka', topic, partition: 0 },
    });
    state.fixed = true;

    // k-2 alone: k-1, not selected, holds the group's position, so all six stay listed, k-2 with its key processed.
    const one = json(await runCli(['dlq', 'replay', '--topic', dlq, '--id', 'k-2', '--json'], env()));
    expect(one).toMatchObject({ replayed: 1, notSelected: 5 });
    await waitFor(async () => (await charges('k-')).length === 1, { what: 'k-2 applied' });
    const after = json(await runCli(['dlq', 'list', '--topic', dlq, '--json'], env())).deadLetters;
    expect(after.map((d: { messageId: string; key: string }) => [d.messageId, d.key])).toEqual([
      ['k-1', 'dead_lettered'],
      ['k-2', 'processed'],
      ['k-3', 'dead_lettered'],
      ['k-4', 'dead_lettered'],
      ['k-5', 'dead_lettered'],
      ['k-6', 'dead_lettered'],
    ]);

    // Hold k-4's key: the replay does k-1, k-2 (a duplicate now), k-3, then waits; kill it there.
    const holder = new pg.Client({ connectionString: setup.t.url });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM processed_messages WHERE consumer = $1 AND message_id = $2 FOR UPDATE', [
        consumer,
        'k-4',
      ]);
      const replay = startCli(['dlq', 'replay', '--topic', dlq, '--all'], env());
      await waitFor(async () => (await charges('k-')).length === 3, { what: 'k-1..3 applied' });
      await waitFor(
        async () => {
          const { rows } = await holder.query<{ n: string }>(
            `SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`,
          );
          return Number(rows[0]?.n) === 1;
        },
        { what: "the replay to wait on k-4's key" },
      );
      replay.child.kill('SIGKILL');
      expect((await replay.done).signal).toBe('SIGKILL');
    } finally {
      await holder.query('ROLLBACK');
      await holder.end();
    }
    const rest = json(await runCli(['dlq', 'list', '--topic', dlq, '--json'], env())).deadLetters;
    expect(rest.map((d: { messageId: string }) => d.messageId)).toEqual(['k-4', 'k-5', 'k-6']);

    const again = json(await runCli(['dlq', 'replay', '--topic', dlq, '--all', '--json'], env()));
    expect(again).toMatchObject({ replayed: 3 });
    await waitFor(async () => (await charges('k-')).length === 6, { what: 'all applied' });
    expect(await charges('k-')).toEqual(ids.map((id) => ({ id, n: 1 })));
    expect(json(await runCli(['dlq', 'list', '--topic', dlq, '--json'], env())).deadLetters).toEqual([]);
    expect(await topicSize(setup.kit.admin, dlq)).toBe(6);
  });

  it('a replayed record dead-lettered again keeps its replay count, and --max-replays refuses it', async () => {
    const { topic, dlq, state } = await poisonedTopic('cli-kafka-loop');
    state.fixed = true;
    await produce(setup.kit.producer, topic, [{ id: 'forever-1', value: JSON.stringify({ amountCents: 100 }) }]);
    await waitFor(async () => (await topicSize(setup.kit.admin, dlq)) === 1, { what: 'a dead letter' });
    const first = json(await runCli(['dlq', 'replay', '--topic', dlq, '--all', '--max-replays', '1', '--json'], env()));
    expect(first).toMatchObject({ replayed: 1 });
    await waitFor(async () => (await topicSize(setup.kit.admin, dlq)) === 2, { what: 'dead-lettered again' });
    const listed = json(await runCli(['dlq', 'list', '--topic', dlq, '--json'], env())).deadLetters;
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ messageId: 'forever-1', replays: 1 });
    const second = refusedJson(
      await runCli(['dlq', 'replay', '--topic', dlq, '--all', '--max-replays', '1', '--json'], env()),
      1,
    );
    expect(second).toMatchObject({ replayed: 0, refused: 1 });
    expect(await topicSize(setup.kit.admin, dlq)).toBe(2);
  });

  it("refuses a replay while the CLI's group has another member (a second replay), replaying nothing", async () => {
    const { topic, dlq, state } = await poisonedTopic('cli-kafka-busy');
    await produce(setup.kit.producer, topic, [{ id: 'busy-1', value: JSON.stringify({ amountCents: 100 }) }]);
    await waitFor(async () => (await topicSize(setup.kit.admin, dlq)) === 1, { what: 'a dead letter' });
    state.fixed = true;
    // Another replay, as Kafka sees it: a live member of the CLI's group (it commits nothing).
    const other = setup.kit.kafka.consumer({ groupId: `inboxkit-cli.${dlq}`, ...consumerSettings });
    let joined = false;
    other.on(other.events.GROUP_JOIN, () => {
      joined = true;
    });
    try {
      await other.connect();
      await other.subscribe({ topic: dlq, fromBeginning: true });
      await other.run({ autoCommit: false, eachMessage: async () => {} });
      await waitFor(async () => joined, { what: 'the other member joined' });
      const refused = await runCli(['dlq', 'replay', '--topic', dlq, '--all'], env());
      expect(refused.code).toBe(1);
      expect(oneLine(refused)).toMatch(
        /^inboxkit: Not replaying topic ".*" as consumer group "inboxkit-cli\..*": it has 1 other member\(s\): another replay of the topic is running/,
      );
      expect(await charges('busy-')).toEqual([]);
    } finally {
      await other.disconnect();
    }
    const replayed = json(await runCli(['dlq', 'replay', '--topic', dlq, '--all', '--json'], env()));
    expect(replayed).toMatchObject({ replayed: 1, refused: 0 });
    await waitFor(async () => (await charges('busy-')).length === 1, { what: 'busy-1 applied' });
    expect(await charges('busy-')).toEqual([{ id: 'busy-1', n: 1 }]);
  });

  it('a replay stops when another member joins its group midway, and the next run finishes the job', async () => {
    const { topic, dlq, consumer, state } = await poisonedTopic('cli-kafka-join');
    const ids = ['mid-1', 'mid-2', 'mid-3'];
    await produce(
      setup.kit.producer,
      topic,
      ids.map((id) => ({ id, value: JSON.stringify({ amountCents: 100 }) })),
    );
    await waitFor(async () => (await topicSize(setup.kit.admin, dlq)) === 3, { what: '3 dead letters' });
    state.fixed = true;
    const holder = new pg.Client({ connectionString: setup.t.url });
    await holder.connect();
    const other = setup.kit.kafka.consumer({ groupId: `inboxkit-cli.${dlq}`, ...consumerSettings });
    try {
      // Hold mid-2's key: the replay does mid-1, then waits there while another member joins.
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM processed_messages WHERE consumer = $1 AND message_id = $2 FOR UPDATE', [
        consumer,
        'mid-2',
      ]);
      const replay = startCli(['dlq', 'replay', '--topic', dlq, '--all'], env());
      await waitFor(async () => (await charges('mid-')).length === 1, { what: 'mid-1 applied' });
      await other.connect();
      await other.subscribe({ topic: dlq, fromBeginning: true });
      // run() resolves once the newcomer joined, which waits for the replay to rejoin: not awaited yet.
      const joining = other.run({ autoCommit: false, eachMessage: async () => {} });
      // Let the replay go on once the group is rebalancing for the newcomer, past the replay's
      // heartbeat interval (1 s: its next heartbeat is then due, and answered "rebalancing")
      // and before its wait for the key times out (10 s). Released earlier, the replay may
      // finish within its generation, which is safe too, but not what this test is about.
      await waitFor(
        async () =>
          (await setup.kit.admin.describeGroups([`inboxkit-cli.${dlq}`])).groups[0]?.state === 'PreparingRebalance',
        { what: 'the group rebalancing' },
      );
      await new Promise((resolve) => setTimeout(resolve, 1500));
      await holder.query('ROLLBACK');
      const stopped = await replay.done;
      await joining;
      expect(stopped.code).toBe(1);
      expect(stopped.stderr).toContain('another member joined it during the replay; stopped');
    } finally {
      await holder.end();
      await other.disconnect();
    }
    const again = await runCli(['dlq', 'replay', '--topic', dlq, '--all', '--json'], env());
    expect(again.code, again.stderr).toBe(0);
    await waitFor(async () => (await charges('mid-')).length === 3, { what: 'all applied' });
    expect(await charges('mid-')).toEqual(ids.map((id) => ({ id, n: 1 })));
  });

  it('an unknown topic or unreachable brokers is exit 1 with one line; no brokers is exit 2', async () => {
    const missing = await runCli(['dlq', 'list', '--topic', uniqueName('none')], env());
    expect(missing.code).toBe(1);
    expect(oneLine(missing)).toMatch(/^inboxkit: Kafka topic ".*" does not exist\.$/);
    const down = await runCli(['dlq', 'list', '--topic', 't'], { KAFKA_BROKERS: '127.0.0.1:1' });
    expect(down.code).toBe(1);
    expect(oneLine(down)).toMatch(/^inboxkit: Cannot reach Kafka at 127\.0\.0\.1:1: /);
    const none = await runCli(['dlq', 'list', '--topic', 't']);
    expect(none.code).toBe(2);
    expect(oneLine(none)).toBe('inboxkit: No Kafka brokers: set KAFKA_BROKERS or pass --brokers.');
  });
});
