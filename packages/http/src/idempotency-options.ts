import { ConfigurationError, type InboxIsolationLevel, type InboxLogger } from '@inboxkit/core';
import { bool, positiveInteger } from '@inboxkit/core/adapter';
import type { Kysely } from 'kysely';

/** Which parts of a request make its fingerprint: the same key with another fingerprint is a reuse. */
export interface FingerprintOptions {
  /** The request method. Default `true`. */
  readonly method?: boolean;
  /** The request path with its query string. Default `true`. */
  readonly path?: boolean;
  /**
   * The request body: its bytes for the Fetch API; for Fastify and Express the parsed
   * body (bytes and strings as they are, anything else as `JSON.stringify` gives it).
   * Default `true`.
   */
  readonly body?: boolean;
  /** Request headers that count too, by name (case-insensitive). Default `[]`. */
  readonly headers?: readonly string[];
}

/**
 * Returns the authenticated principal a request runs for (a user id, an API key id), or
 * `undefined` for an anonymous request. Keys are scoped by it: two clients can never see
 * each other's responses, even with the same key. Anonymous requests share one scope.
 */
export type PrincipalResolver<Req> = (request: Req) => string | undefined | Promise<string | undefined>;

/** Options that can be set for all routes and again, overriding them, for one route. */
export interface RouteIdempotencyOptions<Req = Request> {
  /**
   * The route's name in key scopes, e.g. `'/charges/:id'`. Default: the route pattern
   * (Fastify, Express), or the URL path (Fetch).
   */
  readonly route?: string;
  /**
   * Required (here or in the store's options): whose keys these are. A
   * {@link PrincipalResolver} scopes keys by the authenticated principal, so a client can
   * never be answered another client's stored response. `false` opts out: keys are shared
   * by all clients (plus method and route), and any client that sends another's key gets
   * its stored response; only for APIs with a single client, or with keys that are secrets.
   */
  readonly principal?: PrincipalResolver<Req> | false;
  /**
   * Scope keys by method and route as well as by principal: the same key sent to two
   * routes is two operations. With `false` a key is shared by all routes, and using it on
   * another route is a reuse (when the fingerprint has `method` or `path`). Default `true`.
   */
  readonly scopeByRoute?: boolean;
  /** See {@link FingerprintOptions}. */
  readonly fingerprint?: FingerprintOptions;
  /**
   * Store 4xx answers and replay them, as the draft asks. With `false` a 4xx answer is
   * rolled back like a 5xx and the next request with the key runs again. 408, 425 and 429
   * (try again later, by definition) are never stored. Default `true`.
   */
  readonly storeClientErrors?: boolean;
  /** Status of the answer to a key reused with a different request: `422` (the draft) or `409`. Default `422`. */
  readonly mismatchStatus?: 409 | 422;
  /**
   * What a request without the key header gets. `'reject'`: 400 `key-missing`. `'derive'`:
   * a key derived from the request (a SHA-256 of its method, path with query, the
   * `fingerprint.headers` and the exact body bytes), scoped by principal and route like a
   * sent key, so a retry of the same request without a key is replayed. The trade-off: two
   * intended, identical requests within `retentionMs` collapse into one; choose it only for
   * routes whose body identifies the operation (a payment carrying its own client-side id).
   * A sent key always wins. Default `'reject'`.
   */
  readonly keyWhenMissing?: KeyWhenMissing;
}

/** See {@link RouteIdempotencyOptions.keyWhenMissing}. */
export type KeyWhenMissing = 'reject' | 'derive';

/**
 * Options of {@link createIdempotency}. Every option is checked once, at construction; a
 * wrong one throws core's `ConfigurationError` naming it.
 */
