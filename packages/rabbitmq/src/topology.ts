import type { AmqpChannel } from './amqp-client.js';
import type { DeadLetterRoute, TopologyOptions } from './subscribe-options.js';

/** What {@link assertTopology} declares. */
export interface TopologyPlan {
  readonly queue: string;
  readonly options: TopologyOptions;
  readonly deadLetter: DeadLetterRoute;
  readonly retryQueue: string | undefined;
}

/**
 * Declares the subscription's queues and exchanges (idempotent: an existing one with the
 * same settings is left as it is; one with other settings makes the broker close the
 * channel with 406 PRECONDITION_FAILED, reported as a failed connect attempt):
 * - the work queue, durable, with `queueArguments`;
 * - the dead-letter queue, durable; a dead-letter exchange as a durable fanout exchange,
 *   bound to the dead-letter queue when one is named;
 * - the retry queue, durable, dead-lettering expired messages back to the work queue
 *   through the default exchange.
 */
export async function assertTopology(channel: AmqpChannel, plan: TopologyPlan): Promise<void> {
  await channel.assertQueue(plan.queue, { durable: true, arguments: plan.options.queueArguments });
  const deadLetter = plan.deadLetter;
  if (deadLetter.kind === 'publish') {
    if (deadLetter.queue !== undefined) await channel.assertQueue(deadLetter.queue, { durable: true });
    if (deadLetter.exchange !== '') {
      await channel.assertExchange(deadLetter.exchange, 'fanout', { durable: true });
      if (deadLetter.queue !== undefined) await channel.bindQueue(deadLetter.queue, deadLetter.exchange, '');
    }
  }
  if (plan.retryQueue !== undefined) {
    await channel.assertQueue(plan.retryQueue, {
      durable: true,
      arguments: { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': plan.queue },
    });
  }
}
