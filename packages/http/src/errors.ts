import { InboxError } from '@inboxkit/core';

/**
 * Errors of `@inboxkit/http`. Each extends core's {@link InboxError} and has a stable
 * `code`; they are recognised by `code` (or `name`) as well as by `instanceof`.
 *
 * | code | class | HTTP | meaning |
 * | --- | --- | --- | --- |
 * | `INBOX_HTTP_KEY_MISSING` | {@link IdempotencyKeyMissingError} | 400 | an idempotent route was called without the header |
 * | `INBOX_HTTP_KEY_UNDERIVABLE` | {@link KeyDerivationError} | 500 | (Express) a route with `keyWhenMissing: 'derive'` could not read the request's body bytes |
 * | `INBOX_HTTP_KEY_INVALID` | {@link InvalidIdempotencyKeyError} | 400 | the key is empty, too long, or not visible ASCII |
 * | `INBOX_HTTP_KEY_REUSED` | {@link IdempotencyKeyReusedError} | 422 (or 409) | the key was used before with a different request |
 * | `INBOX_HTTP_KEY_IN_FLIGHT` | {@link IdempotencyKeyInFlightError} | 409 | the first request with this key is still running |
 * | `INBOX_HTTP_STORE_UNAVAILABLE` | {@link IdempotencyStoreUnavailableError} | 503 | Postgres could not be reached; nothing was decided |
 * | `INBOX_HTTP_HANDLER_TIMEOUT` | {@link RequestTimeoutError} | 503 | the handler ran past `handlerTimeoutMs`; rolled back |
 * | `INBOX_HTTP_STORED_RESPONSE_UNREADABLE` | {@link StoredResponseError} | 500 | the key's row holds no response this package wrote |
 * | `INBOX_HTTP_HANDLER_FAILED` | {@link HandlerFailedError} | 500 | (Express) the route failed and no error handler of the app answered; rolled back |
 * | `INBOX_HTTP_STREAMING_RESPONSE` | {@link StreamingResponseError} | (thrown) | a handler answered with a streaming body, which cannot be stored |
 * | `INBOX_HTTP_NO_CONTEXT` | {@link NoIdempotencyContextError} | (thrown) | `transactionOf()` was called outside an idempotent handler |
 * | `INBOX_HTTP_CLIENT_GONE` | {@link ClientDisconnectedError} | (signal reason) | the client went away before its answer was sent |
 */
export abstract class IdempotencyProblemError extends InboxError {
  /** The HTTP status of the problem response. */
  abstract readonly status: number;
  /** A short, fixed summary of the problem type (RFC 9457 `title`). */
  abstract readonly title: string;
  /** The last segment of the problem `type` URI. */
  abstract readonly slug: string;
}

/**
 * An idempotent route was called without the `Idempotency-Key` header.
 *
 * `code`: `'INBOX_HTTP_KEY_MISSING'`.
 */
export class IdempotencyKeyMissingError extends IdempotencyProblemError {
  readonly status = 400;
  readonly title = 'Idempotency-Key is missing';
  readonly slug = 'key-missing';

  constructor(headerName: string) {
    super(
      'INBOX_HTTP_KEY_MISSING',
      `This operation is idempotent and requires an ${headerName} request header: send a unique key (a UUID) and send the same key again when you retry the same request.`,
    );
  }
}

/**
 * A request without the key on a route with `keyWhenMissing: 'derive'` whose body bytes the
 * server did not keep (Express: the body parser lacks `verify: keepRawBody`). A server
 * mistake, so a 500; the client can still succeed by sending a key.
 *
 * `code`: `'INBOX_HTTP_KEY_UNDERIVABLE'`.
 */
export class KeyDerivationError extends IdempotencyProblemError {
  readonly status = 500;
  readonly title = 'No Idempotency-Key could be derived';
  readonly slug = 'key-underivable';

  constructor(headerName: string) {
    super(
      'INBOX_HTTP_KEY_UNDERIVABLE',
      `This server derives a key for requests without an ${headerName} header, but could not read this request's body; send an ${headerName} header.`,
    );
  }
}

/**
 * The key is empty, longer than `maxKeyLength`, or holds characters other than visible ASCII.
 *
 * `code`: `'INBOX_HTTP_KEY_INVALID'`.
 */
export class InvalidIdempotencyKeyError extends IdempotencyProblemError {
  readonly status = 400;
  readonly title = 'Idempotency-Key is invalid';
  readonly slug = 'key-invalid';

  constructor(detail: string) {
    super('INBOX_HTTP_KEY_INVALID', detail);
  }
}

/**
 * The key was used before with a request whose fingerprint differs.
 *
 * `code`: `'INBOX_HTTP_KEY_REUSED'`.
 */
export class IdempotencyKeyReusedError extends IdempotencyProblemError {
  readonly status: number;
  readonly title = 'Idempotency-Key is already used';
  readonly slug = 'key-reused';

  constructor(headerName: string, status: number) {
    super(
      'INBOX_HTTP_KEY_REUSED',
      `This ${headerName} was already used with a different request. A key must not be reused for another payload: send the original request to get its response, or use a new key for a new operation.`,
    );
    this.status = status;
  }
}

