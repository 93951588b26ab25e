import type { Subscription } from '@inboxkit/rabbitmq';

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

/** A promise with its resolve function, to hold a handler until the test lets it go. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open: () => void = () => {};
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}
