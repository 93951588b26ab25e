/**
 * `@inboxkit/http/fastify`: the Idempotency-Key header for Fastify routes, as a plugin with a
 * per-route option.
 *
 * @module @inboxkit/http/fastify
 */

import { Transform } from 'node:stream';
import { ConfigurationError } from '@inboxkit/core';
import type {
  FastifyInstance,
  FastifyPluginAsync,
  FastifyReply,
  FastifyRequest,
  RequestPayload,
  RouteOptions,
} from 'fastify';
import type { Transaction } from 'kysely';
import { watchResponse } from './client-gone.js';
import { StreamingResponseError } from './errors.js';
import { createIdempotency, Idempotency, type IdempotencyContext } from './idempotency.js';
import type { IdempotencyOptions, RouteConfig, RouteIdempotencyOptions } from './idempotency-options.js';
import { enterHandler, leaveHandler } from './request-context.js';
import { type HttpResponseParts, headerPairs, toBuffer } from './stored-response.js';

export { idempotencyOf, transactionOf } from './request-context.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * Makes the route idempotent with the Idempotency-Key header (`@inboxkit/http/fastify`
     * must be registered first): `true`, or route options that override the plugin's.
     */
    idempotency?: boolean | RouteIdempotencyOptions<FastifyRequest>;
  }
  interface FastifyInstance {
    /** The idempotency store of `@inboxkit/http/fastify`: `app.idempotency.purge()` on a schedule. */
    idempotency: Idempotency<unknown, FastifyRequest>;
  }
}

/**
 * Options of the plugin: a store's options (it builds one), or a store made by
 * `createIdempotency`. Either holds a Kysely instance of any schema: the plugin itself only
 * uses the inbox table, and `transactionOf<DB>(request)` gives routes their typed view.
 */
export type FastifyIdempotencyOptions =
  // biome-ignore lint/suspicious/noExplicitAny: a Kysely instance typed with the application's schema.
  | IdempotencyOptions<any, FastifyRequest>
  // biome-ignore lint/suspicious/noExplicitAny: a store made with the application's schema.
  | { readonly idempotency: Idempotency<any, FastifyRequest> };

/** Methods that are idempotent by definition: marking them is a mistake, refused at registration. */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE']);

type Handler = RouteOptions['handler'];

/**
 * The Fastify plugin. Register it (awaited) before the routes, then mark routes with
 * `config: { idempotency: true }` (or route options). The route's handler runs inside the
 * key's transaction: get it with `transactionOf(request)`. Whatever it sends or returns is
 * serialized, stored with the key and committed before it is sent.
 *
 * @example
 * ```ts
 * await app.register(fastifyIdempotency, { db, consumer: 'payments-api', principal: (request) => request.user?.id })
 * app.post('/charges', { config: { idempotency: true } }, async (request, reply) => {
 *   const trx = transactionOf<DB>(request)
 *   const { amountCents } = request.body as { amountCents: number }
 *   const charge = await trx.insertInto('charges').values({ amount_cents: amountCents }).returningAll().executeTakeFirstOrThrow()
 *   return reply.code(201).send(charge)
 * })
 * ```
 */
export const fastifyIdempotency: FastifyPluginAsync<FastifyIdempotencyOptions> = async (fastify, options) => {
  const store = storeFrom(options);
  fastify.decorate('idempotency', store);
  fastify.addHook('onRoute', (routeOptions) => {
    const setting = routeOptions.config?.idempotency;
    if (setting === undefined || setting === false) return;
    const url = routeOptions.url;
    const methods = (Array.isArray(routeOptions.method) ? routeOptions.method : [routeOptions.method]).map((m) =>
      String(m).toUpperCase(),
    );
    if (setting !== true && (typeof setting !== 'object' || setting === null)) {
      throw new ConfigurationError(
        `Route ${methods.join(',')} ${url}: expected \`config.idempotency\` to be true or route options, got ${typeof setting}.`,
      );
    }
    const safe = methods.filter((m) => SAFE_METHODS.has(m));
    if (safe.length > 0) {
      throw new ConfigurationError(
        `Route ${safe.join(',')} ${url}: ${safe.join(' and ')} ${safe.length > 1 ? 'are' : 'is'} idempotent already; the Idempotency-Key header is for POST and PATCH (and other unsafe methods).`,
      );
    }
    let route: RouteConfig<FastifyRequest>;
    try {
      route = store.route({ route: url, ...(setting === true ? {} : setting) });
    } catch (error) {
      if (error instanceof ConfigurationError) {
        throw new ConfigurationError(`Route ${methods.join(',')} ${url}: ${error.message}`);
      }
      throw error;
    }
    if (route.keyWhenMissing === 'derive') {
      const hooks = routeOptions.preParsing;
      const headerKey = store.config.headerKey;
      const keep: PreParsingHook = (request, _reply, payload, done) => {
        if (request.headers[headerKey] !== undefined) return done(null, payload);
        done(null, keepRawBody(request, payload));
      };
      // Last, so that it sees the bytes the body parser reads (after any decoding hook).
      routeOptions.preParsing = [...(hooks === undefined ? [] : Array.isArray(hooks) ? hooks : [hooks]), keep];
    }
    const handler = routeOptions.handler;
    routeOptions.handler = function idempotentHandler(this: FastifyInstance, request, reply) {
      return handleIdempotent(this, store, route, handler, request, reply);
    } as Handler;
  });
};
Object.assign(fastifyIdempotency, {
  // What fastify-plugin does: no encapsulation, so the onRoute hook sees the app's routes.
  [Symbol.for('skip-override')]: true,
  [Symbol.for('fastify.display-name')]: '@inboxkit/http/fastify',
  [Symbol.for('plugin-meta')]: { name: '@inboxkit/http/fastify', fastify: '5.x' },
});

