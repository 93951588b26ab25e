import { type Backoff, backoffDelayMs } from '@inboxkit/core/adapter';

/**
 * The backoff of a run of failures shared by concurrent deliveries (Postgres down fails all
 * of the prefetch at once). The step grows once per backoff period, not once per failing
 * delivery: a hundred deliveries failing together wait about as long as one would, and
 * the wait grows with the length of the outage. A success ends the run.
 */
export class FailureStreak {
  readonly #backoff: Backoff;
  readonly #now: () => number;
  #step = 0;
  #nextStepAt = 0;

  constructor(backoff: Backoff, now: () => number = Date.now) {
    this.#backoff = backoff;
    this.#now = now;
  }

  /** Records a failure; returns how long to wait before handing the delivery back, in milliseconds. */
  fail(): number {
    const now = this.#now();
    if (this.#step === 0 || now >= this.#nextStepAt) {
      this.#step++;
      const base = Math.min(
        this.#backoff.maxDelayMs,
        this.#backoff.minDelayMs * this.#backoff.factor ** (this.#step - 1),
      );
      this.#nextStepAt = now + base;
    }
    return backoffDelayMs(this.#backoff, this.#step);
  }

  reset(): void {
    this.#step = 0;
    this.#nextStepAt = 0;
  }

  /** Failures in a row so far, counted in backoff steps. */
  get step(): number {
    return this.#step;
  }
}
