import type { Subscription, SubscriptionEventName, SubscriptionEvents } from '@inboxkit/rabbitmq';
import { collectEvents } from '../../support/events.ts';

// gate() lives in test/support/gate.ts (the Kafka tests use it too); re-exported for the tests importing it from here.
export { gate } from '../../support/gate.ts';

/** Subscriptions a test file started, closed after each test whatever happened. */
export class Subscriptions {
  readonly #open = new Set<Subscription>();

  add(subscription: Subscription): Subscription {
    this.#open.add(subscription);
    return subscription;
  }

  async closeAll(): Promise<void> {
    const all = [...this.#open];
    this.#open.clear();
    await Promise.all(all.map((subscription) => subscription.close()));
  }
}

/** Records the subscription's events of the given names from now on (collectEvents, typed for RabbitMQ). */
export function collectSubscriptionEvents<K extends SubscriptionEventName>(
  subscription: Subscription,
  ...names: K[]
): { [N in K]: SubscriptionEvents[N][] } {
  return collectEvents<SubscriptionEvents, K>(subscription, ...names);
}
