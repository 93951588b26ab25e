// @inboxkit/http/express: the Idempotency-Key header for Express routes, as a middleware.
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { ConfigurationError } from '@inboxkit/core';
import { HandlerFailedError, StreamingResponseError } from './errors.js';
import { createIdempotency, Idempotency } from './idempotency.js';
import type { IdempotencyOptions, RouteIdempotencyOptions } from './idempotency-options.js';
import { enterHandler, leaveHandler } from './request-context.js';
import { type HttpResponseParts, headerPairs, toBuffer } from './stored-response.js';

export { idempotencyOf, transactionOf } from './request-context.js';

/** The part of an Express request the middleware reads (an Express `Request` fits). */
export interface ExpressRequestLike extends IncomingMessage {
  /** The parsed body: put `express.json()`, `express.raw()` or `express.text()` before the middleware. */
  body?: unknown;
  baseUrl?: string;
  originalUrl?: string;
  route?: { readonly path?: unknown } | undefined;
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
 * `res.write()`, `res.flushHeaders()` and piping (streams, `res.sendFile`) are refused:
 * the transaction is rolled back and a 500 problem is answered.
 *
 * @example
 * ```ts
 * const idempotency = createIdempotency<DB, ExpressRequestLike>({ db, consumer: 'payments-api' })
 * app.post('/charges', express.json(), idempotent(idempotency), async (req, res) => {
 *   const trx = transactionOf<DB>(req)
 *   const charge = await trx.insertInto('charges').values(...).returningAll().executeTakeFirstOrThrow()
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
    const reading = store.readKey(req.headers[headerKey]);
    if (reading.error !== undefined) {
      writeParts(res, store.problem(reading.error));
      return;
    }
    const key = reading.key;
    const before = res.getHeaders();
    const capture = new ResponseCapture(res);
    store
      .execute(
        route,
        {
          request: req,
          key,
          method: (req.method ?? 'POST').toUpperCase(),
          route: routeName(req),
          path: req.originalUrl ?? req.url ?? '/',
          body: req.body,
          header: (name) => {
            const value = req.headers[name];
            return Array.isArray(value) ? value.join(', ') : value;
          },
        },
        (trx, context) => {
          enterHandler(req, trx, context);
          const captured = capture.start();
          next();
          return captured.finally(() => leaveHandler(req));
        },
      )
      .then(
        (answer) => {
          capture.restore();
          if (answer.kind === 'fresh') {
            capture.release(answer.response.body);
            return;
          }
          if (capture.started) resetHeaders(res, before);
          writeParts(res, answer.response);
        },
        (error: unknown) => {
          capture.restore();
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
        },
      );
  };
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
  started = false;

  constructor(res: ServerResponse) {
    this.#res = res;
  }

  /** Starts capturing; the promise settles with the whole response, or fails on streaming. */
  start(): Promise<HttpResponseParts & { readonly encoding: BufferEncoding | undefined }> {
    this.started = true;
    const res = this.#res;
    return new Promise((resolve, reject) => {
      const settle = (action: () => void): boolean => {
        if (this.#settled) return false;
        this.#settled = true;
        action();
        return true;
      };
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
