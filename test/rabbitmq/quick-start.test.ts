// The RabbitMQ quick starts of the root README and of packages/rabbitmq/README.md (and the
// latter's bulk handler example under Batches), run as
// written (only the queue name made unique, and the broker's URL), each as its own process:
// after a message went through, SIGTERM must end the process promptly. A handler that leaves
// the pool open keeps Node alive, and an orchestrator then SIGKILLs the consumer after its
// grace period.
import { afterEach, describe, expect, it } from 'vitest';
import { exitsWithin, readmeBlock, replaceOnce, runSnippet, type SnippetProcess } from '../support/readme-snippet.ts';
import { amqpUrl, uniqueName, waitFor } from './support/broker.ts';
import { setUpRabbitFile } from './support/file-setup.ts';

const setup = setUpRabbitFile('quick_start');

/** What the root README's fragment takes from the page around it: the tables' types and `db`. */
const ROOT_PREAMBLE = `
import { createPgKysely as quickStartPgKysely } from '@inboxkit/core/pg';
interface DB { charges: { id: string; user_id: string; amount_cents: number } }
interface Charge { userId: string; amountCents: number }
const db = quickStartPgKysely<DB>({ connectionString: process.env.DATABASE_URL });
`;

const QUICK_STARTS = [
  {
    readme: 'README.md',
    heading: '## Quick start: RabbitMQ',
    preamble: ROOT_PREAMBLE,
    names: (queue: string): [string, string][] => [
      ["url: 'amqp://guest:guest@127.0.0.1:5672'", `url: ${JSON.stringify(amqpUrl())}`],
      ["queue: 'charges'", `queue: '${queue}'`],
    ],
    // The fragment publishes nothing: the test does.
    messageId: 'publish' as const,
  },
  {
    readme: 'packages/rabbitmq/README.md',
    heading: '## Quick start',
    preamble: '',
    names: (queue: string): [string, string][] => [
      ["queue: 'charges'", `queue: '${queue}'`],
      ["sendToQueue('charges'", `sendToQueue('${queue}'`],
    ],
    // It publishes charge-42 twice itself.
    messageId: 'charge-42' as const,
  },
  {
    readme: 'packages/rabbitmq/README.md',
    heading: '## Batches',
    preamble: '',
    names: (queue: string): [string, string][] => [
      ["queue: 'charges-bulk'", `queue: '${queue}'`],
      ["sendToQueue('charges-bulk'", `sendToQueue('${queue}'`],
    ],
    // The bulk handler's example publishes 100 charges twice each.
    messageId: 'bulk-charge-42' as const,
  },
] as const;

let running: SnippetProcess | undefined;
afterEach(() => {
  running?.dispose();
  running = undefined;
});

describe.each(QUICK_STARTS)('$readme, $heading', ({ readme, heading, preamble, names, messageId }) => {
  it('runs as written, processes a message, and exits promptly on SIGTERM', async () => {
    const { t, broker } = setup;
    const queue = uniqueName('quick-start');
    broker.track(queue, `${queue}.dlq`);
    const code = replaceOnce(preamble + readmeBlock(readme, heading), names(queue));
    running = runSnippet(code, { DATABASE_URL: t.url, AMQP_URL: amqpUrl() });
    const child = running;
    const exitedEarly = () => {
      if (child.process.exitCode !== null) throw new Error(`the quick start exited early:\n${child.output()}`);
    };
    let id: string = messageId;
    if (messageId === 'publish') {
      id = `quick-${queue}`;
      await waitFor('the quick start to consume', async () => {
        exitedEarly();
        return (await consumersOf(queue)) > 0;
      });
      await broker.publish(queue, [{ id, body: { userId: 'u-1', amountCents: 1200 } }]);
    }
    await waitFor('the message to be processed', async () => {
      exitedEarly();
      return (await t.db.selectFrom('charges').where('id', '=', id).selectAll().execute()).length > 0;
    });

    child.process.kill('SIGTERM');
    const exit = await exitsWithin(child.exited, 15_000); // a liveness bound, generous for a loaded machine
    expect(exit, child.output()).toEqual({ code: 0, signal: null });
  });
});

/** Consumers of a queue, 0 while it does not exist (a channel of its own: a 404 closes it). */
async function consumersOf(queue: string): Promise<number> {
  const channel = await setup.broker.connection.createChannel();
  channel.on('error', () => {});
  try {
    return (await channel.checkQueue(queue)).consumerCount;
  } catch {
    return 0;
  } finally {
    await channel.close().catch(() => {});
  }
}
