/**
 * `@inboxkit/http/express`: the Idempotency-Key header for Express routes, as a middleware.
 *
 * @module @inboxkit/http/express
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { ConfigurationError } from '@inboxkit/core';
import { watchResponse } from './client-gone.js';
import { HandlerFailedError, KeyDerivationError, StreamingResponseError } from './errors.js';
import { createIdempotency, Idempotency } from './idempotency.js';
import type { IdempotencyOptions, RouteIdempotencyOptions } from './idempotency-options.js';
import { enterHandler, leaveHandler } from './request-context.js';
import { type HttpResponseParts, headerPairs, toBuffer } from './stored-response.js';

export { idempotencyOf, transactionOf } from './request-context.js';

/** The part of an Express request the middleware reads (an Express `Request` fits). */
export interface ExpressRequestLike extends IncomingMessage {
  /**
   * The parsed body: put `express.json()`, `express.raw()` or `express.text()` before the
   * middleware. `any`, as Express types it by default: Express infers the route's `req.body`
   * from its handlers, and an `unknown` here would make it `unknown` in the handlers after
   * the middleware too.
   */
  // biome-ignore lint/suspicious/noExplicitAny: Express's own default for a request body.
  body?: any;
  baseUrl?: string;
  originalUrl?: string;
  /** The matched route: its pattern, and its layers (the handlers after this middleware are guarded). */
  route?: { readonly path?: unknown; readonly stack?: unknown } | undefined;
}

/** An Express middleware, typed by shape. */
export type ExpressMiddleware = (req: ExpressRequestLike, res: ServerResponse, next: (error?: unknown) => void) => void;

/** What the middleware takes: a store's options (it builds one), or a store made by `createIdempotency`. */
export type ExpressIdempotencyOptions<DB = unknown> =
  | IdempotencyOptions<DB, ExpressRequestLike>
  | Idempotency<DB, ExpressRequestLike>;

type End = (chunk?: unknown, encoding?: unknown, callback?: unknown) => ServerResponse;

/**
 * The Express middleware. Put it on a route after the body parser and before the handler:
 * the rest of the route (the handler, and Express's error handling of what it throws) runs
 * inside the key's transaction, which `transactionOf(req)` gives. What it answers is
 * captured, stored with the key and committed before a byte is sent.
 *
 * The route's handlers after it are guarded, on Express 4 as on Express 5: a rejected
 * promise goes to `next(error)` (Express 4 drops it, and the request would hold its
 * transaction for good), and an error that reaches Express's default error page is
 * answered as a 500 problem instead. An async handler is waited for when the signal
 * (`idempotencyOf(req).signal`) aborts; a handler that has returned without answering is
 * given up then, and rolled back.
 *
 * `res.write()`, `res.flushHeaders()` and piping (streams, `res.sendFile`) are refused:
 * the transaction is rolled back and a 500 problem is answered.
 *
 * @example
 * ```ts
 * const idempotency = createIdempotency<DB, ExpressRequestLike>({ db, consumer: 'payments-api', principal: (req) => req.user?.id })
 * app.post('/charges', express.json(), idempotent(idempotency), async (req, res) => {
 *   const trx = transactionOf<DB>(req)
 *   const { amountCents } = req.body as { amountCents: number }
 *   const charge = await trx.insertInto('charges').values({ amount_cents: amountCents }).returningAll().executeTakeFirstOrThrow()
 *   res.status(201).json(charge)
 * })
 * ```
 */
