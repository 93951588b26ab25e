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
    // A group can be Stable before its member resolved the latest offset: a record produced
    // in between lies before that offset and is never read. So a record goes out every few
    // seconds, each with its own id, until one of them has been processed.
    const prefix = `quick-${topic}`;
    let sent = 0;
    let lastSent = 0;
    await waitFor(
      async () => {
        if (child.process.exitCode !== null) throw new Error(`the quick start exited early:\n${child.output()}`);
        const processed = await t.db.selectFrom('charges').where('id', 'like', `${prefix}-%`).selectAll().execute();
        if (processed.length > 0) return true;
        if (Date.now() - lastSent > 3000) {
          lastSent = Date.now();
          const id = `${prefix}-${sent++}`;
          await produce(kit.producer, topic, [{ id, value: JSON.stringify({ userId: 'u-1', amountCents: 1200 }) }]);
        }
        return false;
      },
      { what: 'a record to be processed' },
    );

    child.process.kill('SIGTERM');
    // A liveness bound, generous for a loaded machine: the consumer's disconnect alone may
    // wait for a fetch in flight (maxWaitTimeInMs, 5 s by default).
    const exit = await exitsWithin(child.exited, 15_000);
    expect(exit, child.output()).toEqual({ code: 0, signal: null });
  });
});
