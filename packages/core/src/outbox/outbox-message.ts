import { randomUUID } from 'node:crypto';
import { hasUnstorableChars, hasUnstorableJson } from '../storable.js';
import { InvalidOutboxMessageError } from './outbox-errors.js';

/** What an outbox message carries besides its destination. */
interface OutboxMessageBase {
  /**
   * The ordering key (the Kafka record key). Messages of one key are published in the
   * order their transactions committed, never two at once; messages without a key have no
   * order (docs/outbox.md, "Ordering").
   */
  readonly key?: string | null;
  /**
   * Bytes (`Buffer`/`Uint8Array`) are sent as they are; anything else is JSON-encoded
   * (a string too: `'hi'` becomes `"hi"`).
   */
  readonly payload: unknown;
  /**
   * The id consumers deduplicate on (Kafka header `message-id`, RabbitMQ `messageId`).
   * Default: a random UUID, stored with the row, so a re-send carries the same id.
   */
  readonly messageId?: string;
  /** Broker headers (text), e.g. a W3C `traceparent`. */
  readonly headers?: Readonly<Record<string, string>>;
}

/** A message for a Kafka topic. */
export interface OutboxTopicMessage extends OutboxMessageBase {
  /** The Kafka topic to publish to. */
  readonly topic: string;
}

/** A message for a RabbitMQ exchange (`''` is the default exchange, routing by queue name). */
export interface OutboxExchangeMessage extends OutboxMessageBase {
  /** The RabbitMQ exchange to publish to. */
  readonly exchange: string;
  /** The routing key (with the default exchange: the queue's name). */
  readonly routingKey: string;
}

/** A message to enqueue: for a topic, or for an exchange and routing key. */
export type OutboxMessage = OutboxTopicMessage | OutboxExchangeMessage;

/** The columns of the rows one `enqueue` call inserts, one array per column. */
export interface OutboxRows {
  readonly messageIds: string[];
  readonly destinations: string[];
  readonly routingKeys: (string | null)[];
  readonly keys: (string | null)[];
  readonly headers: string[];
  readonly payloads: Buffer[];
}

/** Longest message id, as the inbox's default `maxIdLength`: a longer id would be refused downstream. */
export const MAX_MESSAGE_ID_LENGTH = 255;
/** Longest ordering key, in bytes: it sits in a btree index. */
const MAX_KEY_BYTES = 1000;

/** Checks and encodes messages into column arrays. Throws {@link InvalidOutboxMessageError}, naming the field. */
export function outboxRows(messages: readonly OutboxMessage[]): OutboxRows {
  const rows: OutboxRows = {
    messageIds: [],
    destinations: [],
    routingKeys: [],
    keys: [],
    headers: [],
    payloads: [],
  };
  messages.forEach((message, index) => {
    if (typeof message !== 'object' || message === null) {
      throw new InvalidOutboxMessageError('message', index, 'must be an object.');
    }
    const fail = (field: string, detail: string): never => {
      throw new InvalidOutboxMessageError(field, index, detail);
    };
    const m = message as Partial<OutboxTopicMessage & OutboxExchangeMessage>;
    if (m.topic !== undefined && m.exchange !== undefined) fail('topic', 'and `exchange` are both given; give one.');
    if (m.topic !== undefined) {
      if (typeof m.topic !== 'string' || m.topic.length === 0) fail('topic', 'must be a non-empty string.');
      text('topic', m.topic as string, fail);
      if (m.routingKey !== undefined) fail('routingKey', 'is for RabbitMQ messages (with `exchange`), not topics.');
      rows.destinations.push(m.topic as string);
      rows.routingKeys.push(null);
    } else if (m.exchange !== undefined) {
      if (typeof m.exchange !== 'string') fail('exchange', 'must be a string (`""` is the default exchange).');
      if (typeof m.routingKey !== 'string') fail('routingKey', 'must be a string.');
      text('exchange', m.exchange as string, fail);
      text('routingKey', m.routingKey as string, fail);
      rows.destinations.push(m.exchange as string);
      rows.routingKeys.push(m.routingKey as string);
    } else {
      fail('topic', 'is missing: a message needs a destination (`topic`, or `exchange` and `routingKey`).');
    }
    if (m.key === undefined || m.key === null) rows.keys.push(null);
    else {
      if (typeof m.key !== 'string' || m.key.length === 0) fail('key', 'must be a non-empty string or null.');
      text('key', m.key as string, fail);
      if (Buffer.byteLength(m.key as string) > MAX_KEY_BYTES) fail('key', `must be at most ${MAX_KEY_BYTES} bytes.`);
      rows.keys.push(m.key as string);
    }
    if (m.messageId === undefined) rows.messageIds.push(randomUUID());
    else {
      if (typeof m.messageId !== 'string' || m.messageId.length === 0) fail('messageId', 'must be a non-empty string.');
      text('messageId', m.messageId as string, fail);
      if ((m.messageId as string).length > MAX_MESSAGE_ID_LENGTH) {
        fail('messageId', `must be at most ${MAX_MESSAGE_ID_LENGTH} characters (the inbox's default maxIdLength).`);
      }
      rows.messageIds.push(m.messageId as string);
    }
    rows.headers.push(headersJson(m.headers, fail));
    rows.payloads.push(payloadBytes(m.payload, fail));
  });
  return rows;
}

function text(field: string, value: string, fail: (field: string, detail: string) => never): void {
  if (hasUnstorableChars(value)) fail(field, 'holds a NUL character or a lone surrogate, which Postgres cannot store.');
}

function headersJson(headers: unknown, fail: (field: string, detail: string) => never): string {
  if (headers === undefined || headers === null) return '{}';
  if (typeof headers !== 'object' || Array.isArray(headers) || Buffer.isBuffer(headers)) {
    return fail('headers', 'must be an object of text values.');
  }
  for (const [name, value] of Object.entries(headers)) {
    if (name.length === 0) fail('headers', 'has an empty header name.');
    if (typeof value !== 'string')
      fail('headers', `value of ${JSON.stringify(name)} must be a string, got ${typeof value}.`);
  }
  const json = JSON.stringify(headers);
  if (hasUnstorableJson(json))
    fail('headers', 'hold a NUL character or a lone surrogate, which Postgres cannot store.');
  return json;
}

function payloadBytes(payload: unknown, fail: (field: string, detail: string) => never): Buffer {
  if (Buffer.isBuffer(payload)) return payload;
  if (payload instanceof Uint8Array) return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  let json: string | undefined;
  try {
    json = JSON.stringify(payload);
  } catch (error) {
    return fail('payload', `is neither bytes nor JSON-serializable: ${(error as Error).message}`);
  }
  if (json === undefined) return fail('payload', `is neither bytes nor JSON-serializable (got ${typeof payload}).`);
  return Buffer.from(json);
}
