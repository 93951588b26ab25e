import { createHash } from 'node:crypto';
import {
  createInbox,
  hasCode,
  type Inbox,
  NonRetryableError,
  type PurgeOptions,
  type PurgeResult,
} from '@inboxkit/core';
import { databaseFailure, forgetExpiredKey } from '@inboxkit/core/adapter';
import type { Transaction } from 'kysely';
import {
  IdempotencyKeyInFlightError,
  IdempotencyKeyReusedError,
  type IdempotencyProblemError,
  IdempotencyStoreUnavailableError,
  KeyDerivationError,
  RequestTimeoutError,
  StoredResponseError,
} from './errors.js';
import { type KeyReading, readIdempotencyKey } from './idempotency-key.js';
import {
  compileIdempotencyOptions,
  compileRouteOptions,
  type IdempotencyConfig,
  type IdempotencyOptions,
  type RouteConfig,
  type RouteIdempotencyOptions,
} from './idempotency-options.js';
import { problemResponse } from './problem.js';
import { derivedKey, type FingerprintSource, requestFingerprint } from './request-fingerprint.js';
import { compileSetLockTimeout, type QueryRunner } from './sql/set-lock-timeout.js';
import { fromStoredJson, type HttpResponseParts, toStoredJson } from './stored-response.js';

/** One request, as an adapter describes it to {@link Idempotency.execute}. */
export interface IdempotentCall<Req> extends FingerprintSource {
  /** The framework's request object, handed to the `principal` resolver. */
  readonly request: Req;
  /** The key, as {@link Idempotency.keyOf} (or {@link Idempotency.readKey}) gave it. */
  readonly key: string;
  /** Whether the key was derived from the request (no header, `keyWhenMissing: 'derive'`). */
  readonly keyDerived?: boolean;
  /** The route's name in the key scope when the route options give none: its pattern, or the URL path. */
  readonly route: string;
  /** Aborted when the client goes away (reason: `ClientDisconnectedError`); the handler's signal follows it. */
  readonly signal?: AbortSignal;
}

/** What the handler is told besides its transaction and request. */
export interface IdempotencyContext {
  /** The client's key, or the key derived from the request (`keyDerived`). */
  readonly key: string;
  /** Whether the client sent no key and it was derived from the request (`keyWhenMissing: 'derive'`). */
  readonly keyDerived: boolean;
  /** The key's id in the inbox table (`message_id`): principal, method, route and key. */
  readonly messageId: string;
  /**
   * Aborted when the handler runs past `handlerTimeoutMs` (reason: core's
   * `HandlerTimeoutError`) or when the client goes away (reason: `ClientDisconnectedError`).
   * Pass it to outside calls (`fetch(url, { signal })`). A handler that stops on it is rolled
   * back; one that completes after the client left is committed, and the retry replays it.
   */
  readonly signal: AbortSignal;
}

/** A request's key: sent or derived, or the problem that leaves it without one. */
export type KeyResolution =
  | { readonly key: string; readonly derived: boolean; readonly error?: undefined }
  | { readonly error: IdempotencyProblemError };

/** Runs the handler in the key's transaction and returns its whole response. */
export type ResponseProducer<DB, C extends HttpResponseParts> = (
  trx: Transaction<DB>,
  context: IdempotencyContext,
) => Promise<C>;

/** How an adapter is to answer. */
export type IdempotencyAnswer<C extends HttpResponseParts> =
  /** The handler ran: answer its response. `stored` is false for a 5xx (or an unstored 4xx), rolled back. */
  | { readonly kind: 'fresh'; readonly response: C; readonly stored: boolean }
  /** The key was completed before: answer the stored response (the replay header is among its headers). */
  | { readonly kind: 'replay'; readonly response: HttpResponseParts }
  /** A problem response (400, 409, 422, 500, 503) built by this package; the handler did not run to completion. */
  | { readonly kind: 'problem'; readonly response: HttpResponseParts; readonly error: IdempotencyProblemError };

/**
 * Carries a response that must not be stored out of the transaction, rolling it back.
 * Non-retryable, so core neither retries it nor calls it exhausted: its outcome is a
 * `dead_letter` with reason `non_retryable`, which this package turns back into the answer.
 */
class UnstoredResponse extends NonRetryableError {
  readonly response: HttpResponseParts;

  constructor(response: HttpResponseParts) {
    super(`response ${response.status} is not stored`);
    this.response = response;
  }
}