export interface IdempotencyOptions<DB, Req = Request> extends RouteIdempotencyOptions<Req> {
  /** A Kysely instance over the PostgreSQL dialect, with the inbox table migrated (`migrateInbox`). */
  readonly db: Kysely<DB>;
  /**
   * The inbox consumer name the keys are stored under: one per service (or API), never
   * shared with a broker consumer. Default `'http'`.
   */
  readonly consumer?: string;
  /** Schema of the inbox table. Default `'public'`. */
  readonly schema?: string;
  /** Name of the inbox table. Default `'processed_messages'`. */
  readonly table?: string;
  /** Isolation level of the handler's transaction. Default `'read committed'`. */
  readonly isolationLevel?: InboxIsolationLevel;
  /**
   * How long a key and its response are kept, in milliseconds, counted from the start of
   * the request that stored them. A key older than this behaves as new (even with another
   * body) before `purge()` deletes it; `purge()` deletes keys older than this. It must be
   * longer than `handlerTimeoutMs`. Default 24 hours (`86_400_000`).
   */
  readonly retentionMs?: number;
  /**
   * How long a request waits for another in-flight request with the same key, in
   * milliseconds, before it is answered 409 with `Retry-After`. If the first one finishes
   * within this time, the waiting one gets its stored response. It waits without holding a
   * pool connection: it checks the key again now and then, each check a short transaction.
   * It is also the `lock_timeout` of the handler's statements. Default `5000`.
   */
  readonly inFlightWaitMs?: number;
  /**
   * Longest time a handler may run, in milliseconds (core's `handlerTimeoutMs`). When it
   * runs out, the handler's `signal` is aborted, the statement it is running is cancelled,
   * and once it returns or throws, its transaction is rolled back and the request is
   * answered 503 (`handler-timeout`, with `Retry-After`); nothing is stored. Default: no limit.
   */
  readonly handlerTimeoutMs?: number;
  /** `Retry-After` of the 409 (in flight) and 503 (database unavailable) answers, in seconds. Default `1`. */
  readonly retryAfterSeconds?: number;
  /** The request header that carries the key. Default `'Idempotency-Key'`. */
  readonly headerName?: string;
  /** Longest accepted key, in characters. Default `255`. */
  readonly maxKeyLength?: number;
  /**
   * Response headers stored with the response and replayed, by name (case-insensitive).
   * Others (`Date`, `Set-Cookie`, hop-by-hop headers) are sent with the first answer only.
   * Default: `content-type`, `content-language`, `content-encoding`, `content-disposition`,
   * `location`, `etag`, `last-modified`, `cache-control`, `expires`, `link`, `vary`.
   */
  readonly storedHeaders?: readonly string[];
  /** The response header that marks a replay (value `true`); `false` for none. Default `'Idempotent-Replayed'`. */
  readonly replayHeader?: string | false;
  /**
   * The start of the `type` URI of problem responses; the problem's name is appended
   * (`key-missing`, `key-underivable`, `key-invalid`, `key-reused`, `key-in-flight`,
   * `store-unavailable`, `stored-response-unreadable`). Point it at your API's documentation, e.g.
   * `'https://developer.example.com/idempotency#'`. Default `'tag:inboxkit.dev,2025:idempotency/'`.
   */
  readonly problemTypeBase?: string;
  /** A pino-compatible logger for what this package does not answer itself. Default: silent. */
  readonly logger?: InboxLogger;
}

/** A route's options, checked and merged with the store's. */
export interface RouteConfig<Req> {
  readonly route: string | undefined;
  /** Always set on a route's config; `undefined` only in store defaults that leave it to the routes. */
  readonly principal: PrincipalResolver<Req> | false | undefined;
  readonly scopeByRoute: boolean;
  readonly fingerprint: Required<FingerprintOptions>;
  readonly storeClientErrors: boolean;
  readonly mismatchStatus: 409 | 422;
  readonly keyWhenMissing: KeyWhenMissing;
}

