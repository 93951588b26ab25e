// The Kafka quick starts of the root README and of packages/kafka/README.md, run as written
// (only the topic and group names made unique), each as its own process: after a record went
// through, SIGTERM must end the process promptly. A handler that leaves a client or a pool
// open keeps Node alive, and an orchestrator then SIGKILLs the consumer after its grace period.
import { afterEach, describe, expect, inject, it } from 'vitest';
import { exitsWithin, readmeBlock, replaceOnce, runSnippet, type SnippetProcess } from '../support/readme-snippet.ts';
import { setUpKafkaFile } from './support/file-setup.ts';
import { createFreshTopic, produce, waitFor } from './support/kafka-testkit.ts';

const setup = setUpKafkaFile('kafka_quick_start');

/** What the root README's fragment takes from the page around it: the tables' types, `db` and `kafka`. */
const ROOT_PREAMBLE = `
import { createPgKysely as quickStartPgKysely } from '@inboxkit/core/pg';
import { Kafka as QuickStartKafka } from 'kafkajs';
interface DB { charges: { id: string; user_id: string; amount_cents: number } }
interface Charge { userId: string; amountCents: number }
const db = quickStartPgKysely<DB>({ connectionString: process.env.DATABASE_URL });
const kafka = new QuickStartKafka({ clientId: 'quick-start', brokers: (process.env.KAFKA_BROKERS ?? '').split(',') });
`;

const QUICK_STARTS = [
  { readme: 'README.md', heading: '## Quick start: Kafka', preamble: ROOT_PREAMBLE },
  { readme: 'packages/kafka/README.md', heading: '## Quick start', preamble: '' },
] as const;

let running: SnippetProcess | undefined;
afterEach(() => {
  running?.dispose();
  running = undefined;
});

describe.each(QUICK_STARTS)('$readme, $heading', ({ readme, heading, preamble }) => {
  it('runs as written, processes a record, and exits promptly on SIGTERM', async () => {
    const { t, kit } = setup;
    const { topic, groupId } = await createFreshTopic(kit.admin, {
      topic: 'quick-start',
      group: 'quick-start',
      partitions: 1,
    });
    const code = replaceOnce(preamble + readmeBlock(readme, heading), [
      ["topics: ['charges']", `topics: ['${topic}']`],
      ["groupId: 'payments'", `groupId: '${groupId}'`],
    ]);
    running = runSnippet(code, { DATABASE_URL: t.url, KAFKA_BROKERS: inject('kafkaBrokers').join(',') });
    const child = running;
    // The quick start reads from the latest offset: produce once its group is stable.
    await waitFor(
      async () => {
        if (child.process.exitCode !== null) throw new Error(`the quick start exited early:\n${child.output()}`);
        const { groups } = await kit.admin.describeGroups([groupId]);
        return groups[0]?.state === 'Stable' && groups[0].members.length > 0;
      },
      { what: `the quick start's consumer to join ${groupId}` },
    );
    const id = `quick-${topic}`;
    await produce(kit.producer, topic, [{ id, value: JSON.stringify({ userId: 'u-1', amountCents: 1200 }) }]);
    await waitFor(
      async () => (await t.db.selectFrom('charges').where('id', '=', id).selectAll().execute()).length > 0,
      {
        what: 'the record to be processed',
      },
    );

    child.process.kill('SIGTERM');
    // A liveness bound, generous for a loaded machine: the consumer's disconnect alone may
    // wait for a fetch in flight (maxWaitTimeInMs, 5 s by default).
    const exit = await exitsWithin(child.exited, 15_000);
    expect(exit, child.output()).toEqual({ code: 0, signal: null });
  });
});
