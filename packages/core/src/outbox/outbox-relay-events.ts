import { SafeEmitter } from '../events.js';
import type { InboxLogger } from '../logger.js';

/** Why a relay stopped claiming for a while. */
export type RelayPauseReason = 'database_unavailable' | 'broker_unavailable' | 'error';

/** The events a relay emits, each with one payload object. */
export interface OutboxRelayEvents {
  /** A batch was confirmed by the broker and deleted from the outbox (after the commit). */
  published: { relay: string; count: number; messageIds: readonly string[]; durationMs: number };
  /** The broker refused a message; it is tried again after `delayMs`. */
  refused: { relay: string; messageId: string; attempts: number; delayMs: number; error: Error };
  /** A message was refused past the retry policy and set aside (`outbox.failed()` lists it). */
  failed: { relay: string; messageId: string; attempts: number; error: Error };
  /**
   * The outbox's backlog, at each poll while the relay is idle (only computed when listened
   * to), read as `outbox.backlog()` reads it: exact up to 10,000 rows, estimated beyond
   * (`pendingEstimated`, `failedEstimated`); `oldestPendingMs` is the age of the earliest
   * enqueued among the first 100 pending in line.
   */
  backlog: {
    relay: string;
    pending: number;
    pendingEstimated: boolean;
    failed: number;
    failedEstimated: boolean;
    oldestPendingMs: number | null;
  };
  /** Postgres or the broker did not answer (or a cycle failed otherwise): nothing was counted; the relay waits `delayMs`. */
  paused: { relay: string; reason: RelayPauseReason; delayMs: number; error: Error };
  /** The first cycle that worked after a pause. */
  resumed: { relay: string; pausedMs: number };
}

/** The name of a relay event (see {@link OutboxRelayEvents}). */
export type OutboxRelayEventName = keyof OutboxRelayEvents;
/** A listener of the relay event `E`, called with its payload. */
export type OutboxRelayListener<E extends OutboxRelayEventName> = (payload: OutboxRelayEvents[E]) => void;

/** A relay's emitter. */
export class OutboxRelayEmitter extends SafeEmitter<OutboxRelayEvents> {
  constructor(logger: InboxLogger) {
    super(['published', 'refused', 'failed', 'backlog', 'paused', 'resumed'], logger, 'outbox relay');
  }
}