export function idempotent<DB = unknown>(
  options: ExpressIdempotencyOptions<DB>,
  routeOptions?: RouteIdempotencyOptions<ExpressRequestLike>,
): ExpressMiddleware {
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError('idempotent(options): `options` must be a store or the store options, e.g. { db }.');
  }
  const store = options instanceof Idempotency ? options : createIdempotency<DB, ExpressRequestLike>(options);
  const route = store.route(routeOptions);
  const { headerKey, logger } = store.config;

  return function idempotencyMiddleware(req, res, next) {
    const method = (req.method ?? 'POST').toUpperCase();
    const path = req.originalUrl ?? req.url ?? '/';
    const header = (name: string) => {
      const value = req.headers[name];
      return Array.isArray(value) ? value.join(', ') : value;
    };
    const resolved = store.keyOf(route, req.headers[headerKey], { method, path, header }, () => rawBodyOf(req));
    if (resolved.error !== undefined) {
      if (resolved.error instanceof KeyDerivationError) {
        logger?.error(
          { method: req.method, url: req.originalUrl ?? req.url },
          "inboxkit/http: keyWhenMissing 'derive' needs the body's bytes: give the body parser `verify: keepRawBody` (express.json({ verify: keepRawBody })), or use express.raw()",
        );
      }
      writeParts(res, store.problem(resolved.error));
      return;
    }
    guardRouteHandlers(req, idempotencyMiddleware);
    const key = resolved.key;
    const before = res.getHeaders();
    const capture = new ResponseCapture(res);
    const gone = watchResponse(res);
    const failed = (error: unknown) => {
      logger?.error(
        { err: error, method: req.method, url: req.originalUrl ?? req.url },
        'inboxkit/http: idempotent route failed; rolled back, nothing stored',
      );
      if (res.headersSent) {
        res.destroy();
        return;
      }
      resetHeaders(res, before);
      const detail =
        error instanceof StreamingResponseError
          ? error.message
          : 'The request failed and was rolled back; nothing was stored. It may be retried with the same key.';
      writeParts(res, store.problem(new HandlerFailedError(detail, { cause: error })));
    };
    store
      .execute(
        route,
        {
          request: req,
          key,
          keyDerived: resolved.derived,
          method,
          route: routeName(req),
          path,
          body: req.body,
          header,
          signal: gone.signal,
        },
        (trx, context) => {
          enterHandler(req, trx, context);
          const captured = capture.start(req, context.signal);
          next();
          return captured.finally(() => leaveHandler(req));
        },
      )
      .then(
        (answer) => {
          capture.restore();
          gone.dispose();
          if (answer.kind === 'fresh') {
            // Express's own error page (finalhandler): no error handler of the app answered.
            if (!answer.stored && isDefaultErrorPage(answer.response)) {
              failed(capture.routeError ?? new Error(`the route answered Express's ${answer.response.status} page`));
              return;
            }
            capture.release(answer.response.body);
            return;
          }
          if (capture.started) resetHeaders(res, before);
          writeParts(res, answer.response);
        },
        (error: unknown) => {
          capture.restore();
          gone.dispose();
          failed(error);
        },
      );
  };
}

/** Body bytes kept by {@link keepRawBody}, by request. */
const rawBodies = new WeakMap<object, Buffer>();

/**
 * A body parser's `verify` callback that keeps the body's bytes, which a route with
 * `keyWhenMissing: 'derive'` hashes into the key of a request sent without one (Express
 * keeps only the parsed body). Give it to the parser before the middleware:
 * `express.json({ verify: keepRawBody })` (also `express.text()`, `express.urlencoded()`).
 */
export function keepRawBody(req: object, _res: unknown, body: Buffer): void {
  rawBodies.set(req, body);
}

/**
 * The bytes the request's body carried (after content decoding by the parser): kept by
 * {@link keepRawBody}, or the body of `express.raw()`, or none for a request without a
 * body. `undefined` when they are gone (parsed without `keepRawBody`, or not read at all).
 */
function rawBodyOf(req: ExpressRequestLike): Uint8Array | undefined {
  const kept = rawBodies.get(req);
  if (kept !== undefined) return kept;
  if (req.body instanceof Uint8Array) return req.body;
  const length = req.headers['content-length'];
  const noBody = req.headers['transfer-encoding'] === undefined && (length === undefined || length === '0');
  return noBody ? new Uint8Array(0) : undefined;
}

/** Handlers already guarded (a route's layers are guarded once, by the first request). */
const guardedHandlers = new WeakSet<object>();
/** The capture of each request whose route runs in a key's transaction. */
const captures = new WeakMap<object, ResponseCapture>();

type RouteHandler = (this: unknown, ...args: unknown[]) => unknown;

/**
 * Guards the route's handlers that come after the middleware. Express 4 drops the promise
 * an async handler returns, so one that rejects never answers and its request holds the
 * transaction, connection and key for good: a guarded handler's rejection goes to
 * `next(error)` as Express 5 does, and the capture waits for the promise before giving up
 * on an aborted request. Returns nothing, so Express 5 does not handle the promise twice.
 */