/**
 * The first request with this key is still being processed.
 *
 * `code`: `'INBOX_HTTP_KEY_IN_FLIGHT'`.
 */
export class IdempotencyKeyInFlightError extends IdempotencyProblemError {
  readonly status = 409;
  readonly title = 'A request is outstanding for this Idempotency-Key';
  readonly slug = 'key-in-flight';

  constructor(headerName: string, waitedMs: number) {
    super(
      'INBOX_HTTP_KEY_IN_FLIGHT',
      `A request with the same ${headerName} is still being processed (waited ${waitedMs} ms for it). Retry the same request after the time in Retry-After.`,
    );
  }
}

/**
 * Postgres could not be reached: nothing was run and nothing was stored.
 *
 * `code`: `'INBOX_HTTP_STORE_UNAVAILABLE'`.
 */
export class IdempotencyStoreUnavailableError extends IdempotencyProblemError {
  readonly status = 503;
  readonly title = 'Idempotency store unavailable';
  readonly slug = 'store-unavailable';

  constructor(options?: { cause?: unknown }) {
    super(
      'INBOX_HTTP_STORE_UNAVAILABLE',
      'The request was not processed because its idempotency key could not be checked. Retry the same request with the same key after the time in Retry-After.',
      options,
    );
  }
}

/**
 * The handler ran longer than `handlerTimeoutMs`: its signal was aborted, its statement
 * cancelled, and its transaction rolled back. Nothing was stored, so a retry runs again.
 *
 * `code`: `'INBOX_HTTP_HANDLER_TIMEOUT'`.
 */
export class RequestTimeoutError extends IdempotencyProblemError {
  readonly status = 503;
  readonly title = 'Request timed out';
  readonly slug = 'handler-timeout';

  constructor(timeoutMs: number, options?: { cause?: unknown }) {
    super(
      'INBOX_HTTP_HANDLER_TIMEOUT',
      `The request took longer than ${timeoutMs} ms and was rolled back; nothing was stored. Retry the same request with the same key after the time in Retry-After.`,
      options,
    );
  }
}

/**
 * The key's row holds no response this package wrote (another consumer's key, or a corrupted row).
 *
 * `code`: `'INBOX_HTTP_STORED_RESPONSE_UNREADABLE'`.
 */
export class StoredResponseError extends IdempotencyProblemError {
  readonly status = 500;
  readonly title = 'Stored response unreadable';
  readonly slug = 'stored-response-unreadable';

  constructor(messageId: string) {
    super(
      'INBOX_HTTP_STORED_RESPONSE_UNREADABLE',
      `The idempotency key ${JSON.stringify(messageId)} is stored without a response that can be replayed. Is another service writing to the same inbox consumer name?`,
    );
  }
}

/**
 * The Express middleware's answer when the route failed and no error handler of the app
 * answered (instead of Express's HTML error page), or failed outside Express's error
 * handling (a streaming response, a failed commit of a captured answer): rolled back,
 * nothing stored. Fastify and the Fetch handler rethrow such errors instead.
 *
 * `code`: `'INBOX_HTTP_HANDLER_FAILED'`.
 */
export class HandlerFailedError extends IdempotencyProblemError {
  readonly status = 500;
  readonly title = 'Request failed';
  readonly slug = 'handler-failed';

  constructor(detail: string, options?: { cause?: unknown }) {
    super('INBOX_HTTP_HANDLER_FAILED', detail, options);
  }
}

/**
 * A handler answered with a streaming body (a stream, `res.write()`, a Fetch body that is
 * not complete when the handler returns, `text/event-stream`). Such a response cannot be
 * stored and replayed, so the transaction is rolled back and nothing is kept.
 *
 * `code`: `'INBOX_HTTP_STREAMING_RESPONSE'`.
 */
export class StreamingResponseError extends InboxError {
  constructor(detail: string) {
    super(
      'INBOX_HTTP_STREAMING_RESPONSE',
      `An idempotent route cannot answer with a streaming body: ${detail} Build the whole body first (a string, bytes or JSON); nothing was stored and the transaction was rolled back.`,
    );
  }
}

/**
 * `transactionOf(request)` was called for a request that is not inside an idempotent handler.
 *
 * `code`: `'INBOX_HTTP_NO_CONTEXT'`.
 */
export class NoIdempotencyContextError extends InboxError {
  constructor(where: string) {
    super(
      'INBOX_HTTP_NO_CONTEXT',
      `transactionOf(request) was called outside an idempotent handler (${where}). Mark the route idempotent, and call it from the handler while it runs.`,
    );
  }
}

/**
 * The reason of the handler's signal when the client went away before its answer was
 * sent. A handler that stops on it is rolled back (nothing stored, the client's retry runs
 * again); one that completes anyway is committed, and the retry gets its response.
 *
 * `code`: `'INBOX_HTTP_CLIENT_GONE'`.
 */
export class ClientDisconnectedError extends InboxError {
  constructor() {
    super(
      'INBOX_HTTP_CLIENT_GONE',
      'The client went away before its answer was sent. Stop the work: nothing is stored unless the handler completes.',
    );
  }
}
