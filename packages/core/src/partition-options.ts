import { ConfigurationError } from './errors.js';
import { positiveInteger } from './option-checks.js';

/**
 * How a time-partitioned inbox table is cut (docs/retention.md). Given to
 * `migrateInbox(db, { partitioned })`; stored in the table's maintenance function, so every
 * process that purges uses the same settings.
 *
 * @example
 * ```ts
 * await migrateInbox(db, { partitioned: { intervalMs: 24 * 3600_000, premake: 4, retentionMs: 7 * 24 * 3600_000 } })
 * ```
 */
export interface PartitionOptions {
  /**
   * Length of one partition, in milliseconds: a whole number of seconds, from one second
   * to 31 days. Partitions start at multiples of it counted from 2000-01-01 00:00 UTC.
   * Default one day (`86_400_000`).
   */
  readonly intervalMs?: number;
  /** Partitions kept ready after the current one (created by `purge()`). Default `4`. */
  readonly premake?: number;
  /**
   * The table's retention floor, in milliseconds: a partition is dropped only once all of
   * its keys are older than this, whatever `retentionMs` or `olderThanMs` a purging inbox
   * names (the table is shared by every consumer writing to it). Default 7 days.
   */
  readonly retentionMs?: number;
}

/** The partition options, checked. */
export interface PartitionSettings {
  readonly intervalMs: number;
  readonly premake: number;
  readonly retentionMs: number;
}

const SECOND_MS = 1000;
const DAY_MS = 86_400_000;
const KNOWN = new Set(['intervalMs', 'premake', 'retentionMs']);

export function compilePartitionOptions(options: PartitionOptions | true): PartitionSettings {
  const given: PartitionOptions = options === true ? {} : options;
  if (typeof given !== 'object' || given === null) {
    throw new ConfigurationError(
      'Expected `partitioned` to be true or an object { intervalMs, premake, retentionMs }.',
    );
  }
  for (const key of Object.keys(given)) {
    if (!KNOWN.has(key)) {
      throw new ConfigurationError(`Unknown partition option \`${key}\`; known options: ${[...KNOWN].join(', ')}.`);
    }
  }
  const intervalMs = positiveInteger('partitioned.intervalMs', given.intervalMs, DAY_MS, 31 * DAY_MS);
  if (intervalMs % SECOND_MS !== 0) {
    throw new ConfigurationError(
      `Expected \`partitioned.intervalMs\` to be a whole number of seconds, got ${intervalMs}.`,
    );
  }
  return Object.freeze({
    intervalMs,
    premake: positiveInteger('partitioned.premake', given.premake, 4, 1000),
    retentionMs: positiveInteger('partitioned.retentionMs', given.retentionMs, 7 * DAY_MS),
  });
}