function guardRouteHandlers(req: ExpressRequestLike, middleware: object): void {
  const stack = req.route?.stack;
  if (!Array.isArray(stack)) return;
  const layers = stack as { handle?: unknown }[];
  const index = layers.findIndex((layer) => layer?.handle === middleware);
  if (index === -1) return;
  for (const layer of layers.slice(index + 1)) {
    const handle = layer.handle;
    if (typeof handle !== 'function' || guardedHandlers.has(handle)) continue;
    const guarded = guard(handle as RouteHandler);
    guardedHandlers.add(guarded);
    layer.handle = guarded;
  }
}

/** Keeps the arity: Express tells error handlers (four parameters) from others by it. */
function guard(handle: RouteHandler): RouteHandler {
  if (handle.length === 4) {
    return function guardedErrorHandler(this: unknown, error: unknown, req: unknown, res: unknown, next: unknown) {
      watch(
        call(() => handle.call(this, error, req, res, next), req),
        req,
        next,
      );
    };
  }
  return function guardedHandler(this: unknown, req: unknown, res: unknown, next: unknown) {
    watch(
      call(() => handle.call(this, req, res, next), req),
      req,
      next,
    );
  };
}

/** Calls a handler; what it throws is noted for the log, then left to Express (`next(error)`). */
function call(run: () => unknown, req: unknown): unknown {
  try {
    return run();
  } catch (error) {
    if (typeof req === 'object' && req !== null) captures.get(req)?.noteError(error);
    throw error;
  }
}

function watch(returned: unknown, req: unknown, next: unknown): void {
  if (!isThenable(returned)) return;
  const settled = Promise.resolve(returned).then(
    () => undefined,
    (error: unknown) => {
      const failure = error ?? new Error('Rejected promise');
      if (typeof req === 'object' && req !== null) captures.get(req)?.noteError(failure);
      if (typeof next === 'function') next(failure);
    },
  );
  if (typeof req === 'object' && req !== null) captures.get(req)?.track(settled);
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function';
}

/**
 * Express's default error page, written by finalhandler when no error handler of the app
 * answered: HTML with the security headers only it sets together.
 */
function isDefaultErrorPage(response: HttpResponseParts): boolean {
  if (response.status < 500) return false;
  const header = (name: string) => response.headers.find(([n]) => n === name)?.[1];
  return (
    header('content-security-policy') === "default-src 'none'" &&
    header('x-content-type-options') === 'nosniff' &&
    (header('content-type') ?? '').startsWith('text/html')
  );
}

/**
 * Holds a response's writes while the handler runs in the transaction: `writeHead` is
 * applied to the response object without sending, `end` is captured, `write` and
 * `flushHeaders` (streaming) fail the run.
 */
class ResponseCapture {
  readonly #res: ServerResponse;
  readonly #saved = new Map<string, PropertyDescriptor | undefined>();
  #pendingCallback: (() => void) | undefined;
  #settled = false;
  #request: object | undefined;
  #stopWatching: (() => void) | undefined;
  /** Async handlers of the route still running. */
  #running = 0;
  /** Run once no async handler is running. */
  #whenIdle: (() => void)[] = [];
  started = false;
  /** The last error a guarded handler rejected with. */
  routeError: unknown;

  constructor(res: ServerResponse) {
    this.#res = res;
  }

