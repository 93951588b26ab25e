/**
 * What Postgres refuses to store, checked before a statement rather than discovered by a
 * failing one: `text` and `jsonb` cannot hold NUL (22021, 22P05), and `jsonb` refuses a
 * lone UTF-16 surrogate (22P05). A value inboxkit writes itself that held one would fail
 * the same way on every redelivery (docs/design.md, "Liveness").
 */

// biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is exactly what is looked for.
const UNSTORABLE_CHARS = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** `text` with NUL and lone surrogates replaced by U+FFFD, for what inboxkit writes itself (error details). */
export function storableText(text: string): string {
  return text.replace(UNSTORABLE_CHARS, '\uFFFD');
}

/** True when `text` holds a character Postgres `text`/`jsonb` cannot store. */
export function hasUnstorableChars(text: string): boolean {
  UNSTORABLE_CHARS.lastIndex = 0;
  const found = UNSTORABLE_CHARS.test(text);
  UNSTORABLE_CHARS.lastIndex = 0;
  return found;
}

/**
 * An escape `JSON.stringify` writes for NUL (`\u0000`) or a lone surrogate (`\udXXX`; a
 * well-formed pair is written as is), preceded by an even number of backslashes so that
 * it is an escape and not an escaped backslash followed by text.
 */
const UNSTORABLE_ESCAPE = /(?<!\\)(?:\\\\)*\\u(?:0000|d[89a-f][0-9a-f]{2})/i;

/** True when JSON text made by `JSON.stringify` holds a string jsonb refuses. Cheap: one scan, no parse. */
export function hasUnstorableJson(json: string): boolean {
  return json.includes('\\u') && UNSTORABLE_ESCAPE.test(json);
}

/** JSON of inboxkit's own records (dead-letter details), every string made storable. */
export function storableJson(value: unknown): string {
  return JSON.stringify(value, (_key, inner: unknown) => (typeof inner === 'string' ? storableText(inner) : inner));
}
