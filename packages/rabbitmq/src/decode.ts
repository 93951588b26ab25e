import { InvalidMessageError } from '@inboxkit/core';
import type { AmqpDelivery } from './amqp-client.js';

/**
 * How the content becomes `message.body`:
 * - `'buffer'`: the content as it is (a `Buffer`);
 * - `'text'`: the content as UTF-8 text;
 * - `'json'`: `JSON.parse` of the UTF-8 text; content that is not JSON is dead-lettered;
 * - a function: its return value; a throw dead-letters the message with the error as cause.
 */
export type Decode<T> = 'buffer' | 'text' | 'json' | ((content: Buffer, delivery: AmqpDelivery) => T);

/** A compiled {@link Decode}. */
export interface Decoder<T> {
  /** `'buffer'`, `'text'`, `'json'` or `'custom'`, for messages. */
  readonly name: string;
  readonly decode: (content: Buffer, delivery: AmqpDelivery) => T;
}

export const DECODE_NAMES: readonly string[] = ['buffer', 'text', 'json'];

export function compileDecoder<T>(decode: Decode<T>): Decoder<T> {
  if (typeof decode === 'function') return { name: 'custom', decode };
  switch (decode) {
    case 'buffer':
      return { name: decode, decode: (content) => content as T };
    case 'text':
      return { name: decode, decode: (content) => content.toString('utf8') as T };
    default:
      return { name: 'json', decode: (content) => JSON.parse(content.toString('utf8')) as T };
  }
}

/** Decodes a delivery's content, or throws {@link InvalidMessageError} saying why it could not. */
export function decodeBody<T>(decoder: Decoder<T>, delivery: AmqpDelivery, id: string): T {
  try {
    return decoder.decode(delivery.content, delivery);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    const what = decoder.name === 'json' ? 'is not valid JSON' : `could not be decoded (decode: ${decoder.name})`;
    throw new InvalidMessageError(`Message ${JSON.stringify(id)} ${what}: ${reason}`, id, { cause: error });
  }
}
