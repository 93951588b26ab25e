import { createHash } from 'node:crypto';
import type { FingerprintOptions } from './idempotency-options.js';

/** What a fingerprint may be taken of, as an adapter sees the request. */
export interface FingerprintSource {
  /** Upper case. */
  readonly method: string;
  /** Path and query string. */
  readonly path: string;
  /** Raw bytes (Fetch) or the parsed body (Fastify, Express). */
  readonly body: unknown;
  /** A request header's value, by lower-case name. */
  header(name: string): string | undefined;
}

/**
 * SHA-256 over the parts the route counts, each tagged and separated so that moving bytes
 * from one part to the next changes the digest. `null` when no part counts: the key alone
 * then identifies the request and a reuse is never detected. Core fingerprints this digest
 * again into the row's `payload_hash`.
 */
export function requestFingerprint(parts: Required<FingerprintOptions>, source: FingerprintSource): Buffer | null {
  if (!parts.method && !parts.path && !parts.body && parts.headers.length === 0) return null;
  const hash = createHash('sha256');
  if (parts.method) hash.update(`method\u0000${source.method}\u0000`);
  if (parts.path) hash.update(`path\u0000${source.path}\u0000`);
  for (const name of parts.headers) {
    const value = source.header(name);
    hash.update(value === undefined ? `header\u0000${name}\u0001\u0000` : `header\u0000${name}\u0000${value}\u0000`);
  }
  if (parts.body) {
    hash.update('body\u0000');
    hash.update(bodyForFingerprint(source.body));
  }
  return hash.digest();
}

/** Bytes and text as they are; a parsed body as JSON (the client's key order is kept). */
export function bodyForFingerprint(body: unknown): Uint8Array | string {
  if (body === undefined || body === null) return '';
  if (typeof body === 'string' || body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  return JSON.stringify(body, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value)) ?? '';
}

/**
 * Starts every derived key. A space, which a key read from the header can never hold
 * (visible ASCII only), so a derived key and a sent key never name the same operation.
 */
export const DERIVED_KEY_PREFIX = 'derived sha256:';

/**
 * The key of a request sent without one, on a route with `keyWhenMissing: 'derive'`: the
 * fingerprint's digest over the method, the path with its query, the `fingerprint.headers`
 * and the body's exact bytes, whatever the route's fingerprint settings. The path counts
 * even where the route pattern is the scope (`/accounts/:id/charges`): the same body sent to
 * two accounts is two operations. The principal and route scope are added to it as to a
 * sent key.
 */
export function derivedKey(
  headers: readonly string[],
  source: FingerprintSource & { readonly body: Uint8Array },
): string {
  const digest = requestFingerprint({ method: true, path: true, body: true, headers }, source) as Buffer;
  return `${DERIVED_KEY_PREFIX}${digest.toString('hex')}`;
}
