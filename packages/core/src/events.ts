import type { InboxLogger } from './logger.js';

/** Why a message was dead-lettered. */
export type DeadLetterReason =
  | 'non_retryable'
  | 'retries_exhausted'
  | 'invalid_message'
  | 'payload_conflict'
  | 'crash_loop';

/** Why a message must come back later instead of being acked. */
export type RetryLaterReason = 'database_unavailable' | 'lock_timeout';

/** The events an inbox emits, each with one payload object. */
export interface InboxEvents {
  /** The handler ran and its transaction committed. */
  processed: { consumer: string; messageId: string; attempts: number; durationMs: number };
  /** The id was already in the inbox; the handler did not run. */
  duplicate: { consumer: string; messageId: string; previousStatus: StoredStatus };
  /** The id was already in the inbox with a different payload fingerprint. */
  conflict: { consumer: string; messageId: string };
  /** An attempt failed and another one follows after `delayMs`. */
  retry: { consumer: string; messageId: string; attempt: number; delayMs: number; error: Error };
  /** The message is to be dead-lettered. */
  deadLetter: {
    consumer: string;
    messageId: string | undefined;
    reason: DeadLetterReason;
    attempts: number;
    error: Error;
  };
  /** Nothing was decided (database unavailable, lock timeout): the message must come back. */
  retryLater: { consumer: string; messageId: string | undefined; reason: RetryLaterReason; error: Error };
  /** A purge finished. */
  purged: {
    consumer: string;
    deleted: number;
    batches: number;
    skipped: boolean;
    partitions?: { created: number; dropped: number; blocked: number };
  };
}

/** The status stored with a key. */
export type StoredStatus = 'processed' | 'dead_lettered';

/** The name of an inbox event (see {@link InboxEvents}). */
export type InboxEventName = keyof InboxEvents;
/** A listener of the event `E`, called with its payload. */
export type InboxListener<E extends InboxEventName> = (payload: InboxEvents[E]) => void;

/**
 * A typed event emitter whose `emit` never throws: a listener's exception is logged and
 * processing goes on (unlike Node's EventEmitter, an `error` event without a listener is
 * not thrown either). Unknown event names are rejected when a listener is added. The inbox
 * and the adapters each extend it with their own event map.
 *
 * @example
 * ```ts
 * class MyEmitter extends SafeEmitter<{ done: { id: string } }> {
 *   constructor(logger: InboxLogger) { super(['done'], logger, 'my component') }
 * }
 * ```
 */
export class SafeEmitter<Events extends object> {
  readonly #listeners = new Map<keyof Events, Set<(payload: never) => void>>();
  readonly #names: ReadonlySet<keyof Events>;
  readonly #logger: InboxLogger;
  readonly #label: string;

  constructor(names: ReadonlyArray<keyof Events>, logger: InboxLogger, label: string) {
    this.#names = new Set(names);
    this.#logger = logger;
    this.#label = label;
  }

  /** Adds a listener; returns a function that removes it. */
  on<E extends keyof Events>(event: E, listener: (payload: Events[E]) => void): () => void {
    if (!this.#names.has(event)) {
      throw new TypeError(
        `Unknown ${this.#label} event ${JSON.stringify(event)}; expected one of ${[...this.#names].map(String).join(', ')}.`,
      );
    }
    let set = this.#listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener as (payload: never) => void);
    return () => this.off(event, listener);
  }

  /** Removes a listener added with `on`. */
  off<E extends keyof Events>(event: E, listener: (payload: Events[E]) => void): void {
    this.#listeners.get(event)?.delete(listener as (payload: never) => void);
  }

  /** True when someone listens to `event` (lets a hot path skip building payloads). */
  has(event: keyof Events): boolean {
    return (this.#listeners.get(event)?.size ?? 0) > 0;
  }

  /** Calls the listeners of `event` with `payload`; a listener that throws is logged, never rethrown. */
  emit<E extends keyof Events>(event: E, payload: Events[E]): void {
    const set = this.#listeners.get(event);
    if (set === undefined || set.size === 0) return;
    for (const listener of set) {
      try {
        (listener as (payload: Events[E]) => void)(payload);
      } catch (error) {
        this.#logger.error({ err: error, event }, `inboxkit: a ${this.#label} event listener threw; ignored`);
      }
    }
  }
}

/** The inbox's emitter. */
export class InboxEmitter extends SafeEmitter<InboxEvents> {
  constructor(logger: InboxLogger) {
    super(['processed', 'duplicate', 'conflict', 'retry', 'deadLetter', 'retryLater', 'purged'], logger, 'inbox');
  }
}
