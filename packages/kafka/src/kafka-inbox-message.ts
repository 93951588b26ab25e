import type { InboxMessage } from '@inboxkit/core';
import type { KafkaHeaders, KafkaRecord } from './kafka-client.js';

/**
 * A Kafka record as a handler receives it: the inbox message (`id`, `payload`) together
 * with where it came from and its decoded value. The same object is handed to the handler
 * on every attempt.
 */
export interface KafkaInboxMessage<V = unknown> extends InboxMessage {
  /** The message id (see the `messageId` option): its key in the inbox. */
  readonly id: string;
  /** The record's raw value; its fingerprint tells a duplicate from an id reused for other content. */
  readonly payload: Buffer | null;
  /** The topic the record was consumed from. */
  readonly topic: string;
  /** Its partition. */
  readonly partition: number;
  /** The record's offset, as a decimal string. */
  readonly offset: string;
  /** The record's key, raw. */
  readonly key: Buffer | null;
  /** The value as the `decode` option decoded it. */
  readonly value: V;
  /** Headers decoded as UTF-8 text; a repeated key keeps its last value. */
  readonly headers: Readonly<Record<string, string>>;
  /** The record's timestamp, in milliseconds since the epoch, as a decimal string. */
  readonly timestamp: string;
  /** The record as the client handed it over (raw headers included). */
  readonly record: KafkaRecord;
}

/** Decodes record headers to text: bytes as UTF-8, the last value of a repeated key. */
export function decodeHeaders(headers: KafkaHeaders | undefined): Record<string, string> {
  const decoded: Record<string, string> = {};
  if (headers === undefined) return decoded;
  for (const [name, raw] of Object.entries(headers)) {
    const value = Array.isArray(raw) ? raw[raw.length - 1] : raw;
    if (value === undefined) continue;
    decoded[name] = typeof value === 'string' ? value : value.toString('utf8');
  }
  return decoded;
}

/** `topic/partition@offset`: how records are named in errors and logs. */
export function recordName(topic: string, partition: number, offset: string): string {
  return `${topic}/${partition}@${offset}`;
}
