import type { IdempotencyProblemError } from './errors.js';
import type { HttpResponseParts } from './stored-response.js';

/** The body of a problem response (RFC 9457), with the error's stable `code` as an extension member. */
export interface ProblemDetails {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly detail: string;
  readonly code: string;
}

/**
 * An `application/problem+json` response for one of this package's problems. 409 and 503
 * carry `Retry-After`. `Cache-Control: no-store`, as the answer depends on the moment.
 */
export function problemResponse(
  error: IdempotencyProblemError,
  typeBase: string,
  retryAfterSeconds: number,
): HttpResponseParts {
  const problem: ProblemDetails = {
    type: `${typeBase}${error.slug}`,
    title: error.title,
    status: error.status,
    detail: error.message,
    code: error.code,
  };
  const headers: [string, string][] = [
    ['content-type', 'application/problem+json'],
    ['content-language', 'en'],
    ['cache-control', 'no-store'],
  ];
  if (error.status === 409 && error.code === 'INBOX_HTTP_KEY_IN_FLIGHT') {
    headers.push(['retry-after', String(retryAfterSeconds)]);
  }
  if (error.status === 503) headers.push(['retry-after', String(retryAfterSeconds)]);
  return { status: error.status, headers, body: JSON.stringify(problem) };
}
