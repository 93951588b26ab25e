/**
 * `@inboxkit/http`: the Idempotency-Key HTTP header on the inboxkit Postgres inbox, for
 * Fetch API handlers ({@link idempotent}) and any framework ({@link createIdempotency}).
 * The Fastify plugin and the Express middleware have their own entry points
 * (`@inboxkit/http/fastify`, `@inboxkit/http/express`).
 *
 * The public API, listed.
 *
 * @module @inboxkit/http
 */

export {
  ClientDisconnectedError,
  HandlerFailedError,
  IdempotencyKeyInFlightError,
  IdempotencyKeyMissingError,
  IdempotencyKeyReusedError,
  IdempotencyProblemError,
  IdempotencyStoreUnavailableError,
  InvalidIdempotencyKeyError,
  KeyDerivationError,
  NoIdempotencyContextError,
  RequestTimeoutError,
  StoredResponseError,
  StreamingResponseError,
} from './errors.js';
export {
  type FetchHandler,
  type FetchIdempotentHandler,
  type IdempotentFetchOptions,
  idempotent,
  readWholeBody,
  toFetchResponse,
} from './fetch-handler.js';
export {
  createIdempotency,
  Idempotency,
  type IdempotencyAnswer,
  type IdempotencyContext,
  type IdempotentCall,
  type KeyResolution,
  type ResponseProducer,
} from './idempotency.js';
export { type KeyReading, readIdempotencyKey } from './idempotency-key.js';
export {
  DEFAULT_STORED_HEADERS,
  type FingerprintOptions,
  type IdempotencyConfig,
  type IdempotencyOptions,
  type KeyWhenMissing,
  type PrincipalResolver,
  type RouteConfig,
  type RouteIdempotencyOptions,
} from './idempotency-options.js';
export type { ProblemDetails } from './problem.js';
export {
  DERIVED_KEY_PREFIX,
  derivedKey,
  type FingerprintSource,
  requestFingerprint,
} from './request-fingerprint.js';
export type { HeaderPairs, HttpResponseParts, StoredResponseJson } from './stored-response.js';
