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
