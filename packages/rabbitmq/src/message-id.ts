import { InvalidMessageError } from '@inboxkit/core';
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
}

/** How ids are read, as compiled from {@link MessageIdOptions}. */
export interface MessageIdReader {
  readonly header: string;
  readonly from: ((delivery: AmqpDelivery) => string | undefined) | undefined;
}

/**
 * The id of a delivery: `properties.messageId`, else the id header, else `from()`. Throws
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
  throw new InvalidMessageError(
    `Message has no id: no properties.messageId, no ${JSON.stringify(reader.header)} header` +
      (reader.from === undefined ? '' : ', and messageId.from() found none') +
      '. Every message needs an id for deduplication: set messageId when publishing.',
  );
}

function headerValue(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return undefined;
}
