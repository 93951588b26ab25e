// The confirm publisher on a real broker: a mandatory publish that no queue takes fails as
// `unroutable`, and only that one, even when a routable publish with the same exchange and
// routing key is awaiting its confirm at the same time. A dead letter taken as confirmed when
// it was returned would let its source be acked and lost.
import { randomBytes } from 'node:crypto';
import type { InboxLogger } from '@inboxkit/core';
import amqplib from 'amqplib';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { amqpUrl } from '../../../test/rabbitmq/support/broker.ts';
import { ConfirmPublisher } from '../src/confirm-publisher.ts';
import { PublishError } from '../src/publish-error.ts';

const suffix = randomBytes(4).toString('hex');
const exchange = `ik.returns.${suffix}`;
const queue = `ik.returns.${suffix}`;
let connection: amqplib.ChannelModel;
let channel: amqplib.Channel;

beforeAll(async () => {
  connection = await amqplib.connect(amqpUrl(), { clientProperties: { connection_name: `test-returns-${suffix}` } });
  channel = await connection.createChannel();
  // A headers exchange: whether a message routes depends on its headers, not on its
  // routing key, so two publishes with the same routing key can differ in routability.
  await channel.assertExchange(exchange, 'headers', { durable: false, autoDelete: false });
  await channel.assertQueue(queue, { durable: true });
  await channel.bindQueue(queue, exchange, '', { 'x-match': 'all', route: 'yes' });
});

afterAll(async () => {
  await channel?.deleteQueue(queue).catch(() => {});
  await channel?.deleteExchange(exchange).catch(() => {});
  await connection?.close().catch(() => {});
});

it('concurrent mandatory publishes to one routing key: exactly the unroutable one fails, the routable one is confirmed', async () => {
  const warnings: string[] = [];
  const logger: InboxLogger = {
    debug: () => {},
    info: () => {},
    warn: (_fields, message) => warnings.push(message ?? ''),
    error: (_fields, message) => warnings.push(message ?? ''),
  };
  const publisher = new ConfirmPublisher(20_000, logger);
  publisher.useConnection(connection);
  // The routable one is large (1 MB): the queue takes longer to store it than the exchange
  // takes to return the other, so the return arrives while both await their confirms.
  const publish = (name: string, route: 'yes' | 'no') =>
    publisher.publish({
      exchange,
      routingKey: 'dead-letters',
      content: Buffer.concat([Buffer.from(`${name}\n`), Buffer.alloc(route === 'yes' ? 1_000_000 : 0)]),
      options: { mandatory: true, persistent: true, messageId: name, headers: { route } },
    });
  const outcomes: string[] = [];
  const expected: string[] = [];
  try {
    for (let round = 0; round < 20; round++) {
      // Both orders: the routable one sent first (its confirm waits for the queue) and second.
      const routableFirst = round % 2 === 0;
      const sends = routableFirst
        ? [publish(`routable-${round}`, 'yes'), publish(`unroutable-${round}`, 'no')]
        : [publish(`unroutable-${round}`, 'no'), publish(`routable-${round}`, 'yes')];
      const settled = await Promise.allSettled(sends);
      const [r, u] = routableFirst ? settled : [settled[1], settled[0]];
      const describe = (result: PromiseSettledResult<void> | undefined) =>
        result?.status === 'fulfilled'
          ? 'confirmed'
          : result?.reason instanceof PublishError
            ? result.reason.failure
            : String(result?.reason);
      outcomes.push(`${round}: routable ${describe(r)}, unroutable ${describe(u)}`);
      expected.push(`${round}: routable confirmed, unroutable unroutable`);
    }
  } finally {
    await publisher.close();
  }
  expect(outcomes).toEqual(expected);
  expect(warnings).toEqual([]);
  // Exactly the routable ones reached the queue.
  const names: string[] = [];
  for (;;) {
    const message = await channel.get(queue, { noAck: true });
    if (message === false) break;
    names.push(message.content.toString().split('\n')[0] ?? '');
  }
  expect(names.sort()).toEqual(Array.from({ length: 20 }, (_, round) => `routable-${round}`).sort());
});