function storeFrom(options: FastifyIdempotencyOptions): Idempotency<unknown, FastifyRequest> {
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError('@inboxkit/http/fastify needs options: app.register(fastifyIdempotency, { db }).');
  }
  if ('idempotency' in options) {
    const keys = Object.keys(options).filter((key) => key !== 'idempotency');
    if (keys.length > 0) {
      throw new ConfigurationError(
        `Give either \`idempotency\` (a store) or the store's options, not both; found ${keys.join(', ')}.`,
      );
    }
    if (!(options.idempotency instanceof Idempotency)) {
      throw new ConfigurationError('Expected `idempotency` to be a store made by createIdempotency().');
    }
    return options.idempotency;
  }
  return createIdempotency<unknown, FastifyRequest>(options);
}

async function handleIdempotent(
  instance: FastifyInstance,
  store: Idempotency<unknown, FastifyRequest>,
  route: RouteConfig<FastifyRequest>,
  handler: Handler,
  request: FastifyRequest,
  reply: FastifyReply,
): Promise<FastifyReply> {
  const method = request.method.toUpperCase();
  const header = (name: string) => headerValue(request.headers[name]);
  const resolved = store.keyOf(
    route,
    request.headers[store.config.headerKey],
    { method, path: request.url, header },
    () => rawBodyOf(request),
  );
  if (resolved.error !== undefined) return sendParts(reply, store.problem(resolved.error));
  const before = reply.getHeaders();
  let ran = false;
  const gone = watchResponse(reply.raw);
  const answer = await store
    .execute(
      route,
      {
        request,
        key: resolved.key,
        keyDerived: resolved.derived,
        method,
        route: request.routeOptions.url ?? request.url,
        path: request.url,
        body: request.body,
        header,
        signal: gone.signal,
      },
      (trx, context) => {
        ran = true;
        return runHandler(instance, handler, request, reply, trx, context);
      },
    )
    .finally(() => gone.dispose());
  if (answer.kind === 'fresh') {
    const body = toBuffer(answer.response.body);
    return reply.send(body.length === 0 ? undefined : body);
  }
  if (ran) {
    // The handler ran but its answer is not the one sent (the commit failed): drop its headers.
    for (const name of Object.keys(reply.getHeaders())) reply.removeHeader(name);
    for (const [name, value] of Object.entries(before)) if (value !== undefined) reply.header(name, value);
  }
  return sendParts(reply, answer.response);
}

/**
 * Runs the route's handler with `reply.send` captured, then turns what it sent or returned
 * into a whole response, serialized as Fastify would (the route's response schema applies).
 */
async function runHandler(
  instance: FastifyInstance,
  handler: Handler,
  request: FastifyRequest,
  reply: FastifyReply,
  trx: Transaction<unknown>,
  context: IdempotencyContext,
): Promise<HttpResponseParts> {
  let sendCalled = false;
  let sentPayload: unknown;
  let onSend: ((payload: unknown) => void) | undefined;
  const sent = new Promise<unknown>((resolve) => {
    onSend = resolve;
  });
  // A reply is a thenable that settles once the response is sent: an async handler that
  // returns it (`return reply.send(x)`) would never settle while `send` is captured. Hide
  // `then` while the handler runs.
  Object.defineProperty(reply, 'then', { configurable: true, writable: true, value: undefined });
  Object.defineProperty(reply, 'send', {
    configurable: true,
    writable: true,
    value: function captureSend(payload?: unknown): FastifyReply {
      if (!sendCalled) {
        sendCalled = true;
        sentPayload = payload;
        onSend?.(payload);
      }
      return reply;
    },
  });
  enterHandler(request, trx, context);
  let payload: unknown;
  try {
    // A handler that has returned but not sent yet sends later, from a callback: wait for
    // it, unless the signal aborts (the time is up, the client is gone), which rolls back.
    const later = () => untilAborted(sent, context.signal);
    const returned: unknown = handler.call(instance, request, reply);
    if (isThenable(returned)) {
      const value = await returned;
      if (sendCalled) payload = sentPayload;
      else if (value === reply) payload = await later();
      else payload = value;
    } else if (sendCalled) payload = sentPayload;
    else if (returned !== undefined && returned !== reply) payload = returned;
    else payload = await later();
  } finally {
    leaveHandler(request);
    Reflect.deleteProperty(reply, 'send');
    Reflect.deleteProperty(reply, 'then');
  }
  if (payload instanceof Error) throw payload;
  if (reply.sent || reply.raw.headersSent) {
    throw new StreamingResponseError('the handler wrote to reply.raw or hijacked the reply.');
  }
  const body = serialize(reply, payload); // first: it may set the content type
  return { status: reply.statusCode, headers: headerPairs(reply.getHeaders()), body };
}

