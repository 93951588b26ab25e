import { InvalidMessageError, toError } from './errors.js';
import type { RetryLaterReason } from './events.js';
import type { InboxMessage } from './inbox-message.js';
import type {
  ConflictOutcome,
  DeadLetterOutcome,
  DuplicateOutcome,
  ProcessedOutcome,
  ProcessOutcome,
} from './outcome.js';

// How an outcome becomes a broker action, once for every adapter (docs/design.md, "Adapters").
// The adapter supplies the broker verbs (publish a dead letter and wait for the broker's
// confirmation, ack, hand back); the order of the steps is decided here:
//
//   processed, duplicate  -> ack
//   dead_letter, conflict -> publish (confirmed) -> inbox.recordDeadLetter -> ack
//   retry_later           -> hand back (no verdict: never acked, never dead-lettered)
//
// A dead letter is published before it is recorded, and recorded before it is acked: a
// crash between two steps leaves at worst a second copy in the dead-letter destination,
// never a message acked without a trace.

/** Why a message goes back to the broker without a verdict. */
export type HandBackReason =
  | RetryLaterReason
  /** The dead-letter publish failed or was not confirmed. */
  | 'dead_letter_publish_failed'
  /** The dead letter was published but Postgres did not answer when it was recorded. */
  | 'dead_letter_record_failed';

/** The part of an `Inbox` settling needs. */
export interface DeadLetterRecorder {
  /** `Inbox.recordDeadLetter`: stores the key so that a redelivery is acked as a duplicate. */
  recordDeadLetter(message: InboxMessage, outcome: DeadLetterOutcome | ConflictOutcome): Promise<void>;
  /**
   * `true`: called for every dead letter, also a conflict or a message without a usable id
   * (a recorder that moves a position, Kafka offsets stored in Postgres). Default: only for
   * dead letters under the message's own id.
   */
  readonly recordsEvery?: boolean;
}

/** A message and what became of it. */
export interface Settlement<M extends InboxMessage = InboxMessage, R = unknown> {
  readonly message: M;
  readonly outcome: ProcessOutcome<R>;
}

/** A message to dead-letter: its outcome is a dead letter or a conflict (dead-lettered as `payload_conflict`). */
export interface DeadLetterEntry<M extends InboxMessage = InboxMessage> {
  readonly message: M;
  readonly outcome: DeadLetterOutcome | ConflictOutcome;
}

/** The broker verbs of {@link settleOutcomes}, for messages settled in order (a partition's records). */
export interface SettleOutcomesSteps<M extends InboxMessage, R> {
  /** Publishes every entry to its dead-letter destination; resolves once the broker confirmed them all. */
  publishDeadLetters(entries: readonly DeadLetterEntry<M>[]): Promise<void>;
  /** A dead letter was published and recorded (called before the ack, in order). */
  deadLettered?(entry: DeadLetterEntry<M>): void;
  /** Acknowledges the first `count` items: each is processed, a duplicate or dead-lettered. */
  ack(count: number, items: readonly Settlement<M, R>[]): void | Promise<void>;
  /** Hands back the item at `index` and everything after it. */
  handBack(index: number, reason: HandBackReason, error: Error): void | Promise<void>;
}

/**
 * Settles outcomes in order, for brokers where acknowledging a message acknowledges those
 * before it (Kafka offsets): the dead letters before the first `retry_later` are published
 * together, then recorded one by one; the items up to the first that could not be settled
 * are acked, and that one is handed back with everything after it. Returns how many items,
 * from the first, were settled.
 */
export async function settleOutcomes<M extends InboxMessage, R>(
  inbox: DeadLetterRecorder,
  items: readonly Settlement<M, R>[],
  steps: SettleOutcomesSteps<M, R>,
): Promise<number> {
  let stop = items.length;
  let reason: HandBackReason = 'database_unavailable';
  let error: Error | undefined;
  let deadLetters: DeadLetterEntry<M>[] | undefined;
  let indexes: number[] | undefined;
  for (let i = 0; i < items.length; i++) {
    const item = items[i] as Settlement<M, R>;
    const outcome = item.outcome;
    if (outcome.status === 'retry_later') {
      stop = i;
      reason = outcome.reason;
      error = outcome.error;
      break;
    }
    if (outcome.status === 'dead_letter' || outcome.status === 'conflict') {
      (deadLetters ??= []).push({ message: item.message, outcome });
      (indexes ??= []).push(i);
    }
  }
  if (deadLetters !== undefined && indexes !== undefined) {
    const failed = await deadLetter(inbox, deadLetters, steps);
    if (failed !== undefined) {
      stop = indexes[failed.entry] as number;
      reason = failed.reason;
      error = failed.error;
    }
  }
  if (stop > 0) await steps.ack(stop, items);
  if (stop < items.length) await steps.handBack(stop, reason, error ?? new Error('the message could not be settled'));
  return stop;
}