/** 408 Request Timeout, 425 Too Early, 429 Too Many Requests: "try again", never an answer to keep. */
const TRY_AGAIN_STATUSES = new Set([408, 425, 429]);
/** Longest `message_id` written as readable JSON; longer ones (long principals or routes) are hashed. */
const READABLE_ID_LIMIT = 1024;
/**
 * How long the claim of a key waits for a request in flight with it (ms). Short, so that a
 * waiting request holds a pool connection for a moment only; it then waits outside any
 * transaction and checks again, until `inFlightWaitMs` is spent.
 */
const CLAIM_WAIT_MS = 10;
/** Pauses between two checks of a key in flight (ms): doubling from the first to the last. */
const FIRST_RECHECK_MS = 25;
const LAST_RECHECK_MS = 500;

/**
 * Creates the idempotency store: the Idempotency-Key workflow on core's inbox. One store
 * serves any number of routes; adapters take it or build one from the same options.
 *
 * @example
 * ```ts
 * const idempotency = createIdempotency({ db, consumer: 'payments-api', principal: clientIdOf })
 * const charge = idempotent(handler, { idempotency, route: '/charges' })
 * setInterval(() => idempotency.purge(), 60_000)
 * ```
 */
export function createIdempotency<DB, Req = Request>(options: IdempotencyOptions<DB, Req>): Idempotency<DB, Req> {
  return new Idempotency(compileIdempotencyOptions(options));
}

/**
 * The store. For each request with a key (sent, or derived from the request on a route with
 * `keyWhenMissing: 'derive'`, see {@link Idempotency.keyOf}):
 *
 * 1. The key is scoped: `message_id` = principal, method, route and key; the request's
 *    fingerprint (method, path, body by default) is the message payload.
 * 2. `inbox.process` claims the key with an insert in a new transaction and runs the
 *    handler with that transaction. The handler's whole response is the result core
 *    stores with the key, and the transaction commits. A 5xx (or, by option, a 4xx) is
 *    thrown out of the transaction instead, which rolls everything back: nothing is kept.
 * 3. A key already there is a replay of its stored response; with another fingerprint, a
 *    reuse (422 or 409); older than `retentionMs`, it is deleted and the request runs as
 *    new. A key held by a request in flight makes this one wait up to `inFlightWaitMs`,
 *    outside any transaction, checking the key now and then: it then replays the first
 *    one's response, or runs if the first rolled back, or gets 409 with `Retry-After`.
 */
export class Idempotency<DB, Req = Request> {
  /** The options, checked and compiled. */
  readonly config: IdempotencyConfig<DB, Req>;
  /** The core inbox the keys live in (consumer `config.consumer`). */
  readonly inbox: Inbox<DB>;
  /** Gives the handler's statements `inFlightWaitMs` as their lock_timeout, or `undefined` when the claim's is that already. */
  readonly #setLockTimeout;

  /** @internal Use {@link createIdempotency}. */
  constructor(config: IdempotencyConfig<DB, Req>) {
    this.config = config;
    const claimWaitMs = Math.min(CLAIM_WAIT_MS, config.inFlightWaitMs);
    this.inbox = createInbox<DB>({
      db: config.db,
      consumer: config.consumer,
      schema: config.schema,
      table: config.table,
      isolationLevel: config.isolationLevel,
      lockTimeoutMs: claimWaitMs,
      maxIdLength: READABLE_ID_LIMIT + 64,
      // Core checks its window against broker redeliveries and message retries, which HTTP
      // does not have (its own rule is checked with the options); core's window only serves
      // as purge()'s default, which this class always sets.
      retentionMs: Math.max(config.retentionMs, (config.handlerTimeoutMs ?? 0) + claimWaitMs + 1),
      ...(config.handlerTimeoutMs === undefined ? {} : { handlerTimeoutMs: config.handlerTimeoutMs }),
      // A failed request is retried by its client, with the same key; never in process.
      retry: { retries: 0 },
      storeResults: true,
      fingerprintPayloads: true,
    });
    this.#setLockTimeout =
      claimWaitMs === config.inFlightWaitMs ? undefined : compileSetLockTimeout(config.inFlightWaitMs);
  }

  /** Checks one route's options and merges them over the store's. Throws `ConfigurationError`. */
  route(options?: RouteIdempotencyOptions<Req>): RouteConfig<Req> {
    return compileRouteOptions(options, this.config.defaults);
  }