/** The payload's bytes, with the content type Fastify would give it. */
function serialize(reply: FastifyReply, payload: unknown): Uint8Array | string {
  if (payload === undefined) return '';
  if (typeof payload === 'object' && payload !== null) {
    const shape = payload as { pipe?: unknown; getReader?: unknown };
    if (typeof shape.pipe === 'function' || typeof shape.getReader === 'function' || payload instanceof Response) {
      throw new StreamingResponseError(
        `the handler sent a ${payload.constructor?.name ?? 'stream'}, which is sent as a stream.`,
      );
    }
    if (payload instanceof Uint8Array || ArrayBuffer.isView(payload)) {
      if (!reply.hasHeader('content-type')) reply.header('content-type', 'application/octet-stream');
      return new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
    }
  }
  if (typeof payload === 'string') {
    if (!reply.hasHeader('content-type')) reply.header('content-type', 'text/plain; charset=utf-8');
    return payload;
  }
  if (!reply.hasHeader('content-type')) reply.header('content-type', 'application/json; charset=utf-8');
  const serialized = reply.serialize(payload);
  return typeof serialized === 'string' || serialized instanceof Uint8Array ? serialized : new Uint8Array(serialized);
}

type PreParsingHook = (
  request: FastifyRequest,
  reply: FastifyReply,
  payload: RequestPayload,
  done: (error: Error | null, payload?: RequestPayload) => void,
) => void;

/** The body bytes of requests without a key on deriving routes, as they pass to the body parser. */
const rawBodies = new WeakMap<FastifyRequest, Buffer[]>();

/**
 * Passes the body through, keeping a copy of its bytes for the derived key: Fastify keeps
 * only the parsed body, and a key derived from that would make `{"a":1}` and `{"a": 1}`, or
 * a body with a duplicate member, the same request.
 */
function keepRawBody(request: FastifyRequest, payload: RequestPayload): RequestPayload {
  const chunks: Buffer[] = [];
  rawBodies.set(request, chunks);
  const copy = new Transform({
    transform(chunk: Buffer | string, _encoding, callback) {
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      chunks.push(bytes);
      callback(null, bytes);
    },
  });
  const passed = payload as RequestPayload & { receivedEncodedLength?: number };
  payload.on('error', (error) => copy.destroy(error));
  const piped = payload.pipe(copy) as Transform & { receivedEncodedLength?: number };
  // What Fastify checks against bodyLimit and Content-Length, from the stream it reads.
  Object.defineProperty(piped, 'receivedEncodedLength', {
    get: () => passed.receivedEncodedLength ?? chunks.reduce((sum, chunk) => sum + chunk.length, 0),
  });
  return piped;
}

/** The kept body bytes; empty for a request the hook ran for that carried none. */
function rawBodyOf(request: FastifyRequest): Uint8Array | undefined {
  const chunks = rawBodies.get(request);
  return chunks === undefined ? undefined : Buffer.concat(chunks);
}

/** Answers a stored or problem response. */
function sendParts(reply: FastifyReply, response: HttpResponseParts): FastifyReply {
  reply.code(response.status);
  const cookies: string[] = [];
  const values = new Map<string, string>();
  for (const [name, value] of response.headers) {
    if (name === 'set-cookie') cookies.push(value);
    else values.set(name, values.has(name) ? `${values.get(name)}, ${value}` : value);
  }
  for (const [name, value] of values) reply.header(name, value);
  if (cookies.length > 0) reply.header('set-cookie', cookies);
  const body = toBuffer(response.body);
  return reply.send(body.length === 0 ? undefined : body);
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value;
}

/** The promise's value, or a rejection with the signal's reason if it aborts first. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function';
}

export default fastifyIdempotency;