/** The store's options, checked and compiled once. */
export interface IdempotencyConfig<DB, Req> {
  readonly db: Kysely<DB>;
  readonly consumer: string;
  readonly schema: string | undefined;
  readonly table: string | undefined;
  readonly isolationLevel: InboxIsolationLevel | undefined;
  readonly retentionMs: number;
  readonly inFlightWaitMs: number;
  readonly handlerTimeoutMs: number | undefined;
  readonly retryAfterSeconds: number;
  readonly headerName: string;
  /** `headerName` in lower case, as Node.js keys `request.headers`. */
  readonly headerKey: string;
  readonly maxKeyLength: number;
  readonly storedHeaders: ReadonlySet<string>;
  readonly replayHeader: string | undefined;
  readonly problemTypeBase: string;
  readonly logger: InboxLogger | undefined;
  readonly defaults: RouteConfig<Req>;
}

export const DAY_MS = 24 * 60 * 60 * 1000;

/** The response headers stored with a key and replayed, when `storedHeaders` is not given. */
export const DEFAULT_STORED_HEADERS: readonly string[] = Object.freeze([
  'content-type',
  'content-language',
  'content-encoding',
  'content-disposition',
  'location',
  'etag',
  'last-modified',
  'cache-control',
  'expires',
  'link',
  'vary',
]);

/** Headers that describe one connection or one message, never stored even when asked. */
const NEVER_STORED = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'upgrade',
  'trailer',
  'te',
  'proxy-connection',
  'date',
]);

const ROUTE_KEYS = [
  'route',
  'principal',
  'scopeByRoute',
  'fingerprint',
  'storeClientErrors',
  'mismatchStatus',
  'keyWhenMissing',
] as const satisfies readonly (keyof RouteIdempotencyOptions)[];

const STORE_KEYS = [
  ...ROUTE_KEYS,
  'db',
  'consumer',
  'schema',
  'table',
  'isolationLevel',
  'retentionMs',
  'inFlightWaitMs',
  'handlerTimeoutMs',
  'retryAfterSeconds',
  'headerName',
  'maxKeyLength',
  'storedHeaders',
  'replayHeader',
  'problemTypeBase',
  'logger',
] as const satisfies readonly (keyof IdempotencyOptions<unknown>)[];

const FINGERPRINT_KEYS = new Set(['method', 'path', 'body', 'headers']);
/** RFC 9110 `token`: what a header name may be made of. */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

const BASE_ROUTE: RouteConfig<never> = Object.freeze({
  route: undefined,
  principal: undefined,
  scopeByRoute: true,
  fingerprint: Object.freeze({ method: true, path: true, body: true, headers: Object.freeze([]) }),
  storeClientErrors: true,
  mismatchStatus: 422,
  keyWhenMissing: 'reject',
});

