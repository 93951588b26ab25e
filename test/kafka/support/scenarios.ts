// The scenarios run against both wrappers (eachMessage and eachBatch): one test file per
// wrapper calls `defineScenarios(mode)`, so the two run in parallel.

import { NonRetryableError } from '@inboxkit/core';
import { DEAD_LETTER_HEADERS, type KafkaInboxEvents, type MessageIdSource, runInboxConsumer } from '@inboxkit/kafka';
import { sql } from 'kysely';
import { expect, it } from 'vitest';
import type { TestDB } from '../../support/postgres.ts';
import { setUpKafkaFile } from './file-setup.ts';
import type { ChargeValue } from './inbox-consumer.ts';
import {
  type ChargeMessage,
  consumeToEnd,
  ledgerBulkHandler,
  ledgerHandler,
  ledgerHandlers,
  ledgerTotals,
  startInboxConsumer,
  testInbox,
} from './inbox-consumer.ts';
import {
  charge,
  chargesWithDuplicates,
  consumerSettings,
  createFreshTopic,
  produce,
  readTopic,
  topicSize,
  waitFor,
  waitForCommittedToEnd,
} from './kafka-testkit.ts';

export type Mode = 'eachMessage' | 'eachBatch';

export function defineScenarios(mode: Mode): void {
  const setup = setUpKafkaFile(`kafka_${mode}`, { poolSize: 6 });

  /** The handler options of the mode (ledgerHandlers), calling `wrap` on each record first. */
  const handlers = (wrap: (message: ChargeMessage) => void = () => {}) =>
    ledgerHandlers(mode, {
      before: (messages) => {
        for (const message of messages) wrap(message);
      },
    });

  async function freshTopic(label: string, partitions = 4): Promise<{ topic: string; dlq: string; group: string }> {
    const { topic, dlq, groupId } = await createFreshTopic(setup.kit.admin, {
      topic: `${label}-${mode}`,
      group: `group-${label}`,
      partitions,
    });
    return { topic, dlq, group: groupId };
  }

  it(`${mode}: 5,000 records with 30% duplicate ids leave exactly one business row per distinct id`, async () => {
    const { t, kit } = setup;
    await t.db.deleteFrom('ledger').execute();
    const { topic, dlq, group } = await freshTopic('dups');
    const records = chargesWithDuplicates('d', 5000, 0.3);
    const distinct = new Set(records.map((r) => r.id)).size;
    expect(distinct).toBe(3500);
    await produce(kit.producer, topic, records);
    const inbox = testInbox(t.db, `dups-${mode}`);
    await consumeToEnd(kit, topic, group, {
      ...handlers(),
      inbox,
      kafka: kit.kafka,
      partitionsConsumedConcurrently: 2,
    });
    expect(await ledgerTotals(t.db)).toEqual({ rows: distinct, distinct, twice: [] });
    expect(await topicSize(kit.admin, dlq)).toBe(0);
  });

  it(`${mode}: a handler that always throws for one id sends exactly that record to the DLQ with its failure headers`, async () => {
    const { t, kit } = setup;
    await t.db.deleteFrom('ledger').execute();
    // One partition, and (eachBatch) batches of 50: the poison lies in the batch [100, 150),
    // found by the savepoint pass, then retried alone.
    const { topic, dlq, group } = await freshTopic('poison', 1);
    const records = Array.from({ length: 300 }, (_, i) => charge(`p-${i}`));
    const poisonId = 'p-137';
    await produce(kit.producer, topic, records);
    const inbox = testInbox(t.db, `poison-${mode}`);
    const deadLettered: KafkaInboxEvents['deadLettered'][] = [];
    await consumeToEnd(
      kit,
      topic,
      group,
      {
        ...handlers((message) => {
          if (message.id === poisonId) throw new Error(`charge ${message.id} is poison`);
        }),
        inbox,
        kafka: kit.kafka,
        ...(mode === 'eachBatch' ? { maxBatchSize: 50 } : {}),
      },
      (control) => control.on('deadLettered', (event) => deadLettered.push(event)),
    );
    const totals = await ledgerTotals(t.db);
    expect(totals).toEqual({ rows: 299, distinct: 299, twice: [] });
    const poisonRows = await t.db.selectFrom('ledger').selectAll().where('charge_id', '=', poisonId).execute();
    expect(poisonRows).toHaveLength(0);
    expect(deadLettered.map((e) => e.message.id)).toEqual([poisonId]);

    const dead = await readTopic(kit.kafka, dlq, 1);
    expect(dead).toHaveLength(1);
    const [record] = dead;
    const original = deadLettered[0]?.message;
    expect(record?.value).toBe(JSON.stringify({ id: poisonId, userId: `u-${poisonId.length}`, amount: 100 }));
    expect(record?.key).toBe(poisonId);
    expect(record?.headers).toMatchObject({
      'message-id': poisonId,
      [DEAD_LETTER_HEADERS.reason]: 'retries_exhausted',
      [DEAD_LETTER_HEADERS.errorName]: 'Error',
      [DEAD_LETTER_HEADERS.errorMessage]: `charge ${poisonId} is poison`,
      [DEAD_LETTER_HEADERS.attempts]: '3',
      [DEAD_LETTER_HEADERS.messageId]: poisonId,
      [DEAD_LETTER_HEADERS.originalTopic]: topic,
      [DEAD_LETTER_HEADERS.originalPartition]: String(original?.partition),
      [DEAD_LETTER_HEADERS.originalOffset]: original?.offset,
      [DEAD_LETTER_HEADERS.originalTimestamp]: original?.timestamp,
      [DEAD_LETTER_HEADERS.consumerGroup]: group,
      [DEAD_LETTER_HEADERS.consumer]: `poison-${mode}`,
    });
    const headers = record?.headers ?? {};
    expect(headers[DEAD_LETTER_HEADERS.errorStack]).toMatch(/^Error: charge p-137 is poison\n\s+at /);
    expect(headers[DEAD_LETTER_HEADERS.memberId]).toMatch(/.+/);
    expect(Date.parse(headers[DEAD_LETTER_HEADERS.failedAt] ?? '')).toBeGreaterThanOrEqual(
      Date.parse(headers[DEAD_LETTER_HEADERS.firstSeenAt] ?? ''),
    );
    // The dead letter is recorded: a redelivery is a duplicate, not a second dead letter.
    expect(await inbox.find(poisonId)).toMatchObject({ status: 'dead_lettered' });
  });

  it(`${mode}: a non-retryable error dead-letters at once; a bounded stack; the consumer goes on`, async () => {
    const { t, kit } = setup;
    await t.db.deleteFrom('ledger').execute();
    const { topic, dlq, group } = await freshTopic('nonretry', 1);
    await produce(kit.producer, topic, [charge('n-1'), charge('n-2'), charge('n-3')]);
    const inbox = testInbox(t.db, `nonretry-${mode}`);
    let calls = 0;
    await consumeToEnd(kit, topic, group, {
      ...handlers((message) => {
        if (message.id === 'n-2') {
          calls++;
          const error = new NonRetryableError('amount must be positive');
          error.stack = `NonRetryableError: amount must be positive\n${'    at deep (file.ts:1:1)\n'.repeat(500)}`;
          throw error;
        }
      }),
      inbox,
      kafka: kit.kafka,
      maxStackLength: 300,
    });
    expect(await ledgerTotals(t.db)).toEqual({ rows: 2, distinct: 2, twice: [] });
    const [record] = await readTopic(kit.kafka, dlq, 1);
    expect(record?.headers).toMatchObject({
      [DEAD_LETTER_HEADERS.reason]: 'non_retryable',
      [DEAD_LETTER_HEADERS.errorName]: 'NonRetryableError',
      [DEAD_LETTER_HEADERS.errorCode]: 'INBOX_NON_RETRYABLE',
      [DEAD_LETTER_HEADERS.attempts]: '1',
    });
    const stack = record?.headers[DEAD_LETTER_HEADERS.errorStack] ?? '';
    expect(Buffer.byteLength(stack, 'utf8')).toBeLessThanOrEqual(300);
    expect(stack).toMatch(/…\[truncated\]$/);
    // Never retried: eachMessage calls it once; eachBatch may also have called it in the
    // batch that found the culprit, then once alone.
    if (mode === 'eachMessage') expect(calls).toBe(1);
    else expect(calls).toBeGreaterThanOrEqual(1);
  });

  it(`${mode}: with handlerTimeoutMs, a record whose handler hangs in Postgres is cancelled and dead-lettered; the others commit`, async () => {
    const { t, kit } = setup;
    await t.db.deleteFrom('ledger').execute();
    const { topic, dlq, group } = await freshTopic('hung', 1);
    await produce(kit.producer, topic, [charge('h-1'), charge('h-slow'), charge('h-3')]);
    const inbox = testInbox(t.db, `hung-${mode}`, { handlerTimeoutMs: 300, retry: { retries: 0 } });
    // A statement that would run for 30 s: only the cancel at handlerTimeoutMs ends it.
    const started = performance.now();
    await consumeToEnd(kit, topic, group, {
      ...(mode === 'eachMessage'
        ? {
            mode,
            handler: async (trx, message) => {
              if (message.id === 'h-slow') await sql`SELECT pg_sleep(30)`.execute(trx);
              await ledgerHandler(trx, message);
            },
          }
        : {
            mode,
            bulkHandler: async (trx, messages) => {
              if (messages.some((message) => message.id === 'h-slow')) await sql`SELECT pg_sleep(30)`.execute(trx);
              await ledgerBulkHandler(trx, messages);
            },
          }),
      inbox,
      kafka: kit.kafka,
    });
    expect(performance.now() - started).toBeLessThan(25_000);
    expect(await ledgerTotals(t.db)).toEqual({ rows: 2, distinct: 2, twice: [] });
    const [record] = await readTopic(kit.kafka, dlq, 1);
    expect(record?.key).toBe('h-slow');
    expect(record?.headers).toMatchObject({
      [DEAD_LETTER_HEADERS.errorName]: 'HandlerTimeoutError',
      [DEAD_LETTER_HEADERS.errorCode]: 'INBOX_HANDLER_TIMEOUT',
    });
  });

  it(`${mode}: bad input (no id and no fallback, undecodable value, id over the limit) goes to the DLQ with a clear error; the consumer keeps running`, async () => {
    const { t, kit } = setup;
    await t.db.deleteFrom('ledger').execute();
    const { topic, dlq, group } = await freshTopic('bad', 1);
    const longId = 'L'.repeat(300);
    await produce(kit.producer, topic, [
      charge('b-1'),
      { key: 'no-id', value: JSON.stringify({ id: 'x', userId: 'u', amount: 1 }) },
      charge('b-2'),
      { id: 'b-bad-json', value: '{"id": "b-bad-json", amount: ' },
      { id: longId, value: JSON.stringify({ id: 'long', userId: 'u', amount: 1 }) },
      charge('b-3'),
    ]);
    const inbox = testInbox(t.db, `bad-${mode}`);
    const { control } = await startInboxConsumer(kit.kafka, topic, group, {
      ...handlers(),
      inbox,
      kafka: kit.kafka,
    });
    try {
      await waitForCommittedToEnd(kit.admin, group, topic);
      // Still running: records produced afterwards are processed too.
      await produce(kit.producer, topic, [charge('b-4')]);
      await waitFor(async () => (await ledgerTotals(t.db)).rows === 4, { what: 'b-4 to be processed' });
    } finally {
      await control.close();
    }
    expect(await ledgerTotals(t.db)).toEqual({ rows: 4, distinct: 4, twice: [] });
    const dead = await readTopic(kit.kafka, dlq, 3);
    expect(dead).toHaveLength(3);
    const byReason = dead.map((r) => [
      r.headers[DEAD_LETTER_HEADERS.reason],
      r.headers[DEAD_LETTER_HEADERS.errorMessage],
    ]);
    expect(byReason[0]).toEqual([
      'invalid_message',
      expect.stringMatching(
        new RegExp(
          `^Record ${topic}/0@1 has no message id: it has no "message-id" header and no fallback is configured`,
        ),
      ),
    ]);
    expect(byReason[1]).toEqual([
      'invalid_message',
      expect.stringMatching(
        new RegExp(`^Record ${topic}/0@3 \\(message id "b-bad-json"\\) has a value that cannot be decoded as json: `),
      ),
    ]);
    expect(byReason[2]).toEqual([
      'invalid_message',
      expect.stringMatching(/^Message id is 300 characters long, over the limit of 255 \(maxIdLength\)/),
    ]);
    for (const record of dead) {
      expect(record.headers[DEAD_LETTER_HEADERS.errorCode]).toBe('INBOX_INVALID_MESSAGE');
      expect(record.headers[DEAD_LETTER_HEADERS.attempts]).toBe('0');
    }
    // The undecodable record is recorded under its id; the one without an id and the
    // over-long id cannot be.
    expect(await inbox.find('b-bad-json')).toMatchObject({ status: 'dead_lettered' });
    expect(await inbox.find(longId.slice(0, 255))).toBeUndefined();
  });

  it(`${mode}: a messageId.from or fallback function that throws (a tombstone) dead-letters the record as invalid_message; the partition moves on`, async () => {
    const { t, kit } = setup;
    await t.db.deleteFrom('ledger').execute();
    const { topic, dlq, group } = await freshTopic('idthrows', 1);
    // A tombstone (value null) between ordinary charges: the id functions below read the
    // value and throw on it.
    await produce(kit.producer, topic, [charge('x-1'), { key: 'gone', value: null }, charge('x-2')]);
    const idOfValue = ({ record }: { record: { value: Buffer | null } }) =>
      (JSON.parse(String(record.value)) as { id: string }).id;
    const fromInbox = testInbox(t.db, `idthrows-from-${mode}`);
    const fallbackInbox = testInbox(t.db, `idthrows-fallback-${mode}`);
    const dead: KafkaInboxEvents['deadLettered'][] = [];
    const { control } = await startInboxConsumer(kit.kafka, topic, group, {
      ...handlers(),
      inbox: fromInbox,
      kafka: kit.kafka,
      messageId: { from: idOfValue },
    });
    control.on('deadLettered', (event) => dead.push(event));
    try {
      await waitForCommittedToEnd(kit.admin, group, topic);
      // Still running: a record produced afterwards is processed too.
      await produce(kit.producer, topic, [charge('x-3')]);
      await waitFor(async () => (await fromInbox.find('x-3')) !== undefined, { what: 'x-3 to be processed' });
    } finally {
      await control.close();
    }
    await consumeToEnd(
      kit,
      topic,
      `${group}-fallback`,
      {
        ...handlers(),
        inbox: fallbackInbox,
        kafka: kit.kafka,
        messageId: { header: 'message-id', fallback: idOfValue },
      },
      (control) => control.on('deadLettered', (event) => dead.push(event)),
    );
    for (const id of ['x-1', 'x-2', 'x-3']) {
      expect(await fromInbox.find(id)).toMatchObject({ status: 'processed' });
      expect(await fallbackInbox.find(id)).toMatchObject({ status: 'processed' });
    }
    expect(
      dead.map((event) => [event.message.offset, event.outcome.status === 'dead_letter' && event.outcome.reason]),
    ).toEqual([
      ['1', 'invalid_message'],
      ['1', 'invalid_message'],
    ]);
    const records = await readTopic(kit.kafka, dlq, 2);
    expect(records).toHaveLength(2);
    const messages = records.map((record) => record.headers[DEAD_LETTER_HEADERS.errorMessage]);
    expect(messages).toEqual([
      expect.stringMatching(
        new RegExp(
          `^Record ${topic}/0@1 has no message id: the messageId\\.from function threw: TypeError: Cannot read properties of null`,
        ),
      ),
      expect.stringMatching(
        new RegExp(
          `^Record ${topic}/0@1 has no message id: it has no "message-id" header and the messageId\\.fallback function threw: TypeError: Cannot read properties of null`,
        ),
      ),
    ]);
    for (const record of records) {
      expect(record.key).toBe('gone');
      expect(record.value).toBeNull();
      expect(record.headers).toMatchObject({
        [DEAD_LETTER_HEADERS.reason]: 'invalid_message',
        [DEAD_LETTER_HEADERS.errorCode]: 'INBOX_INVALID_MESSAGE',
        [DEAD_LETTER_HEADERS.attempts]: '0',
      });
    }
  });

  it(`${mode}: message ids from a function, and the offset fallback for records without the header`, async () => {
    const { t, kit } = setup;
    await t.db.deleteFrom('ledger').execute();
    const { topic, group } = await freshTopic('ids', 1);
    await produce(kit.producer, topic, [
      charge('i-1'),
      { key: 'k', value: JSON.stringify({ id: 'v-2', userId: 'u', amount: 7 }) },
      charge('i-1'), // the same id again: a duplicate
    ]);
    const fromValue = testInbox(t.db, `ids-from-${mode}`);
    const fallback = testInbox(t.db, `ids-fallback-${mode}`);
    const runWith = async (inbox: typeof fromValue, messageId: MessageIdSource, groupId: string) => {
      await consumeToEnd(kit, topic, groupId, {
        ...handlers(),
        inbox,
        kafka: kit.kafka,
        messageId,
      });
    };
    await runWith(fromValue, { from: ({ record }) => (JSON.parse(String(record.value)) as { id: string }).id }, group);
    expect(await fromValue.find('i-1')).toMatchObject({ status: 'processed' });
    expect(await fromValue.find('v-2')).toMatchObject({ status: 'processed' });
    await runWith(fallback, { header: 'message-id', fallback: 'offset' }, `${group}-fallback`);
    expect(await fallback.find('i-1')).toMatchObject({ status: 'processed' });
    expect(await fallback.find(`${topic}/0/1`)).toMatchObject({ status: 'processed' });
    // Two consumers, two distinct ids each (the copy of i-1 was a duplicate both times).
    expect(await ledgerTotals(t.db)).toMatchObject({ rows: 4, twice: ['i-1'] });
  });

  it(`${mode}: a record retried for longer than the session timeout keeps the member in its group, and its partition's order`, async () => {
    const { t, kit } = setup;
    await t.db.deleteFrom('ledger').execute();
    const { topic, group } = await freshTopic('long-retry', 1);
    // r-5 fails on its first five calls: its retries wait 2.5 s each, 7.5 s or more in all,
    // beyond the 6 s session timeout. Without a heartbeat between attempts the member is
    // dropped and the group rebalances.
    const inbox = testInbox(t.db, `long-retry-${mode}`, {
      retry: { retries: 5, minTimeout: 2500, maxTimeout: 2500, randomize: false },
    });
    let calls = 0;
    const kafkaConsumer = kit.kafka.consumer({ groupId: group, ...consumerSettings });
    let joins = 0;
    kafkaConsumer.on(kafkaConsumer.events.GROUP_JOIN, () => {
      joins++;
    });
    await kafkaConsumer.connect();
    await kafkaConsumer.subscribe({ topics: [topic], fromBeginning: true });
    const control = await runInboxConsumer<TestDB, ChargeValue>(kafkaConsumer, {
      groupId: group,
      commitIntervalMs: 200,
      ...handlers((message) => {
        if (message.id === 'r-5' && calls++ < 5) throw new Error('fails five times');
      }),
      ...(mode === 'eachBatch' ? { maxBatchSize: 20 } : {}),
      inbox,
      kafka: kit.kafka,
    });
    try {
      await waitFor(() => joins === 1, { timeoutMs: 30_000, what: 'the group join' });
      await produce(
        kit.producer,
        topic,
        Array.from({ length: 20 }, (_, i) => charge(`r-${i}`)),
      );
      await waitForCommittedToEnd(kit.admin, group, topic);
    } finally {
      await control.close();
    }
    expect(calls).toBe(6);
    expect(joins).toBe(1);
    const rows = await t.db.selectFrom('ledger').select('charge_id').orderBy('id').execute();
    expect(rows.map((row) => row.charge_id)).toEqual(Array.from({ length: 20 }, (_, i) => `r-${i}`));
  }, 120_000);

  it(`${mode}: messageId 'payload-hash' runs a record produced twice once; a throwing deadLetterTopic function dead-letters to <topic>.dlq`, async () => {
    const { t, kit } = setup;
    await t.db.deleteFrom('ledger').execute();
    const { topic, dlq, group } = await freshTopic('payload-hash', 1);
    const body = (id: string, amount: number) => JSON.stringify({ id, userId: 'u', amount });
    await produce(kit.producer, topic, [
      { value: body('h-1', 10) },
      { value: body('h-2', 20) },
      { value: body('h-1', 10) }, // the same bytes again: a duplicate
      { value: null }, // a tombstone: nothing to hash, an invalid record
      { value: body('h-3', 30) },
    ]);
    const inbox = testInbox(t.db, `payload-hash-${mode}`);
    const deadLettered: KafkaInboxEvents['deadLettered'][] = [];
    await consumeToEnd(
      kit,
      topic,
      group,
      {
        ...handlers(),
        inbox,
        kafka: kit.kafka,
        messageId: 'payload-hash',
        deadLetterTopic: () => {
          throw new Error('no routing table yet');
        },
      },
      (control) => control.on('deadLettered', (event) => deadLettered.push(event)),
    );
    expect(await ledgerTotals(t.db)).toEqual({ rows: 3, distinct: 3, twice: [] });
    expect(
      deadLettered.map((e) => [e.outcome.status === 'dead_letter' && e.outcome.reason, e.deadLetterTopic]),
    ).toEqual([['invalid_message', dlq]]);
    const dead = await readTopic(kit.kafka, dlq, 1);
    expect(dead[0]?.headers?.[DEAD_LETTER_HEADERS.reason]).toBe('invalid_message');
  });

  it(`${mode}: headers reach the handler, the decoder and the id function decoded as text, a repeated key as its last value`, async () => {
    const { t, kit } = setup;
    await t.db.deleteFrom('ledger').execute();
    const { topic, group } = await freshTopic('headers', 1);
    await produce(kit.producer, topic, [
      { ...charge('hd-1'), headers: { trace: Buffer.from('t-1'), hop: ['a', Buffer.from('b')] } },
      { ...charge('hd-2'), headers: { 'x-id': 'hd-2-from-header' } },
    ]);
    const seen: { handler: unknown[]; json: unknown[]; decoder: unknown[]; from: unknown[] } = {
      handler: [],
      json: [],
      decoder: [],
      from: [],
    };
    await consumeToEnd(kit, topic, group, {
      ...handlers((message) => {
        seen.handler.push(message.headers);
        // The decoded headers are the message's own data: a copy and JSON keep them.
        seen.json.push(JSON.parse(JSON.stringify({ ...message })).headers);
      }),
      inbox: testInbox(t.db, `headers-${mode}`),
      kafka: kit.kafka,
      decode: (value, context) => {
        seen.decoder.push(context.headers);
        return JSON.parse(String(value));
      },
      messageId: {
        header: 'x-id',
        fallback: (context) => {
          seen.from.push(context.headers);
          return context.headers['message-id'];
        },
      },
    });
    const first = { 'message-id': 'hd-1', trace: 't-1', hop: 'b' };
    const second = { 'message-id': 'hd-2', 'x-id': 'hd-2-from-header' };
    expect(seen.handler).toEqual([first, second]);
    expect(seen.json).toEqual([first, second]);
    expect(seen.decoder).toEqual([first, second]);
    // The fallback ran only for the record without the `x-id` header.
    expect(seen.from).toEqual([first]);
    const ids = await t.db.selectFrom('ledger').select('charge_id').orderBy('charge_id').execute();
    expect(ids.map((row) => row.charge_id)).toEqual(['hd-1', 'hd-2-from-header']);
  });
}
