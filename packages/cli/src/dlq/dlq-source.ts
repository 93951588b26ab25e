import type { DlqEntry } from './dlq-entry.js';

/**
 * What to do with a dead letter once visited: `remove` it from the dead-letter
 * destination (only after its replay was confirmed) or `keep` it there.
 */
export type VisitResult = 'remove' | 'keep';

/** Called for each dead letter in order; `replay()` re-publishes it, resolving once the broker confirmed it. */
export type Visit = (entry: DlqEntry, replay: () => Promise<void>) => Promise<VisitResult>;

/** A dead-letter topic or queue, read in order. */
export interface DlqSource {
  /** What it is, for messages: `topic "payments.dlq"`. */
  readonly name: string;
  /**
   * Visits the dead letters there when the walk starts (not those arriving meanwhile, such
   * as replays dead-lettered again), at most `limit`. With `removing`, a message is
   * removed after `visit` returned `remove`; else nothing is removed.
   */
  walk(
    visit: Visit,
    options: {
      readonly limit: number | undefined;
      readonly removing: boolean;
      /** Told how many dead letters the walk will visit (at most), before the first. */
      readonly onTotal?: (total: number) => void;
    },
  ): Promise<void>;
  close(): Promise<void>;
}