export function compileIdempotencyOptions<DB, Req>(options: IdempotencyOptions<DB, Req>): IdempotencyConfig<DB, Req> {
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError('createIdempotency() needs an options object: createIdempotency({ db }).');
  }
  checkKeys('', options, STORE_KEYS);
  const db = options.db as unknown;
  if (
    typeof db !== 'object' ||
    db === null ||
    typeof (db as { transaction?: unknown }).transaction !== 'function' ||
    typeof (db as { executeQuery?: unknown }).executeQuery !== 'function'
  ) {
    throw new ConfigurationError(
      'Expected `db` to be a Kysely instance (new Kysely({ dialect: new PostgresDialect(...) })).',
    );
  }
  const consumer = options.consumer ?? 'http';
  if (typeof consumer !== 'string' || consumer.trim().length === 0) {
    throw new ConfigurationError('Expected `consumer` to be a non-empty string, e.g. consumer: "payments-api".');
  }
  const headerName = options.headerName ?? 'Idempotency-Key';
  if (typeof headerName !== 'string' || !TOKEN.test(headerName)) {
    throw new ConfigurationError(
      `Expected \`headerName\` to be an HTTP header name, got ${JSON.stringify(headerName)}.`,
    );
  }
  const replayHeader = options.replayHeader ?? 'Idempotent-Replayed';
  if (replayHeader !== false && (typeof replayHeader !== 'string' || !TOKEN.test(replayHeader))) {
    throw new ConfigurationError(
      `Expected \`replayHeader\` to be an HTTP header name or false, got ${JSON.stringify(replayHeader)}.`,
    );
  }
  const problemTypeBase = options.problemTypeBase ?? 'tag:inboxkit.dev,2025:idempotency/';
  if (typeof problemTypeBase !== 'string' || !/^[A-Za-z][A-Za-z0-9+.-]*:\S*$/.test(problemTypeBase)) {
    throw new ConfigurationError(
      `Expected \`problemTypeBase\` to be an absolute URI prefix such as "https://developer.example.com/idempotency#", got ${JSON.stringify(problemTypeBase)}.`,
    );
  }
  const logger = options.logger;
  if (logger !== undefined) {
    for (const method of ['debug', 'info', 'warn', 'error'] as const) {
      if (typeof (logger as Partial<InboxLogger>)[method] !== 'function') {
        throw new ConfigurationError(`Expected \`logger\` to have a ${method}() method (a pino logger fits).`);
      }
    }
  }
  const handlerTimeoutMs =
    options.handlerTimeoutMs === undefined
      ? undefined
      : positiveInteger('handlerTimeoutMs', options.handlerTimeoutMs, 0, 2_147_483_647);
  const retentionMs = positiveInteger('retentionMs', options.retentionMs, DAY_MS);
  if (handlerTimeoutMs !== undefined && retentionMs <= handlerTimeoutMs) {
    throw new ConfigurationError(
      `\`retentionMs\` (${retentionMs} ms) must be longer than \`handlerTimeoutMs\` (${handlerTimeoutMs} ms): a key's window starts with its request, so a request that takes that long would store a response that has already expired, and a retry would run it again.`,
    );
  }
  return Object.freeze({
    db: options.db,
    consumer,
    schema: options.schema,
    table: options.table,
    isolationLevel: options.isolationLevel,
    retentionMs,
    inFlightWaitMs: positiveInteger('inFlightWaitMs', options.inFlightWaitMs, 5000, 24 * 60 * 60 * 1000),
    handlerTimeoutMs,
    retryAfterSeconds: positiveInteger('retryAfterSeconds', options.retryAfterSeconds, 1, 86_400),
    headerName,
    headerKey: headerName.toLowerCase(),
    maxKeyLength: positiveInteger('maxKeyLength', options.maxKeyLength, 255, 1024),
    storedHeaders: headerSet('storedHeaders', options.storedHeaders ?? DEFAULT_STORED_HEADERS),
    replayHeader: replayHeader === false ? undefined : replayHeader,
    problemTypeBase,
    logger,
    defaults: compileRoute('', options, BASE_ROUTE as RouteConfig<Req>, false),
  });
}

/**
 * Checks a route's options and merges them over the store's. A route must end up with a
 * `principal` (a resolver, or `false` to opt out): keys shared by every client by mistake
 * would let one client be answered another's response.
 */
export function compileRouteOptions<Req>(
  options: RouteIdempotencyOptions<Req> | undefined,
  defaults: RouteConfig<Req>,
): RouteConfig<Req> {
  let route = defaults;
  if (options !== undefined) {
    if (typeof options !== 'object' || options === null) {
      throw new ConfigurationError('Expected the route options to be an object, e.g. { route: "/charges" }.');
    }
    checkKeys('route.', options, ROUTE_KEYS);
    route = compileRoute('route.', options, defaults, true);
  }
  if (route.principal === undefined) {
    throw new ConfigurationError(
      "The `principal` option is required: give `principal: (request) => request.user?.id` (the authenticated client) so that keys are scoped per client, or `principal: false` to share keys among all clients, where any client that sends another's key is answered its stored response.",
    );
  }
  return route;
}

