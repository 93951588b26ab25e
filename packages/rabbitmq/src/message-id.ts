import { InvalidMessageError, payloadHashId } from '@inboxkit/core';
import type { AmqpDelivery } from './amqp-client.js';

/** Where a message's id is found when `properties.messageId` is not set. */
export interface MessageIdOptions {
  /** Header holding the id. Default `'message-id'`. */
  readonly header?: string;
  /**
   * Derives the id when neither `properties.messageId` nor the header holds one, e.g. from
   * a field of the body. Return `undefined` when there is none; a throw makes the message
   * invalid (dead-lettered with the error as cause).
   *
   * @example
   * ```ts
   * from: (delivery) => JSON.parse(delivery.content.toString()).chargeId
   * ```
   */
  readonly from?: (delivery: AmqpDelivery) => string | undefined;
  /**
   * `'payload-hash'`: a message that has no id by the rules above gets one derived from
   * its content, `sha256:` and the hex SHA-256 of the bytes (core's `payloadHashId`), for
   * producers that send none. A producer's retry of the same bytes is then a duplicate.
   * The trade-off: two messages meant to be separate but with identical content (two equal
   * charges of one user) collapse into one while the first key is kept (the inbox's
   * retention). Use it only where the content is unique by itself (it holds a business id
   * or a timestamp). Default: none (a message without an id is dead-lettered).
   */
  readonly fallback?: 'payload-hash';
}

/** How ids are read, as compiled from {@link MessageIdOptions}. */
export interface MessageIdReader {
  readonly header: string;
  readonly from: ((delivery: AmqpDelivery) => string | undefined) | undefined;
  /** Derive the id from the content when none is found. */
  readonly payloadHash: boolean;
}

/**
 * The id of a delivery: `properties.messageId`, else the id header, else `from()`, else the
 * content's hash when `fallback: 'payload-hash'` is set. Throws
 * {@link InvalidMessageError} naming every place it looked when none holds one. Length and
 * character rules are the inbox's to check.
 */
export function readMessageId(delivery: AmqpDelivery, reader: MessageIdReader): string {
  const property = delivery.properties.messageId;
  if (typeof property === 'string' && property.length > 0) return property;
  const header = headerValue(delivery.properties.headers?.[reader.header]);
  if (header !== undefined && header.length > 0) return header;
  if (reader.from !== undefined) {
    let derived: unknown;
    try {
      derived = reader.from(delivery);
    } catch (error) {
      throw new InvalidMessageError(
        `Message has no id: messageId.from() threw (${error instanceof Error ? error.message : String(error)}).`,
        undefined,
        { cause: error },
      );
    }
    if (typeof derived === 'string' && derived.length > 0) return derived;
    if (derived !== undefined && derived !== null && typeof derived !== 'string') {
      throw new InvalidMessageError(`Message has no id: messageId.from() returned a ${typeof derived}, not a string.`);
    }
  }
  if (reader.payloadHash) {
    const hashed = payloadHashId(delivery.content);
    if (hashed !== undefined) return hashed;
  }
  throw new InvalidMessageError(
    `Message has no id: no properties.messageId, no ${JSON.stringify(reader.header)} header` +
      (reader.from === undefined ? '' : ', and messageId.from() found none') +
      (reader.payloadHash ? ', and an empty content has no hash to derive one from' : '') +
      ". Every message needs an id for deduplication: set messageId when publishing (or derive one: messageId: { fallback: 'payload-hash' }).",
  );
}

function headerValue(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return undefined;
}
