import { ConfigurationError } from '@inboxkit/core';
import type { KafkaRecord } from './kafka-client.js';

/** Where a record came from, for decoders and message-id functions. */
export interface KafkaRecordContext {
  readonly topic: string;
  readonly partition: number;
  readonly record: KafkaRecord;
  /** The record's headers decoded as text (a repeated key keeps its last value). */
  readonly headers: Readonly<Record<string, string>>;
}

/**
 * How a record's value is decoded before the handler sees it:
 * - `'json'`: UTF-8 JSON (`null` for a tombstone);
 * - `'utf8'`: text (`null` for a tombstone);
 * - `'buffer'`: the bytes as they are;
 * - a function: whatever it returns. A decoder that throws makes the record invalid: it is
 *   dead-lettered with reason `invalid_message` and the handler never runs.
 */
export type ValueDecoding<V> = 'json' | 'utf8' | 'buffer' | ((value: Buffer | null, context: KafkaRecordContext) => V);

/** A compiled decoder. */
export type ValueDecoder<V> = (value: Buffer | null, context: KafkaRecordContext) => V;

export function compileValueDecoder<V>(decoding: ValueDecoding<V> | undefined): {
  name: string;
  decode: ValueDecoder<V>;
} {
  switch (decoding ?? 'json') {
    case 'json':
      return { name: 'json', decode: (value) => (value === null ? null : JSON.parse(value.toString('utf8'))) as V };
    case 'utf8':
      return { name: 'utf8', decode: (value) => (value === null ? null : value.toString('utf8')) as V };
    case 'buffer':
      return { name: 'buffer', decode: (value) => value as V };
    default:
      if (typeof decoding === 'function') return { name: decoding.name || 'custom', decode: decoding };
      throw new ConfigurationError(
        `Expected \`decode\` to be 'json', 'utf8', 'buffer' or a function (value, context) => decoded; got ${JSON.stringify(decoding)}.`,
      );
  }
}
