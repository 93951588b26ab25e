import { createHash } from 'node:crypto';
import {
  createInbox,
  databaseFailure,
  type Inbox,
  NonRetryableError,
  type PurgeOptions,
  type PurgeResult,
} from '@inboxkit/core';
import type { Transaction } from 'kysely';
import {
  IdempotencyKeyInFlightError,
  IdempotencyKeyReusedError,
  type IdempotencyProblemError,
  IdempotencyStoreUnavailableError,
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
import { type FingerprintSource, requestFingerprint } from './request-fingerprint.js';
import { compileForgetExpiredKey, type QueryRunner } from './sql/forget-expired-key.js';
import { fromStoredJson, type HttpResponseParts, toStoredJson } from './stored-response.js';

/** One request, as an adapter describes it to {@link Idempotency.execute}. */
export interface IdempotentCall<Req> extends FingerprintSource {
  /** The framework's request object, handed to the `principal` resolver. */
  readonly request: Req;
  /** The key, as {@link Idempotency.readKey} read it. */
  readonly key: string;
  /** The route's name in the key scope when the route options give none: its pattern, or the URL path. */
  readonly route: string;
}

/** What the handler is told besides its transaction and request. */
export interface IdempotencyContext {
  /** The client's key. */
  readonly key: string;
  /** The key's id in the inbox table (`message_id`): principal, method, route and key. */
  readonly messageId: string;
}

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
 * Creates the idempotency store: the Idempotency-Key workflow on core's inbox. One store
 * serves any number of routes; adapters take it or build one from the same options.
 *
 * @example
 * ```ts
 * const idempotency = createIdempotency({ db, consumer: 'payments-api' })
 * const charge = idempotent(handler, { idempotency, route: '/charges' })
 * setInterval(() => idempotency.purge(), 60_000)
 * ```
 */
export function createIdempotency<DB, Req = Request>(options: IdempotencyOptions<DB, Req>): Idempotency<DB, Req> {
  return new Idempotency(compileIdempotencyOptions(options));
}

/**
 * The store. For each request with a key:
 *
 * 1. The key is scoped: `message_id` = principal, method, route and key; the request's
 *    fingerprint (method, path, body by default) is the message payload.
 * 2. `inbox.process` claims the key with an insert in a new transaction and runs the
 *    handler with that transaction. The handler's whole response is the result core
 *    stores with the key, and the transaction commits. A 5xx (or, by option, a 4xx) is
 *    thrown out of the transaction instead, which rolls everything back: nothing is kept.
 * 3. A key already there is a replay of its stored response; with another fingerprint, a
 *    reuse (422 or 409). A key held by a request in flight makes this one wait on the
 *    unique index up to `inFlightWaitMs`: it then replays the first one's response, or
 *    runs if the first rolled back, or gets 409 with `Retry-After` if it is still running.
 */
export class Idempotency<DB, Req = Request> {
  /** The options, checked and compiled. */
  readonly config: IdempotencyConfig<DB, Req>;
  /** The core inbox the keys live in (consumer `config.consumer`). */
  readonly inbox: Inbox<DB>;
  readonly #forgetExpiredKey;

  /** @internal Use {@link createIdempotency}. */
  constructor(config: IdempotencyConfig<DB, Req>) {
    this.config = config;
    this.inbox = createInbox<DB>({
      db: config.db,
      consumer: config.consumer,
      schema: config.schema,
      table: config.table,
      isolationLevel: config.isolationLevel,
      lockTimeoutMs: config.inFlightWaitMs,
      maxIdLength: READABLE_ID_LIMIT + 64,
      retentionMs: config.retentionMs,
      // A failed request is retried by its client, with the same key; never in process.
      retry: { retries: 0 },
      storeResults: true,
      fingerprintPayloads: true,
    });
    this.#forgetExpiredKey = compileForgetExpiredKey(this.inbox.config.tables.qualified);
  }

  /** Checks one route's options and merges them over the store's. Throws `ConfigurationError`. */
  route(options?: RouteIdempotencyOptions<Req>): RouteConfig<Req> {
    return compileRouteOptions(options, this.config.defaults);
  }

  /** Reads the key from the request header's value (see {@link readIdempotencyKey}). */
  readKey(value: string | readonly string[] | null | undefined): KeyReading {
    return readIdempotencyKey(value, this.config.headerName, this.config.maxKeyLength);
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
    const principal = route.principal === undefined ? undefined : await route.principal(call.request);
    if (principal !== undefined && typeof principal !== 'string') {
      throw new TypeError(`The \`principal\` option returned a ${typeof principal}; return a string, or undefined.`);
    }
    const messageId = scopedId(principal, route.scopeByRoute ? [call.method, route.route ?? call.route] : [], call.key);
    const message = { id: messageId, payload: requestFingerprint(route.fingerprint, call) };
    const context: IdempotencyContext = { key: call.key, messageId };
    const { retentionMs, storedHeaders } = this.config;

    for (let round = 1; ; round++) {
      let produced: C | undefined;
      const outcome = await this.inbox.process(message, async (trx) => {
        const response = await produce(trx, context);
        produced = response;
        if (!this.#stored(response.status, route)) throw new UnstoredResponse(response);
        return toStoredJson(response, storedHeaders);
      });
      switch (outcome.status) {
        case 'processed':
          return { kind: 'fresh', response: produced as C, stored: true };
        case 'duplicate': {
          const { processedAt } = outcome;
          if (processedAt !== undefined && Date.now() - processedAt.getTime() >= retentionMs && round < 3) {
            const failed = await this.#forget(messageId, new Date(Date.now() - retentionMs));
            if (failed !== undefined) return failed;
            continue;
          }
          const stored = outcome.previousStatus === 'processed' ? fromStoredJson(outcome.result) : undefined;
          if (stored === undefined) return this.#problem(new StoredResponseError(messageId));
          return { kind: 'replay', response: this.#replayed(stored) };
        }
        case 'conflict':
          return this.#problem(new IdempotencyKeyReusedError(this.config.headerName, route.mismatchStatus));
        case 'retry_later':
          this.config.logger?.warn(
            { consumer: this.config.consumer, messageId, reason: outcome.reason, err: outcome.error },
            'inboxkit/http: request not run; answered with a retryable problem',
          );
          return outcome.reason === 'lock_timeout'
            ? this.#problem(new IdempotencyKeyInFlightError(this.config.headerName, this.config.inFlightWaitMs))
            : this.#problem(new IdempotencyStoreUnavailableError({ cause: outcome.error }));
        case 'dead_letter':
          if (outcome.error instanceof UnstoredResponse) {
            return { kind: 'fresh', response: outcome.error.response as C, stored: false };
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
    return this.inbox.purge(options);
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

  /** Deletes an expired key; a problem answer when the database cannot be reached. */
  async #forget(messageId: string, expiredBefore: Date): Promise<IdempotencyAnswer<never> | undefined> {
    try {
      await this.#forgetExpiredKey(
        this.config.db as unknown as QueryRunner,
        this.config.consumer,
        messageId,
        expiredBefore,
      );
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
