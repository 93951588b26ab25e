/**
 * Message ids this process itself handed back to the broker (nack with requeue, or a
 * delivery abandoned with a lost channel) while it lived on.
 *
 * The broker flags such a message `redelivered` when it comes back, just as if a crash had
 * returned it, and the inbox treats redeliveries as crash-loop suspects: counted in
 * Postgres before the handler and run alone. A message requeued because Postgres was down
 * would then move towards the crash-loop limit without any crash, and be dead-lettered
 * after a few outages. A process that is still alive knows better: when a redelivery's id
 * is here, the process did not crash on it, and it is handled as an ordinary delivery.
 *
 * Each entry is used once. Bounded: past `capacity` the oldest are forgotten (a forgotten
 * one is merely treated as a suspect again).
 */
export class OwnRequeues {
  readonly #capacity: number;
  readonly #counts = new Map<string, number>();

  constructor(capacity = 10_000) {
    this.#capacity = capacity;
  }

  add(id: string): void {
    this.#counts.set(id, (this.#counts.get(id) ?? 0) + 1);
    if (this.#counts.size > this.#capacity) {
      const oldest = this.#counts.keys().next();
      if (oldest.done !== true) this.#counts.delete(oldest.value);
    }
  }

  /** True (and forgets one) when `id` was requeued by this process. */
  take(id: string): boolean {
    const count = this.#counts.get(id);
    if (count === undefined) return false;
    if (count <= 1) this.#counts.delete(id);
    else this.#counts.set(id, count - 1);
    return true;
  }

  get size(): number {
    return this.#counts.size;
  }
}
