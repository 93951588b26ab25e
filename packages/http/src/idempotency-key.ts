import { IdempotencyKeyMissingError, type IdempotencyProblemError, InvalidIdempotencyKeyError } from './errors.js';

/** A header value read into a key, or the problem that makes it unusable. */
export type KeyReading =
  | { readonly key: string; readonly error?: undefined }
  | { readonly error: IdempotencyProblemError };

/** Visible US-ASCII (VCHAR, %x21-7E): no spaces, no controls, nothing beyond ASCII. */
const VISIBLE_ASCII = /^[\x21-\x7e]+$/;

/**
 * Reads the key from the header value.
 *
 * The draft defines the field as a Structured Field String (`Idempotency-Key: "8e03..."`);
 * most APIs and clients (Stripe's among them) send the bare value. Both are accepted: a
 * value that starts with a double quote must be a valid sf-string and is unquoted. The key
 * itself must then be 1 to `maxKeyLength` visible ASCII characters: an sf-string may hold
 * spaces, a key may not. Two header fields (joined by `, ` on the way in) fail that rule.
 */
export function readIdempotencyKey(
  value: string | readonly string[] | null | undefined,
  headerName: string,
  maxKeyLength: number,
): KeyReading {
  if (value === undefined || value === null) return { error: new IdempotencyKeyMissingError(headerName) };
  if (typeof value !== 'string') {
    if (value.length === 1 && value[0] !== undefined) return readIdempotencyKey(value[0], headerName, maxKeyLength);
    return {
      error: new InvalidIdempotencyKeyError(`Send exactly one ${headerName} header field, not ${value.length}.`),
    };
  }
  let key = value;
  if (key.startsWith('"')) {
    const unquoted = unquoteSfString(key);
    if (unquoted === undefined) {
      return {
        error: new InvalidIdempotencyKeyError(
          `${headerName} starts with a double quote but is not a valid structured-field string; send "key" or the bare key.`,
        ),
      };
    }
    key = unquoted;
  }
  if (key.length === 0) return { error: new InvalidIdempotencyKeyError(`${headerName} is empty.`) };
  if (key.length > maxKeyLength) {
    return {
      error: new InvalidIdempotencyKeyError(
        `${headerName} is ${key.length} characters long; the limit is ${maxKeyLength}.`,
      ),
    };
  }
  if (!VISIBLE_ASCII.test(key)) {
    return {
      error: new InvalidIdempotencyKeyError(
        `${headerName} may hold visible ASCII characters only (no spaces, controls or non-ASCII; one header field only); a UUID fits.`,
      ),
    };
  }
  return { key };
}

/** RFC 8941 section 4.2.5: `"` then printable ASCII with `\"` and `\\` escapes, then `"`. */
function unquoteSfString(text: string): string | undefined {
  let out = '';
  for (let i = 1; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x5c) {
      const next = text[++i];
      if (next !== '"' && next !== '\\') return undefined;
      out += next;
    } else if (c === 0x22) {
      return i === text.length - 1 ? out : undefined;
    } else if (c < 0x20 || c > 0x7e) {
      return undefined;
    } else {
      out += text[i];
    }
  }
  return undefined;
}
