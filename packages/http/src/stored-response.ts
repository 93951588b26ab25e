/** Response headers as name/value pairs; a name may repeat. Names are lower case. */
export type HeaderPairs = readonly (readonly [string, string])[];

/**
 * A whole response: what a handler produced (as an adapter captured it), what is stored
 * with a key, and what is replayed. The body is complete: never a stream.
 */
export interface HttpResponseParts {
  readonly status: number;
  readonly headers: HeaderPairs;
  readonly body: Uint8Array | string;
}

/**
 * The JSON stored in the inbox row's `result` column. Text bodies are stored as text (a
 * JSON response stays readable in the table); anything else, and text that Postgres `jsonb`
 * cannot hold (NUL characters, unpaired surrogates), as base64.
 */
export interface StoredResponseJson {
  readonly v: 1;
  readonly status: number;
  readonly headers: [string, string][];
  readonly body: string;
  readonly base64: boolean;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The part of a response that is stored: its status, the headers in `storedHeaders`, its body. */
export function toStoredJson(response: HttpResponseParts, storedHeaders: ReadonlySet<string>): StoredResponseJson {
  const headers: [string, string][] = [];
  for (const [name, value] of response.headers) {
    if (storedHeaders.has(name)) headers.push([name, value]);
  }
  const { body } = response;
  let text: string | undefined;
  if (typeof body === 'string') text = body;
  else {
    try {
      text = utf8.decode(body);
    } catch {
      text = undefined;
    }
  }
  if (text !== undefined && isWellFormed(text) && !text.includes('\u0000')) {
    return { v: 1, status: response.status, headers, body: text, base64: false };
  }
  return { v: 1, status: response.status, headers, body: toBuffer(body).toString('base64'), base64: true };
}

/** Reads a stored response back; `undefined` when the row holds something else. */
export function fromStoredJson(value: unknown): HttpResponseParts | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const json = value as Partial<StoredResponseJson>;
  if (json.v !== 1 || typeof json.status !== 'number' || typeof json.body !== 'string') return undefined;
  if (!Array.isArray(json.headers)) return undefined;
  const headers: [string, string][] = [];
  for (const pair of json.headers as unknown[]) {
    if (!Array.isArray(pair) || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') return undefined;
    headers.push([pair[0], pair[1]]);
  }
  const body = json.base64 === true ? Buffer.from(json.body, 'base64') : json.body;
  return { status: json.status, headers, body };
}

/**
 * Response headers as pairs, from any of the shapes frameworks keep them in: a Fetch
 * `Headers`, or Node's `getHeaders()` record (numbers and arrays of strings as values).
 */
export function headerPairs(
  headers: Headers | Readonly<Record<string, string | number | readonly string[] | undefined>>,
): [string, string][] {
  const pairs: [string, string][] = [];
  if (typeof (headers as Headers).forEach === 'function' && typeof (headers as Headers).get === 'function') {
    const fetchHeaders = headers as Headers;
    fetchHeaders.forEach((value, name) => {
      if (name !== 'set-cookie') pairs.push([name, value]);
    });
    for (const cookie of fetchHeaders.getSetCookie()) pairs.push(['set-cookie', cookie]);
    return pairs;
  }
  for (const [name, value] of Object.entries(
    headers as Record<string, string | number | readonly string[] | undefined>,
  )) {
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    if (typeof value === 'string' || typeof value === 'number') pairs.push([lower, String(value)]);
    else for (const item of value) pairs.push([lower, item]);
  }
  return pairs;
}

/** A body as a Buffer, without copying bytes that already are one. */
export function toBuffer(body: Uint8Array | string): Buffer {
  return typeof body === 'string' ? Buffer.from(body) : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
}

/** `String.prototype.isWellFormed` (Node.js >= 20; not in the ES2023 lib this package compiles against). */
function isWellFormed(text: string): boolean {
  return (text as string & { isWellFormed(): boolean }).isWellFormed();
}
