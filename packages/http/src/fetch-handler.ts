import { ConfigurationError } from '@inboxkit/core';
import type { Transaction } from 'kysely';
import { watchRequestSignal } from './client-gone.js';
import { StreamingResponseError } from './errors.js';
import { createIdempotency, Idempotency, type IdempotencyContext } from './idempotency.js';
import type { IdempotencyOptions, RouteIdempotencyOptions } from './idempotency-options.js';
import { type HttpResponseParts, headerPairs } from './stored-response.js';

/**
 * A route handler over the Fetch API. Every write it makes through `trx` commits together
 * with the key and the stored response, or not at all. It receives the request with its
 * body intact.
 */
export type FetchIdempotentHandler<DB> = (
  trx: Transaction<DB>,
  request: Request,
  context: IdempotencyContext,
) => Response | Promise<Response>;

/** Options of {@link idempotent}: a store's options (it builds one), or a store, plus the route's own. */
export type IdempotentFetchOptions<DB> =
  | (IdempotencyOptions<DB, Request> & { readonly route?: string })
  | ({ readonly idempotency: Idempotency<DB, Request> } & RouteIdempotencyOptions<Request>);

/** A Fetch API handler: what Hono, Bun, Deno, Next.js route handlers and `srvx` take. */
export type FetchHandler = (request: Request) => Promise<Response>;

/** Statuses whose responses have no body (the Fetch API refuses one). */
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

/**
 * Makes a Fetch API handler idempotent with the `Idempotency-Key` header.
 *
 * - no key: 400 problem, or with `keyWhenMissing: 'derive'` a key derived from the method,
 *   path, body bytes (and `fingerprint.headers`); a bad key: 400 problem;
 * - a new key: the handler runs with a transaction; its response (status, `storedHeaders`,
 *   body) is stored with the key in that transaction, which commits, then it is answered;
 * - a completed key: the stored response, with `Idempotent-Replayed: true`, without running
 *   the handler; the same key with a different request: 422 (or 409);
 * - a key in flight: waits up to `inFlightWaitMs` (without a connection), then 409 with `Retry-After`;
 * - a handler that throws: rolled back, nothing stored, the error is rethrown for the
 *   server's own error handling; a 5xx response: rolled back, nothing stored, answered;
 * - a handler past `handlerTimeoutMs`: rolled back, answered 503 (`handler-timeout`).
 *
 * The request the handler gets carries `context.signal`, aborted at `handlerTimeoutMs` and
 * when the client goes away (the server's `request.signal` aborts).
 *
 * The response body must be complete when the handler returns (a string, bytes, JSON, a
 * Blob, form data): a body that has to wait for I/O or timers is a streaming body, and is
 * refused with {@link StreamingResponseError}, rolled back.
 *
 * @throws `ConfigurationError` (from `@inboxkit/core`) (`code: 'INBOX_CONFIGURATION'`) for a
 * handler that is not a function or a missing or invalid option.
 *
 * @example
 * ```ts
 * const handler = idempotent<DB>(async (trx, request) => {
 *   const { amountCents } = await request.json()
 *   const charge = await trx.insertInto('charges').values({ amount_cents: amountCents })
 *     .returningAll().executeTakeFirstOrThrow()
 *   return Response.json(charge, { status: 201 })
 * }, { db, consumer: 'payments-api', route: '/charges', principal: clientIdOf })
 * ```
 */
