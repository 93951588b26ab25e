import { InvalidMessageError } from './errors.js';
import type { Payload } from './fingerprint.js';

/**
 * What the inbox needs of a message. Adapters pass richer objects (topic, offset,
 * properties...): the handler receives the object it was given, unchanged.
 */
export interface InboxMessage {
  /** The message's id: its key in the inbox together with the consumer name. */
  readonly id: string;
  /** The raw payload, fingerprinted to tell a duplicate from an id reused for other content. */
  readonly payload?: Payload;
}

/**
 * The most UTF-8 bytes an id may take, whatever `maxIdLength` says: a btree entry holds
 * about 2.7 kB, and the key's index entry also holds the consumer name (at most
 * {@link MAX_CONSUMER_BYTES}). A longer id would fail the claim on every delivery.
 */
export const MAX_ID_BYTES = 2000;
/** The most UTF-8 bytes a consumer name may take (see {@link MAX_ID_BYTES}). */
export const MAX_CONSUMER_BYTES = 500;

/** Checks an id against the rules of the inbox and returns it, or throws {@link InvalidMessageError}. */
export function checkMessageId(id: unknown, maxIdLength: number): string {
  if (id === undefined || id === null) {
    throw new InvalidMessageError('Message has no id: every message needs one for deduplication.');
  }
  if (typeof id !== 'string') {
    throw new InvalidMessageError(`Message id must be a string, got ${typeof id}.`);
  }
  if (id.length === 0) {
    throw new InvalidMessageError('Message id is empty.', id);
  }
  if (id.length > maxIdLength) {
    throw new InvalidMessageError(
      `Message id is ${id.length} characters long, over the limit of ${maxIdLength} (maxIdLength): ${JSON.stringify(id.slice(0, 64))}...`,
      // No messageId: a truncated one could name another message, and recording it as
      // dead-lettered would make that message a duplicate.
      undefined,
    );
  }
  // Only an id over a third of the limit in characters can be over it in bytes.
  if (id.length > MAX_ID_BYTES / 3 && Buffer.byteLength(id, 'utf8') > MAX_ID_BYTES) {
    throw new InvalidMessageError(
      `Message id takes ${Buffer.byteLength(id, 'utf8')} bytes in UTF-8, over the limit of ${MAX_ID_BYTES} that a Postgres index entry can hold: ${JSON.stringify(id.slice(0, 64))}...`,
      undefined,
    );
  }
  if (id.includes('\u0000')) {
    throw new InvalidMessageError('Message id contains a NUL character, which Postgres text cannot hold.', id);
  }
  return id;
}

/** Checks a payload's type; a message whose payload is neither bytes nor text is invalid. */
export function checkPayload(payload: unknown, id: string): Payload {
  if (payload === undefined || payload === null || typeof payload === 'string' || payload instanceof Uint8Array) {
    return payload;
  }
  throw new InvalidMessageError(
    `Message ${JSON.stringify(id)} has a payload of type ${typeof payload}; expected bytes (Uint8Array/Buffer), a string or null.`,
    id,
  );
}
