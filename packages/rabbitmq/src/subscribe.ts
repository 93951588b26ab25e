import { compileSubscribeOptions, type SubscribeOptions, type SubscriptionConfig } from './subscribe-options.js';
import { Subscription } from './subscription.js';

/**
 * Subscribes a handler to a queue, effectively once: each delivery runs the handler inside
 * an inbox transaction keyed by its message id, and is acked only after that transaction
 * committed. Duplicates are acked without running the handler; failures are retried, then
 * dead-lettered; an unreachable database hands deliveries back to the queue after a backoff.
 *
 * With `maxBatchSize`, deliveries that arrived together share a transaction; a
 * `bulkHandler` (instead of `handler`) then gets each batch's new messages in one call.
 *
 * Options are checked at once (a wrong one throws `ConfigurationError` naming it); the
 * subscription then connects, consumes and reconnects on its own until `close()`.
 *
 * @throws `ConfigurationError` (from `@inboxkit/core`) (`code: 'INBOX_CONFIGURATION'`) for a
 * missing or invalid option. A broker that is away throws nothing: see
 * {@link "@inboxkit/rabbitmq"!Subscription.ready}, which rejects with {@link "@inboxkit/rabbitmq"!BrokerUnavailableError}
 * (`code: 'INBOX_RABBITMQ_UNAVAILABLE'`) past its `timeoutMs`.
 *
 * @example
 * ```ts
 * const subscription = subscribe({
 *   inbox,
 *   url: 'amqp://guest:guest@localhost:5672',
 *   queue: 'charges',
 *   decode: 'json',
 *   handler: async (trx, message: RabbitMessage<{ userId: string; amountCents: number }>) => {
 *     await trx.insertInto('charges')
 *       .values({ id: message.id, user_id: message.body.userId, amount_cents: message.body.amountCents })
 *       .execute()
 *   },
 * })
 * await subscription.ready()
 * process.once('SIGTERM', async () => {
 *   await subscription.close() // its connection and channels
 *   await db.destroy() // the pool is yours
 * })
 * ```
 */
export function subscribe<DB, T = unknown, R = unknown>(options: SubscribeOptions<DB, T, R>): Subscription {
  const config = compileSubscribeOptions(options);
  // The subscription itself does not depend on the handler's types.
  return new Subscription(config as unknown as SubscriptionConfig<unknown, unknown, unknown>);
}
