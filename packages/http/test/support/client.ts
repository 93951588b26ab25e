// A small HTTP client for the tests (the runtime's fetch), and lookups in the inbox table.
import { sql } from 'kysely';
import type { TestDatabase } from '../../../../test/support/postgres.ts';

export interface Reply {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  readonly ms: number;
  json(): unknown;
}

export interface PostOptions {
  /** The Idempotency-Key value; an array sends the header once per value; `undefined` sends none. */
  readonly key?: string | readonly string[];
  readonly body?: unknown;
  /** The body's exact text, sent as it is (instead of `body`). */
  readonly rawBody?: string;
  readonly headers?: Record<string, string>;
  /** Aborts the request (the client goes away). */
  readonly signal?: AbortSignal;
}

export async function post(baseUrl: string, path: string, options: PostOptions = {}): Promise<Reply> {
  const headers = new Headers(options.headers);
  headers.set('content-type', 'application/json');
  if (options.key !== undefined) {
    for (const value of typeof options.key === 'string' ? [options.key] : options.key) {
      headers.append('idempotency-key', value);
    }
  }
  const started = performance.now();
  const response = await fetch(`${baseUrl}${path}`, {
    method: 'POST',
    headers,
    body: options.rawBody ?? JSON.stringify(options.body ?? { amountCents: 100 }),
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  });
  const text = await response.text();
  return {
    status: response.status,
    headers: response.headers,
    text,
    ms: performance.now() - started,
    json: () => JSON.parse(text),
  };
}

export interface KeyRow {
  readonly message_id: string;
  readonly processed_at: Date;
  readonly result: { status: number; headers: [string, string][]; body: string; base64: boolean } | null;
}

/** The inbox rows of a consumer whose id holds this key. */
export async function keyRows(t: TestDatabase, consumer: string, key: string): Promise<KeyRow[]> {
  const { rows } = await sql<KeyRow>`
    SELECT message_id, processed_at, result FROM processed_messages
    WHERE consumer = ${consumer} AND strpos(message_id, ${JSON.stringify(key)}) > 0`.execute(t.db);
  return rows;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `condition` holds, checking every 20 ms; fails with `what` after `timeoutMs`. */
export async function waitFor(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Settles with the promise, or rejects naming `what` if it has not settled within `timeoutMs`. */
export function within<T>(what: string, promise: Promise<T>, timeoutMs = 60_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not settled within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}
