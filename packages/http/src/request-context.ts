import type { Transaction } from 'kysely';
import { NoIdempotencyContextError } from './errors.js';
import type { IdempotencyContext } from './idempotency.js';

/** What an idempotent Fastify or Express handler can ask about the request it runs for. */
interface RunningRequest {
  readonly trx: object;
  readonly context: IdempotencyContext;
}

/** Requests whose idempotent handler is running, by request object. */
const running = new WeakMap<object, RunningRequest>();

/** @internal Marks a request's handler as running in `trx`. */
export function enterHandler(request: object, trx: object, context: IdempotencyContext): void {
  running.set(request, { trx, context });
}

/** @internal The handler has returned: the transaction is no longer the handler's to use. */
export function leaveHandler(request: object): void {
  running.delete(request);
}

/**
 * The Kysely transaction the request's idempotency key is written in: every write made
 * through it commits together with the key and the stored response, or not at all.
 * Call it from the route's handler (Fastify, Express) while it runs.
 *
 * @throws {NoIdempotencyContextError} outside an idempotent handler.
 * @example
 * ```ts
 * app.post('/charges', { config: { idempotency: true } }, async (request, reply) => {
 *   const trx = transactionOf<DB>(request)
 *   await trx.insertInto('charges').values({ amount_cents: 1200 }).execute()
 *   return reply.code(201).send({ ok: true })
 * })
 * ```
 */
export function transactionOf<DB>(request: object): Transaction<DB> {
  const entry = running.get(request);
  if (entry === undefined) throw new NoIdempotencyContextError('no idempotent handler is running for this request');
  return entry.trx as unknown as Transaction<DB>;
}

/** The key and its inbox id for the request whose idempotent handler is running. */
export function idempotencyOf(request: object): IdempotencyContext {
  const entry = running.get(request);
  if (entry === undefined) throw new NoIdempotencyContextError('no idempotent handler is running for this request');
  return entry.context;
}
