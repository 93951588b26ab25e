import type { ProcessOutcome } from '@inboxkit/core';

/**
 * Crash-loop protection for one partition (docs/design.md, "Crash loops").
 *
 * Whatever a crashed process had finished is in the inbox, so after a partition is
 * assigned the replayed records are duplicates until the one it died on. That one lies
 * among the first records not yet in the inbox, at most one batch of them (the batch that
 * was in flight: `size` records, 1 in `eachMessage` mode). Those records are processed one
 * at a time as suspects (their attempt committed in Postgres before the handler runs, alone
 * across the inbox); past the window the partition goes back to the hot path, which pays
 * nothing for this.
 */
export class CrashLoopWindow {
  /** Suspects still to process; 0 once the window is over. */
  #remaining: number;
  /** True once the first record not yet in the inbox was met: the window counts from it. */
  #foundNew = false;

  constructor(size: number) {
    this.#remaining = size;
  }

  /** True while records of the partition must be processed one at a time as suspects. */
  get open(): boolean {
    return this.#remaining > 0;
  }

  /** Counts a suspect's outcome. Records already in the inbox (or not processed) do not open the window. */
  count(outcome: ProcessOutcome): void {
    if (outcome.status === 'retry_later') return;
    if (!this.#foundNew) {
      const isNew =
        outcome.status === 'processed' || (outcome.status === 'dead_letter' && outcome.reason !== 'invalid_message');
      if (!isNew) return;
      this.#foundNew = true;
    }
    this.#remaining--;
  }
}