function compileRoute<Req>(
  prefix: string,
  options: RouteIdempotencyOptions<Req>,
  defaults: RouteConfig<Req>,
  allowRoute: boolean,
): RouteConfig<Req> {
  const route = options.route;
  if (route !== undefined && (typeof route !== 'string' || route.length === 0)) {
    throw new ConfigurationError(`Expected \`${prefix}route\` to be a non-empty string, e.g. "/charges".`);
  }
  if (route !== undefined && !allowRoute) {
    throw new ConfigurationError(
      '`route` names one route: give it in the route options (or leave it out to use the route pattern), not to createIdempotency().',
    );
  }
  if (options.principal !== undefined && options.principal !== false && typeof options.principal !== 'function') {
    throw new ConfigurationError(
      `Expected \`${prefix}principal\` to be a function (request) => string | undefined, e.g. (req) => req.user?.id, or false.`,
    );
  }
  const mismatchStatus = options.mismatchStatus ?? defaults.mismatchStatus;
  if (mismatchStatus !== 409 && mismatchStatus !== 422) {
    throw new ConfigurationError(
      `Expected \`${prefix}mismatchStatus\` to be 422 or 409, got ${String(mismatchStatus)}.`,
    );
  }
  const keyWhenMissing = options.keyWhenMissing ?? defaults.keyWhenMissing;
  if (keyWhenMissing !== 'reject' && keyWhenMissing !== 'derive') {
    throw new ConfigurationError(
      `Expected \`${prefix}keyWhenMissing\` to be 'reject' (400 key-missing) or 'derive' (a key derived from the request), got ${JSON.stringify(keyWhenMissing)}.`,
    );
  }
  return Object.freeze({
    route: route ?? defaults.route,
    principal: options.principal ?? defaults.principal,
    scopeByRoute: bool(`${prefix}scopeByRoute`, options.scopeByRoute, defaults.scopeByRoute),
    fingerprint: compileFingerprint(`${prefix}fingerprint`, options.fingerprint, defaults.fingerprint),
    storeClientErrors: bool(`${prefix}storeClientErrors`, options.storeClientErrors, defaults.storeClientErrors),
    mismatchStatus,
    keyWhenMissing,
  });
}

function compileFingerprint(
  option: string,
  value: FingerprintOptions | undefined,
  defaults: Required<FingerprintOptions>,
): Required<FingerprintOptions> {
  if (value === undefined) return defaults;
  if (typeof value !== 'object' || value === null) {
    throw new ConfigurationError(
      `Expected \`${option}\` to be an object such as { method: true, path: true, body: true }.`,
    );
  }
  for (const key of Object.keys(value)) {
    if (!FINGERPRINT_KEYS.has(key)) {
      throw new ConfigurationError(`Unknown option \`${option}.${key}\`; known: ${[...FINGERPRINT_KEYS].join(', ')}.`);
    }
  }
  const headers = value.headers === undefined ? defaults.headers : [...headerSet(`${option}.headers`, value.headers)];
  return Object.freeze({
    method: bool(`${option}.method`, value.method, defaults.method),
    path: bool(`${option}.path`, value.path, defaults.path),
    body: bool(`${option}.body`, value.body, defaults.body),
    headers: Object.freeze(headers),
  });
}

function checkKeys(prefix: string, options: object, known: readonly string[]): void {
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw new ConfigurationError(`Unknown option \`${prefix}${key}\`; known options: ${known.join(', ')}.`);
    }
  }
}

function headerSet(option: string, value: unknown): ReadonlySet<string> {
  if (!Array.isArray(value)) {
    throw new ConfigurationError(`Expected \`${option}\` to be an array of header names.`);
  }
  const names = new Set<string>();
  for (const name of value) {
    if (typeof name !== 'string' || !TOKEN.test(name)) {
      throw new ConfigurationError(`Expected \`${option}\` to hold header names, got ${JSON.stringify(name)}.`);
    }
    const lower = name.toLowerCase();
    if (option === 'storedHeaders' && NEVER_STORED.has(lower)) {
      throw new ConfigurationError(
        `\`storedHeaders\` cannot hold ${JSON.stringify(name)}: it describes one connection or one message, and is computed again for each answer.`,
      );
    }
    names.add(lower);
  }
  return names;
}