  /** Reads the key from the request header's value (see {@link readIdempotencyKey}). */
  readKey(value: string | readonly string[] | null | undefined): KeyReading {
    return readIdempotencyKey(value, this.config.headerName, this.config.maxKeyLength);
  }

  /**
   * The request's key: the header's when it is sent (a bad one is a problem, never a
   * reason to derive), else on a route with `keyWhenMissing: 'derive'` the key derived from
   * the request and `rawBody()`, the exact body bytes (`undefined` when the adapter could
   * not keep them: {@link KeyDerivationError}).
   */
  keyOf(
    route: RouteConfig<Req>,
    value: string | readonly string[] | null | undefined,
    request: Omit<FingerprintSource, 'body'>,
    rawBody: () => Uint8Array | undefined,
  ): KeyResolution {
    if ((value !== undefined && value !== null) || route.keyWhenMissing === 'reject') {
      const reading = this.readKey(value);
      return reading.error === undefined ? { key: reading.key, derived: false } : reading;
    }
    const body = rawBody();
    if (body === undefined) return { error: new KeyDerivationError(this.config.headerName) };
    return {
      key: derivedKey(route.fingerprint.headers, {
        method: request.method,
        path: request.path,
        header: (name) => request.header(name),
        body,
      }),
      derived: true,
    };
  }

  /** The problem response for one of this package's problems. */
  problem(error: IdempotencyProblemError): HttpResponseParts {
    return problemResponse(error, this.config.problemTypeBase, this.config.retryAfterSeconds);
  }

  /**
   * Runs one request with a key: see the class comment. Throws what the handler throws
   * (after rolling back), so the framework's own error handling answers it.
   */
  async execute<C extends HttpResponseParts>(
    route: RouteConfig<Req>,
    call: IdempotentCall<Req>,
    produce: ResponseProducer<DB, C>,
  ): Promise<IdempotencyAnswer<C>> {
    const principal = typeof route.principal === 'function' ? await route.principal(call.request) : undefined;
    if (principal !== undefined && typeof principal !== 'string') {
      throw new TypeError(`The \`principal\` option returned a ${typeof principal}; return a string, or undefined.`);
    }
    const messageId = scopedId(principal, route.scopeByRoute ? [call.method, route.route ?? call.route] : [], call.key);
    const message = { id: messageId, payload: requestFingerprint(route.fingerprint, call) };
    const { inFlightWaitMs, storedHeaders } = this.config;
    const deadline = performance.now() + inFlightWaitMs;
    let recheckMs = FIRST_RECHECK_MS;
    // Set once the key was seen in flight: the response it then gets is the answer to this
    // very retry, however old its key, so it is replayed, never taken as expired.
    let waited = false;
    let forgotten = 0;

    for (;;) {
      let produced: C | undefined;
      const outcome = await this.inbox.process(message, async (trx, _message, { signal: timeout }) => {
        if (this.#setLockTimeout !== undefined) await this.#setLockTimeout(trx as unknown as QueryRunner);
        const signal = call.signal === undefined ? timeout : AbortSignal.any([timeout, call.signal]);
        // The client left while this request waited: nobody is to be answered, run nothing.
        if (signal.aborted) throw signal.reason;
        const response = await produce(trx, { key: call.key, keyDerived: call.keyDerived === true, messageId, signal });
        produced = response;
        if (!this.#stored(response.status, route)) throw new UnstoredResponse(response);
        return toStoredJson(response, storedHeaders);
      });
      switch (outcome.status) {
        case 'processed':
          return { kind: 'fresh', response: produced as C, stored: true };
        case 'duplicate': {
          if (!waited && forgotten < 2 && this.#expired(outcome.processedAt)) {
            const failed = await this.#forget(messageId);
            if (failed !== undefined) return failed;
            forgotten++;
            continue;
          }
          const stored = outcome.previousStatus === 'processed' ? fromStoredJson(outcome.result) : undefined;
          if (stored === undefined) return this.#problem(new StoredResponseError(messageId));
          return { kind: 'replay', response: this.#replayed(stored) };
        }
        case 'conflict': {
          // Another request's key, unless it has expired: then this request is new.
          if (!waited && forgotten < 2) {
            const expired = await this.#storedExpired(messageId);
            if (typeof expired === 'object') return expired;
            if (expired) {
              const failed = await this.#forget(messageId);
              if (failed !== undefined) return failed;
              forgotten++;
              continue;
            }
          }
          return this.#problem(new IdempotencyKeyReusedError(this.config.headerName, route.mismatchStatus));
        }
        case 'retry_later': {
          if (outcome.reason === 'lock_timeout') {
            // In flight: wait without a connection, then check again.
            waited = true;
            const left = deadline - performance.now();
            if (left > 0) {
              await delay(Math.min(left, jitter(recheckMs)));
              recheckMs = Math.min(recheckMs * 2, LAST_RECHECK_MS);
              continue;
            }
          }
          this.config.logger?.warn(
            { consumer: this.config.consumer, messageId, reason: outcome.reason, err: outcome.error },
            'inboxkit/http: request not run; answered with a retryable problem',
          );
          return outcome.reason === 'lock_timeout'
            ? this.#problem(new IdempotencyKeyInFlightError(this.config.headerName, inFlightWaitMs))
            : this.#problem(new IdempotencyStoreUnavailableError({ cause: outcome.error }));
        }
        case 'dead_letter':
          if (outcome.error instanceof UnstoredResponse) {
            return { kind: 'fresh', response: outcome.error.response as C, stored: false };
          }
          if (hasCode(outcome.error, 'INBOX_HANDLER_TIMEOUT')) {
            return this.#problem(new RequestTimeoutError(this.config.handlerTimeoutMs ?? 0, { cause: outcome.error }));
          }
          throw outcome.error;
      }
    }
  }

  /**
   * Deletes keys (and their responses) older than `retentionMs`, in small batches; one
   * process at a time does it. Run it on a schedule. This is core's `purge()`.
   */
  purge(options?: PurgeOptions): Promise<PurgeResult> {
    return this.inbox.purge({ olderThanMs: this.config.retentionMs, ...options });
  }

  #stored(status: number, route: RouteConfig<Req>): boolean {
    if (status >= 500) return false;
    if (status >= 400) return route.storeClientErrors && !TRY_AGAIN_STATUSES.has(status);
    return true;
  }

  #replayed(stored: HttpResponseParts): HttpResponseParts {
    const { replayHeader } = this.config;
    if (replayHeader === undefined) return stored;
    return { status: stored.status, headers: [...stored.headers, [replayHeader, 'true']], body: stored.body };
  }

  #problem(error: IdempotencyProblemError): IdempotencyAnswer<never> {
    return { kind: 'problem', response: this.problem(error), error };
  }

