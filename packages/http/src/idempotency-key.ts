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
 * The draft defines the field as a Structured Field Item whose value is a String
 * (`Idempotency-Key: "8e03..."`), which may carry parameters (`"8e03...";v=1`); most APIs
 * and clients (Stripe's among them) send the bare value. Both are accepted: a value that
 * starts with a double quote must be a valid sf-string Item (RFC 8941), whose parameters
 * are ignored as the draft says, and is unquoted. The key itself must then be 1 to
 * `maxKeyLength` visible ASCII characters: an sf-string may hold spaces, a key may not.
 * Two header fields (joined by `, ` on the way in) fail that rule.
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
  if (key.trimStart().startsWith('"')) {
    const unquoted = sfStringItem(key);
    if (unquoted === undefined) {
      return {
        error: new InvalidIdempotencyKeyError(
          `${headerName} starts with a double quote but is not a valid structured-field string (with optional parameters, RFC 8941); send "key" or the bare key.`,
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

/**
 * Parses an RFC 8941 Item whose bare item is a String (section 4.2.3): the string, then
 * parameters (`;key` or `;key=value`, each value any bare item), with spaces around.
 * Returns the string, or `undefined` when the text is not such an Item.
 */
function sfStringItem(text: string): string | undefined {
  const input = { text, at: skipSpaces(text, 0) };
  const key = sfString(input);
  if (key === undefined) return undefined;
  while (input.at < text.length && text[input.at] === ';') {
    input.at = skipSpaces(text, input.at + 1);
    if (!parameterKey(input)) return undefined;
    if (text[input.at] === '=') {
      input.at++;
      if (!bareItem(input)) return undefined;
    }
  }
  return skipSpaces(text, input.at) === text.length ? key : undefined;
}

interface Input {
  readonly text: string;
  at: number;
}

function skipSpaces(text: string, at: number): number {
  while (text[at] === ' ') at++;
  return at;
}

/** RFC 8941 section 4.2.5: `"` then printable ASCII with `\"` and `\\` escapes, then `"`. */
function sfString(input: Input): string | undefined {
  const { text } = input;
  if (text[input.at] !== '"') return undefined;
  let out = '';
  for (let i = input.at + 1; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x5c) {
      const next = text[++i];
      if (next !== '"' && next !== '\\') return undefined;
      out += next;
    } else if (c === 0x22) {
      input.at = i + 1;
      return out;
    } else if (c < 0x20 || c > 0x7e) {
      return undefined;
    } else {
      out += text[i];
    }
  }
  return undefined;
}

const PARAMETER_KEY = /^[a-z*][a-z0-9_.*-]*/;
const NUMBER = /^-?(?:\d{1,12}\.\d{1,3}|\d{1,15})(?![\d.])/;
const TOKEN = /^[A-Za-z*][!#$%&'*+.^_`|~0-9A-Za-z:/-]*/;
const BYTE_SEQUENCE = /^:[A-Za-z0-9+/]*={0,2}:/;
const BOOLEAN = /^\?[01]/;
/** RFC 9651 additions: a Date (`@` and an integer) and a Display String (`%"` with `%xx` escapes). */
const DATE = /^@-?\d{1,15}(?![\d.])/;
const DISPLAY_STRING = /^%"(?:[\x20-\x21\x23-\x24\x26-\x7e]|%[0-9a-f]{2})*"/;

function parameterKey(input: Input): boolean {
  return consume(input, PARAMETER_KEY);
}

/** Any bare item (section 4.2.3.1): what a parameter's value may be. */
function bareItem(input: Input): boolean {
  if (input.text[input.at] === '"') return sfString(input) !== undefined;
  return [NUMBER, TOKEN, BYTE_SEQUENCE, BOOLEAN, DATE, DISPLAY_STRING].some((pattern) => consume(input, pattern));
}

function consume(input: Input, pattern: RegExp): boolean {
  const match = pattern.exec(input.text.slice(input.at));
  if (match === null) return false;
  input.at += match[0].length;
  return true;
}
