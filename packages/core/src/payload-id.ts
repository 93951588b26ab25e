import { hash } from 'node:crypto';
import type { Payload } from './fingerprint.js';

/**
 * A message id derived from the payload, for producers that send none: `sha256:` and the
 * hex SHA-256 of the payload bytes. The same bytes always give the same id, so a producer's
 * retry or a re-publish of the same content is a duplicate.
 *
 * The trade-off, plainly: two messages that are meant to be separate but carry the same
 * bytes (two identical 10-dollar charges from one user) collapse into one within the
 * retention window. Use it only where the payload itself is unique (it carries its own
 * business id or timestamp). Returns `undefined` for a message without a payload (a Kafka
 * tombstone) or with an empty one, which has nothing to tell it from any other empty
 * message: such a message is then invalid.
 *
 * @example
 * ```ts
 * import { payloadHashId } from '@inboxkit/core'
 * payloadHashId('{"chargeId":"c-1","amountCents":1200}') // 'sha256:5d1c...'
 * ```
 */
export function payloadHashId(payload: Payload): string | undefined {
  if (payload === null || payload === undefined || payload.length === 0) return undefined;
  return `sha256:${hash('sha256', payload, 'hex')}`;
}