export function idempotent<DB>(handler: FetchIdempotentHandler<DB>, options: IdempotentFetchOptions<DB>): FetchHandler {
  if (typeof handler !== 'function') {
    throw new ConfigurationError(
      'idempotent(handler, options): `handler` must be a function (trx, request) => Response.',
    );
  }
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError('idempotent(handler, options): `options` must be an object, e.g. { db }.');
  }
  let store: Idempotency<DB, Request>;
  let routeOptions: RouteIdempotencyOptions<Request> | undefined;
  if ('idempotency' in options) {
    const { idempotency, ...rest } = options;
    if (!(idempotency instanceof Idempotency)) {
      throw new ConfigurationError('Expected `idempotency` to be a store made by createIdempotency().');
    }
    store = idempotency;
    routeOptions = rest;
  } else {
    const { route, ...rest } = options;
    store = createIdempotency<DB, Request>(rest);
    routeOptions = route === undefined ? undefined : { route };
  }
  const route = store.route(routeOptions);
  const { headerName } = store.config;

  return async function idempotentFetchHandler(request: Request): Promise<Response> {
    const value = request.headers.get(headerName);
    const url = new URL(request.url);
    const method = request.method.toUpperCase();
    const path = url.pathname + url.search;
    const header = (name: string) => request.headers.get(name) ?? undefined;
    // The body is read before the key only when the key is to be derived from its bytes.
    let body = value === null && route.keyWhenMissing === 'derive' ? await readBody(request) : undefined;
    const resolved = store.keyOf(route, value, { method, path, header }, () => body ?? new Uint8Array(0));
    if (resolved.error !== undefined) return toFetchResponse(store.problem(resolved.error));
    if (body === undefined) body = await readBody(request);
    const gone = watchRequestSignal(request.signal);
    const answer = await store
      .execute(
        route,
        {
          request,
          key: resolved.key,
          keyDerived: resolved.derived,
          method,
          route: url.pathname,
          path,
          body,
          header,
          signal: gone.signal,
        },
        async (trx, context) => {
          const response = await handler(
            trx,
            new Request(request, { signal: context.signal, ...(body === null ? {} : { body: bodyInit(body) }) }),
            context,
          );
          if (!(response instanceof Response)) {
            throw new TypeError(`An idempotent Fetch handler must return a Response, got ${describe(response)}.`);
          }
          return {
            status: response.status,
            statusText: response.statusText,
            headers: headerPairs(response.headers),
            allHeaders: response.headers,
            body: await readWholeBody(response),
          };
        },
      )
      .finally(() => gone.dispose());
    if (answer.kind === 'fresh') {
      const { status, statusText, allHeaders, body: responseBody } = answer.response;
      return new Response(NULL_BODY_STATUSES.has(status) ? null : bodyInit(responseBody), {
        status,
        statusText,
        headers: allHeaders,
      });
    }
    return toFetchResponse(answer.response);
  };
}

/** The request body's bytes, `null` when it has none. */
async function readBody(request: Request): Promise<Uint8Array | null> {
  return request.body === null ? null : new Uint8Array(await request.arrayBuffer());
}

/** A stored or problem response as a Fetch `Response`. */
export function toFetchResponse(response: HttpResponseParts): Response {
  const headers = new Headers();
  for (const [name, value] of response.headers) headers.append(name, value);
  const body = NULL_BODY_STATUSES.has(response.status) ? null : bodyInit(response.body);
  return new Response(body, { status: response.status, headers });
}

/**
 * Reads a response body that is complete, or throws {@link StreamingResponseError}.
 *
 * "Complete" means readable to its end without waiting for I/O or timers: a body built
 * from a string, bytes, JSON, a Blob, URLSearchParams or FormData, or a ReadableStream
 * that already holds all its chunks and is closed. Each read must settle before the next
 * turn of the event loop; one that does not is a body still being produced (a file or
 * network stream, server-sent events), which can be neither stored nor replayed.
 * `text/event-stream` is refused before any read.
 */
export async function readWholeBody(response: Response): Promise<Uint8Array> {
  if (response.bodyUsed) throw new TypeError('The handler returned a Response whose body was already read.');
  const type = response.headers.get('content-type') ?? '';
  if (/^\s*text\/event-stream/i.test(type)) {
    await response.body?.cancel().catch(() => {});
    throw new StreamingResponseError('the response is text/event-stream (server-sent events).');
  }
  const stream = response.body;
  if (stream === null) return new Uint8Array(0);
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let length = 0;
  for (;;) {
    const next = await readBeforeNextTurn(reader);
    if (next === 'pending') {
      await reader.cancel().catch(() => {});
      throw new StreamingResponseError(
        `its body was still being produced when the handler returned (after ${length} bytes): a stream that waits on I/O or timers.`,
      );
    }
    if (next.done) break;
    const chunk: unknown = next.value;
    if (!(chunk instanceof Uint8Array)) {
      await reader.cancel().catch(() => {});
      throw new TypeError(`A response body stream yielded a ${describe(chunk)}; a stream of Uint8Array was expected.`);
    }
    chunks.push(chunk);
    length += chunk.byteLength;
  }
  if (chunks.length === 1 && chunks[0] !== undefined) return chunks[0];
  return Buffer.concat(chunks, length);
}

function readBeforeNextTurn(
  reader: ReadableStreamDefaultReader<Uint8Array>,
): Promise<ReadableStreamReadResult<Uint8Array> | 'pending'> {
  return new Promise((resolve, reject) => {
    const timer = setImmediate(() => resolve('pending'));
    reader.read().then(
      (result) => {
        clearImmediate(timer);
        resolve(result);
      },
      (error: unknown) => {
        clearImmediate(timer);
        reject(error);
      },
    );
  });
}

/** Bytes over an `ArrayBuffer` (never a `SharedArrayBuffer` here), as the DOM typings want them. */
function bodyInit(body: Uint8Array | string): string | Uint8Array<ArrayBuffer> {
  return body as string | Uint8Array<ArrayBuffer>;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value !== 'object') return typeof value;
  return value.constructor?.name ?? 'object';
}
