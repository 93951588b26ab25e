// Options are checked once, at construction, with errors naming the option; and kafkajs'
// own types fit the shapes the adapter is typed against (checked by the compiler: this file
// is part of `tsc -p tsconfig.test.json`).
import { readFileSync } from 'node:fs';
import { createInbox } from '@inboxkit/core';
import {
  type InboxEachBatchHandler,
  type InboxEachMessageHandler,
  inboxEachBatch,
  inboxEachMessage,
  type KafkaClient,
  type KafkaConsumer,
  type KafkaProducer,
  kafkaOffsetsSchemaSql,
  runInboxConsumer,
} from '@inboxkit/kafka';
import { Kafka, logLevel } from 'kafkajs';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';

const pool = new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:5432/postgres', max: 1 });
const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool }) });
afterAll(async () => {
  await db.destroy();
});
const inbox = createInbox({ db, consumer: 'options' });
const kafka = new Kafka({ brokers: ['127.0.0.1:1'], logLevel: logLevel.NOTHING });
// kafkajs' Kafka, Consumer and Producer fit the adapter's shapes as they are.
const client: KafkaClient = kafka;
const kafkaConsumer: KafkaConsumer = kafka.consumer({ groupId: 'options' });
const producer: KafkaProducer = kafka.producer();
const handler = async () => {};

describe('options', () => {
  it('builds handlers kafkajs accepts in kafkaConsumer.run()', () => {
    const realConsumer = kafka.consumer({ groupId: 'options-run' });
    const eachMessage: InboxEachMessageHandler = inboxEachMessage({
      kafkaConsumer: realConsumer,
      kafka: client,
      inbox,
      handler,
    });
    const eachBatch: InboxEachBatchHandler = inboxEachBatch({
      kafkaConsumer: realConsumer,
      kafka,
      inbox,
      producer,
      handler,
    });
    // Type-level: these calls compile against kafkajs' own ConsumerRunConfig (not run here).
    const run = () => {
      void realConsumer.run({ autoCommit: false, eachMessage });
      void realConsumer.run({ autoCommit: false, eachBatchAutoResolve: false, eachBatch });
    };
    expect(typeof run).toBe('function');
    expect(typeof eachMessage.close).toBe('function');
    expect(eachBatch.paused()).toEqual([]);
  });

  it('rejects unknown options, missing parts and contradictions, naming the option', () => {
    const base = { kafkaConsumer, kafka, inbox, handler };
    expect(() => inboxEachMessage({ ...base, retries: 3 } as never)).toThrow(
      /Unknown option `retries` of inboxEachMessage\(\)/,
    );
    // The options of earlier versions say what took their place.
    expect(() => inboxEachMessage({ ...base, consumer: kafkaConsumer } as never)).toThrow(
      /Unknown option `consumer` of inboxEachMessage\(\) \(the kafkajs consumer is `kafkaConsumer` now\)/,
    );
    expect(() => inboxEachMessage({ ...base, admin: kafka.admin() } as never)).toThrow(
      /Unknown option `admin`.*makes its own admin client/,
    );
    expect(() => inboxEachMessage({ ...base, kafka: undefined } as never)).toThrow(/Expected `kafka`/);
    expect(() => inboxEachMessage({ ...base, producer: {} } as never)).toThrow(/Expected `producer`/);
    expect(() => inboxEachMessage({ ...base, kafkaConsumer: {} } as never)).toThrow(/Expected `kafkaConsumer`/);
    expect(() => inboxEachMessage({ ...base, assertTopology: 'yes' } as never)).toThrow(/Expected `assertTopology`/);
    expect(() => inboxEachMessage({ ...base, assertTopology: { numPartitions: 0 } })).toThrow(
      /assertTopology\.numPartitions/,
    );
    expect(() => inboxEachMessage({ ...base, assertTopology: { partitions: 1 } as never })).toThrow(
      /Unknown option `assertTopology\.partitions`/,
    );
    expect(() => inboxEachMessage({ ...base, inbox: {} } as never)).toThrow(/Expected `inbox`/);
    expect(() => inboxEachMessage({ ...base, handler: undefined } as never)).toThrow(/Expected `handler`/);
    expect(() => inboxEachBatch({ kafkaConsumer, kafka, inbox })).toThrow(/exactly one of `handler`/);
    expect(() => inboxEachBatch({ ...base, bulkHandler: handler })).toThrow(/exactly one of `handler`/);
    expect(() => inboxEachBatch({ ...base, maxBatchSize: 0 })).toThrow(/Expected `maxBatchSize` to be a positive/);
    expect(() => inboxEachMessage({ ...base, messageId: { header: '' } })).toThrow(/messageId.header/);
    expect(() => inboxEachMessage({ ...base, messageId: 'key' as never })).toThrow(/Expected `messageId`/);
    expect(() => inboxEachMessage({ ...base, decode: 'avro' as never })).toThrow(/Expected `decode`/);
    expect(() => inboxEachMessage({ ...base, commitIntervalMs: -1 })).toThrow(/commitIntervalMs/);
    expect(() => inboxEachMessage({ ...base, pause: { minDelayMs: 5000, maxDelayMs: 10 } })).toThrow(
      /pause.maxDelayMs/,
    );
    expect(() => inboxEachMessage({ ...base, pause: { delay: 1 } as never })).toThrow(/Unknown option `pause.delay`/);
    expect(() => inboxEachMessage({ ...base, deadLetterTopic: '' })).toThrow(/deadLetterTopic/);
    expect(() => inboxEachMessage({ ...base, dedup: 'offset' as never })).toThrow(
      /Expected `dedup` to be 'ids', 'offsets' or 'offsets\+ids'/,
    );
    expect(() => inboxEachMessage({ ...base, offsetTable: 'positions' })).toThrow(/`offsetTable` is only used/);
    expect(() => inboxEachBatch({ ...base, dedup: 'offsets', offsetTable: 'x"; DROP TABLE ledger; --' })).toThrow(
      /`offsetTable` must be a plain identifier/,
    );
  });

  it('ships the offsets table as plain SQL, the same text kafkaOffsetsSchemaSql() makes', () => {
    const file = readFileSync(new URL('../sql/0001_kafka_offsets.sql', import.meta.url), 'utf8');
    expect(file).toBe(kafkaOffsetsSchemaSql());
    expect(kafkaOffsetsSchemaSql({ schema: 'billing', table: 'positions' })).toContain(
      'CREATE TABLE IF NOT EXISTS "billing"."positions"',
    );
  });

  it('runInboxConsumer rejects an unknown mode before touching the consumer', async () => {
    await expect(
      runInboxConsumer(kafkaConsumer, { mode: 'eachRecord', kafka, inbox, handler } as never),
    ).rejects.toThrow(/Expected `mode` to be 'eachMessage' or 'eachBatch'/);
    await expect(
      runInboxConsumer(kafkaConsumer, {
        mode: 'eachMessage',
        kafka,
        inbox,
        handler,
        partitionsConsumedConcurrently: 0,
      }),
    ).rejects.toThrow(/partitionsConsumedConcurrently/);
  });
});