/** The broker verbs of {@link settleOutcome}, for one message. */
export interface SettleOutcomeSteps<M extends InboxMessage, R> {
  /** Publishes the dead letter; resolves once the broker confirmed it. */
  publishDeadLetter(entry: DeadLetterEntry<M>): Promise<void>;
  /** Acknowledges the message: processed, a duplicate, or dead-lettered (published and recorded). */
  ack(outcome: ProcessedOutcome<R> | DuplicateOutcome | DeadLetterOutcome | ConflictOutcome): void | Promise<void>;
  /** Hands the message back to the broker without a verdict. */
  handBack(reason: HandBackReason, error: Error): void | Promise<void>;
}

/**
 * Settles one message's outcome: ack it, dead-letter it (publish, record, ack) or hand it
 * back. The one-message form of {@link settleOutcomes}, for brokers that acknowledge each
 * message alone (RabbitMQ).
 */
export async function settleOutcome<M extends InboxMessage, R>(
  inbox: DeadLetterRecorder,
  message: M,
  outcome: ProcessOutcome<R>,
  steps: SettleOutcomeSteps<M, R>,
): Promise<void> {
  switch (outcome.status) {
    case 'processed':
    case 'duplicate':
      return steps.ack(outcome);
    case 'retry_later':
      return steps.handBack(outcome.reason, outcome.error);
    case 'dead_letter':
    case 'conflict': {
      const failed = await deadLetter(inbox, [{ message, outcome }], {
        publishDeadLetters: (entries) => steps.publishDeadLetter(entries[0] as DeadLetterEntry<M>),
      });
      if (failed !== undefined) return steps.handBack(failed.reason, failed.error);
      return steps.ack(outcome);
    }
  }
}

/**
 * The dead-letter sequence: publish every entry (confirmed), then record each in order.
 * Returns the first entry that could not be settled and why, or `undefined`.
 */
async function deadLetter<M extends InboxMessage>(
  inbox: DeadLetterRecorder,
  entries: readonly DeadLetterEntry<M>[],
  steps: Pick<SettleOutcomesSteps<M, unknown>, 'publishDeadLetters' | 'deadLettered'>,
): Promise<{ entry: number; reason: HandBackReason; error: Error } | undefined> {
  try {
    await steps.publishDeadLetters(entries);
  } catch (thrown) {
    return { entry: 0, reason: 'dead_letter_publish_failed', error: toError(thrown) };
  }
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i] as DeadLetterEntry<M>;
    // Only under the message's own, valid id, so that a redelivery is a duplicate; a
    // conflict keeps its key's first content. It throws only when Postgres does not answer.
    if (inbox.recordsEvery === true || recordable(entry)) {
      try {
        await inbox.recordDeadLetter(entry.message, entry.outcome);
      } catch (thrown) {
        return { entry: i, reason: 'dead_letter_record_failed', error: toError(thrown) };
      }
    }
    steps.deadLettered?.(entry);
  }
  return undefined;
}

function recordable(entry: DeadLetterEntry): boolean {
  const { message, outcome } = entry;
  return outcome.status === 'dead_letter' && outcome.messageId !== undefined && outcome.messageId === message.id;
}

/**
 * A conflict as the dead letter it becomes: reason `payload_conflict`, no attempts, first
 * seen now. A dead-letter outcome is returned as it is.
 */
export function asDeadLetter(outcome: DeadLetterOutcome | ConflictOutcome, now = new Date()): DeadLetterOutcome {
  if (outcome.status === 'dead_letter') return outcome;
  return {
    status: 'dead_letter',
    messageId: outcome.messageId,
    reason: 'payload_conflict',
    error: outcome.error,
    attempts: 0,
    firstSeenAt: now,
  };
}

/**
 * The outcome of a message the adapter could not turn into an inbox message (no id, a
 * body the decoder refused): dead-lettered as `invalid_message` without an attempt.
 * `messageId` is the id when the message had a usable one, else `undefined` (an empty
 * string counts as none).
 */
export function invalidMessageOutcome(error: unknown, messageId: string | undefined): DeadLetterOutcome {
  return {
    status: 'dead_letter',
    messageId: messageId === undefined || messageId.length === 0 ? undefined : messageId,
    reason: 'invalid_message',
    error: error instanceof InvalidMessageError ? error : toError(error),
    attempts: 0,
    firstSeenAt: new Date(),
  };
}