  /** Whether a key stored at `processedAt` is past its retention window. */
  #expired(processedAt: Date | undefined): boolean {
    return processedAt !== undefined && Date.now() - processedAt.getTime() >= this.config.retentionMs;
  }

  /** Whether the key's stored row has expired (read on the conflict path only); a problem answer when the database cannot be reached. */
  async #storedExpired(messageId: string): Promise<boolean | IdempotencyAnswer<never>> {
    try {
      return this.#expired((await this.inbox.find(messageId))?.processedAt);
    } catch (error) {
      if (databaseFailure(error) !== undefined) {
        return this.#problem(new IdempotencyStoreUnavailableError({ cause: error }));
      }
      throw error;
    }
  }

  /** Deletes an expired key; a problem answer when the database cannot be reached. */
  async #forget(messageId: string): Promise<IdempotencyAnswer<never> | undefined> {
    try {
      await forgetExpiredKey(this.inbox, messageId, new Date(Date.now() - this.config.retentionMs));
      return undefined;
    } catch (error) {
      if (databaseFailure(error) !== undefined) {
        return this.#problem(new IdempotencyStoreUnavailableError({ cause: error }));
      }
      throw error;
    }
  }
}

/**
 * The key's id in the inbox: `[principal, method, route, key]` as JSON (readable in the
 * table, unambiguous whatever the parts hold), or its SHA-256 when that is too long.
 */
function scopedId(principal: string | undefined, scope: readonly string[], key: string): string {
  const id = JSON.stringify([principal ?? null, ...scope, key]);
  return id.length <= READABLE_ID_LIMIT ? id : `sha256:${createHash('sha256').update(id).digest('hex')}`;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Up to a fifth off, so that many requests waiting on one key do not check it in step. */
function jitter(ms: number): number {
  return ms * (0.8 + Math.random() * 0.2);
}