  /** An async handler of the route is running until `settled` settles. */
  track(settled: Promise<void>): void {
    this.#running++;
    void settled.finally(() => {
      if (--this.#running > 0) return;
      for (const callback of this.#whenIdle.splice(0)) callback();
    });
  }

  noteError(error: unknown): void {
    this.routeError = error;
  }

  /**
   * Starts capturing; the promise settles with the whole response, or fails on streaming,
   * or with the signal's reason once it aborts and no async handler is running.
   */
  start(
    req: object,
    signal: AbortSignal,
  ): Promise<HttpResponseParts & { readonly encoding: BufferEncoding | undefined }> {
    this.started = true;
    this.#request = req;
    captures.set(req, this);
    const res = this.#res;
    return new Promise((resolve, reject) => {
      const settle = (action: () => void): boolean => {
        if (this.#settled) return false;
        this.#settled = true;
        action();
        return true;
      };
      const giveUp = () => settle(() => reject(signal.reason));
      const onAbort = () => {
        if (this.#running === 0) giveUp();
        else this.#whenIdle.push(giveUp);
      };
      if (signal.aborted) onAbort();
      else {
        signal.addEventListener('abort', onAbort, { once: true });
        this.#stopWatching = () => signal.removeEventListener('abort', onAbort);
      }
      const streaming = (what: string) =>
        settle(() => reject(new StreamingResponseError(`the handler called ${what}, which sends the body in parts.`)));
      this.#patch('writeHead', function writeHead(statusCode: number, ...rest: unknown[]) {
        res.statusCode = statusCode;
        const last = rest[rest.length - 1];
        if (typeof rest[0] === 'string') res.statusMessage = rest[0];
        if (typeof last === 'object' && last !== null) applyHeaders(res, last);
        return res;
      });
      this.#patch('write', function write() {
        streaming('res.write()');
        return true;
      });
      this.#patch('flushHeaders', function flushHeaders() {
        streaming('res.flushHeaders()');
      });
      const end: End = (chunk, encoding, callback) => {
        const cb = [chunk, encoding, callback].find((arg) => typeof arg === 'function') as (() => void) | undefined;
        const body = typeof chunk === 'function' || chunk === undefined || chunk === null ? '' : chunk;
        const enc = typeof encoding === 'string' ? (encoding as BufferEncoding) : undefined;
        settle(() => {
          this.#pendingCallback = cb;
          if (typeof body !== 'string' && !(body instanceof Uint8Array)) {
            reject(new TypeError(`res.end() was given a ${typeof body}; give a string or a Buffer.`));
            return;
          }
          const text = typeof body === 'string' && enc !== undefined && enc !== 'utf8' && enc !== 'utf-8';
          resolve({
            status: res.statusCode,
            headers: headerPairs(res.getHeaders() as Readonly<Record<string, string | number | string[] | undefined>>),
            body: text ? Buffer.from(body, enc) : body,
            encoding: enc,
          });
        });
        return res;
      };
      this.#patch('end', end);
    });
  }

  /** Puts the response's own methods back. */
  restore(): void {
    this.#stopWatching?.();
    if (this.#request !== undefined) captures.delete(this.#request);
    for (const [name, descriptor] of this.#saved) {
      if (descriptor === undefined) Reflect.deleteProperty(this.#res, name);
      else Object.defineProperty(this.#res, name, descriptor);
    }
    this.#saved.clear();
  }

  /** Sends the captured response, after the commit. */
  release(body: Uint8Array | string): void {
    const callback = this.#pendingCallback;
    this.#res.end(toBuffer(body), callback);
  }

  #patch(name: string, value: unknown): void {
    this.#saved.set(name, Object.getOwnPropertyDescriptor(this.#res, name));
    Object.defineProperty(this.#res, name, { configurable: true, writable: true, value });
  }
}

/** The route pattern, mount path included, when Express matched one; else the path. */
function routeName(req: ExpressRequestLike): string {
  const pattern = req.route?.path;
  if (typeof pattern === 'string') return `${req.baseUrl ?? ''}${pattern}`;
  const url = req.originalUrl ?? req.url ?? '/';
  const query = url.indexOf('?');
  return query === -1 ? url : url.slice(0, query);
}

function applyHeaders(res: ServerResponse, headers: object): void {
  if (Array.isArray(headers)) {
    for (let i = 0; i + 1 < headers.length; i += 2) res.setHeader(String(headers[i]), String(headers[i + 1]));
    return;
  }
  for (const [name, value] of Object.entries(headers as Record<string, unknown>)) {
    if (value === undefined) continue;
    res.setHeader(name, Array.isArray(value) ? value.map(String) : String(value));
  }
}

function resetHeaders(res: ServerResponse, before: OutgoingHttpHeaders): void {
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  for (const [name, value] of Object.entries(before)) if (value !== undefined) res.setHeader(name, value);
}

/** Writes a stored or problem response. */
function writeParts(res: ServerResponse, response: HttpResponseParts): void {
  res.statusCode = response.status;
  const grouped = new Map<string, string[]>();
  for (const [name, value] of response.headers) {
    const values = grouped.get(name);
    if (values === undefined) grouped.set(name, [value]);
    else values.push(value);
  }
  for (const [name, values] of grouped) {
    res.setHeader(name, name === 'set-cookie' || values.length > 1 ? values : (values[0] ?? ''));
  }
  const body = toBuffer(response.body);
  res.setHeader('content-length', body.length);
  res.end(body);
}
