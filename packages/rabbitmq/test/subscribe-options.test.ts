import { ConfigurationError, createInbox } from '@inboxkit/core';
import {
  type AmqpChannel,
  type AmqpConfirmChannel,
  type AmqpConnection,
  type AmqpDelivery,
  subscribe,
} from '@inboxkit/rabbitmq';
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage } from 'amqplib';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { describe, expect, expectTypeOf, it } from 'vitest';

// A Kysely that never connects: options are checked before anything is opened.
const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new pg.Pool({ max: 1 }) }) });
const inbox = createInbox({ db, consumer: 'options' });
const base = { inbox, url: 'amqp://localhost', queue: 'charges', handler: async () => {} };

function rejects(options: Record<string, unknown>, message: RegExp): void {
  const call = () => subscribe({ ...base, ...options } as Parameters<typeof subscribe>[0]);
  expect(call).toThrow(ConfigurationError);
  expect(call).toThrow(message);
}

describe('subscribe() options', () => {
  it('names the option that is wrong', () => {
    rejects({ prefech: 10 }, /Unknown option `prefech`/);
    rejects({ inbox: {} }, /`inbox` to be an inbox made by createInbox/);
    rejects({ queue: '' }, /`queue` to be a non-empty string/);
    rejects({ queue: 'q'.repeat(256) }, /`queue` to be at most 255 bytes/);
    rejects({ handler: 'nope' }, /`handler` to be a function/);
    rejects({ bulkHandler: async () => {} }, /Give either `handler` \(called per message\) or `bulkHandler`.*not both/);
    rejects({ handler: undefined }, /needs a `handler` .*or a `bulkHandler`/);
    rejects({ handler: undefined, bulkHandler: 'nope' }, /`bulkHandler` to be a function/);
    rejects({ messageId: { fallback: 'offset' } }, /`messageId.fallback` to be 'payload-hash'/);
    rejects({ url: 'http://localhost' }, /`url` to be an AMQP URL/);
    rejects({ url: undefined }, /`url` to be an AMQP URL .*or give `connect`/);
    rejects({ connect: async () => ({}) }, /either `url` or `connect`, not both/);
    rejects(
      { url: undefined, connect: async () => ({}), connectionName: 'x' },
      /`connectionName` applies to `url` only/,
    );
    rejects({ prefetch: 0 }, /`prefetch` to be a whole number from 1 to 65535, got 0/);
    rejects({ prefetch: 1.5 }, /`prefetch`/);
    rejects({ maxBatchSize: 20 }, /`maxBatchSize` \(20\) must not exceed `prefetch` \(10\)/);
    rejects({ publishTimeoutMs: -1 }, /`publishTimeoutMs`/);
    rejects({ drainTimeoutMs: 'soon' }, /`drainTimeoutMs`/);
    rejects({ decode: 'yaml' }, /`decode` to be 'buffer', 'text', 'json' or a function/);
    rejects({ messageId: { heder: 'x' } }, /Unknown option `messageId.heder`/);
    rejects({ messageId: { from: 'body.id' } }, /`messageId.from` to be a function/);
    rejects({ deadLetter: 'drop' }, /`deadLetter` to be/);
    rejects({ deadLetter: {} }, /`deadLetter` needs a `queue` or an `exchange`/);
    rejects({ deadLetter: { queue: 'dlq', routingKey: 'x' } }, /`deadLetter.routingKey` needs `deadLetter.exchange`/);
    rejects({ deadLetter: { queue: 'charges' } }, /`deadLetter.queue` must not be the consumed queue/);
    rejects({ deadLetter: { exchange: 'dlx', ttl: 1 } }, /Unknown option `deadLetter.ttl`/);
    rejects({ deadLetter: 'nack', assertTopology: true }, /give the queue its dead-letter exchange/);
    rejects({ assertTopology: 'yes' }, /`assertTopology` to be a boolean or \{ queueArguments \}/);
    rejects({ assertTopology: { queueArguments: [] } }, /`assertTopology.queueArguments`/);
    rejects({ delayedRetry: { delaysMs: [] } }, /`delayedRetry.delaysMs` to be a non-empty array/);
    rejects({ delayedRetry: { delaysMs: [1000, -5] } }, /`delayedRetry.delaysMs\[1\]` to be a whole number/);
    rejects(
      { delayedRetry: { delaysMs: [1000], queue: 'charges' } },
      /`delayedRetry.queue` must not be the consumed queue/,
    );
    rejects({ reconnect: { minDelayMs: 1000, maxDelayMs: 10 } }, /`reconnect.maxDelayMs` \(10\) must not be smaller/);
    rejects({ reconnect: { factor: 0.5 } }, /`reconnect.factor` to be a number of at least 1/);
    rejects({ requeueBackoff: { delay: 5 } }, /Unknown option `requeueBackoff.delay`/);
    rejects({ logger: { info() {} } }, /`logger` to have a debug\(\) method/);
  });

  it('throws at once, before any connection is attempted', () => {
    let connects = 0;
    expect(() =>
      subscribe({
        ...base,
        url: undefined,
        prefetch: -1,
        connect: async () => {
          connects++;
          throw new Error('never');
        },
      }),
    ).toThrow(/`prefetch`/);
    expect(connects).toBe(0);
  });
});

describe('amqplib fits the structural types', () => {
  it('ChannelModel, Channel, ConfirmChannel and ConsumeMessage are assignable (checked by tsc)', () => {
    expectTypeOf<ChannelModel>().toExtend<AmqpConnection>();
    expectTypeOf<Channel>().toExtend<AmqpChannel>();
    expectTypeOf<ConfirmChannel>().toExtend<AmqpConfirmChannel>();
    expectTypeOf<ConsumeMessage>().toExtend<AmqpDelivery>();
  });
});
