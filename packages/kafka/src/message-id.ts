import { ConfigurationError, payloadHashId } from '@inboxkit/core';
import type { KafkaRecordContext } from './decode.js';

/** Derives a message id from a record; `undefined` when the record carries none. */
export type MessageIdFunction = (context: KafkaRecordContext) => string | undefined;

/**
 * Where a record's message id (its key in the inbox) comes from. The choice is explicit
 * because it decides what counts as a duplicate:
 *
 * - `{ header: 'message-id' }` (the default): a header the producer sets, the same on every
 *   retry of a send. Catches producer retries and re-publishes as well as redeliveries.
 *   A record without it is invalid (dead-lettered) unless a `fallback` is given.
 * - `{ from: (context) => id }`: computed from the record (a field of the value, the key...).
 *   Returning `undefined`, or throwing (say on a tombstone), makes the record invalid: it is
 *   dead-lettered as `invalid_message` with the error as cause, and the partition moves on.
 * - `'offset'`: `topic/partition/offset`. Needs nothing from the producer, but only catches
 *   redeliveries of the same record: a message produced twice has two offsets and runs twice.
 * - `'payload-hash'`: `sha256:` and the hash of the record's value (`payloadHashId`). Needs
 *   nothing from the producer and also catches a record produced twice with the same bytes;
 *   but two records *meant* to be separate that carry the same bytes collapse into one
 *   within the retention window. Use it only where the value is unique by itself (it holds
 *   its own business id or timestamp). A record without a value (a tombstone) is invalid.
 *
 * `'offset'` and `'payload-hash'` can also be a `fallback` for records without the header.
 */
export type MessageIdSource =
  | { readonly header: string; readonly fallback?: 'offset' | 'payload-hash' | MessageIdFunction }
  | { readonly from: MessageIdFunction }
  | 'offset'
  | 'payload-hash';

/**
 * A compiled message-id rule: the id, or why there is none (with the error a user function
 * threw as `cause`). It never throws: a function that throws on one record (a tombstone, a
 * value of another shape) makes that record invalid, and must not stall its partition.
 */
export type MessageIdReader = (context: KafkaRecordContext) => { id: string } | { missing: string; cause?: unknown };

export function offsetMessageId(context: KafkaRecordContext): string {
  return `${context.topic}/${context.partition}/${context.record.offset}`;
}

export function compileMessageId(source: MessageIdSource | undefined): MessageIdReader {
  const option = source ?? { header: 'message-id' };
  if (option === 'offset') return (context) => ({ id: offsetMessageId(context) });
  if (option === 'payload-hash') return payloadHashMessageId;
  if (typeof option !== 'object' || option === null) {
    throw new ConfigurationError(
      `Expected \`messageId\` to be { header: 'message-id' }, { from: (context) => id }, 'offset' or 'payload-hash'; got ${JSON.stringify(option)}.`,
    );
  }
  if ('from' in option) {
    const from = option.from;
    if (typeof from !== 'function') throw new ConfigurationError('Expected `messageId.from` to be a function.');
    return (context) => {
      let id: string | undefined;
      try {
        id = from(context);
      } catch (error) {
        return { missing: `the messageId.from function threw: ${describe(error)}`, cause: error };
      }
      return id === undefined || id === null
        ? { missing: `the messageId.from function returned ${String(id)}` }
        : { id: String(id) };
    };
  }
  const header = option.header;
  if (typeof header !== 'string' || header.length === 0) {
    throw new ConfigurationError('Expected `messageId.header` to be a non-empty header name.');
  }
  const fallback = option.fallback;
  if (
    fallback !== undefined &&
    fallback !== 'offset' &&
    fallback !== 'payload-hash' &&
    typeof fallback !== 'function'
  ) {
    throw new ConfigurationError("Expected `messageId.fallback` to be 'offset', 'payload-hash' or a function.");
  }
  return (context) => {
    const id = context.headers[header];
    if (id !== undefined) return { id };
    if (fallback === 'offset') return { id: offsetMessageId(context) };
    if (fallback === 'payload-hash') return payloadHashMessageId(context);
    if (fallback !== undefined) {
      let computed: string | undefined;
      try {
        computed = fallback(context);
      } catch (error) {
        return {
          missing: `it has no ${JSON.stringify(header)} header and the messageId.fallback function threw: ${describe(error)}`,
          cause: error,
        };
      }
      if (computed !== undefined && computed !== null) return { id: String(computed) };
      return {
        missing: `it has no ${JSON.stringify(header)} header and the messageId.fallback function returned nothing`,
      };
    }
    return {
      missing: `it has no ${JSON.stringify(header)} header and no fallback is configured (messageId: { header, fallback: 'offset' | fn })`,
    };
  };
}

/** The id `'payload-hash'` gives a record: none for a tombstone. */
function payloadHashMessageId(context: KafkaRecordContext): { id: string } | { missing: string } {
  const id = payloadHashId(context.record.value);
  return id === undefined
    ? { missing: "it has no value to hash (messageId 'payload-hash'): a tombstone or an empty value" }
    : { id };
}

/** `Name: message` of a thrown value, for the dead letter's reason. */
function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
