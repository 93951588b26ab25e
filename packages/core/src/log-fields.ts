import type { InboxLogger } from './logger.js';
import type { ProcessOutcome } from './outcome.js';

/**
 * The fields every package logs about a message, under these names (docs/telemetry.md,
 * "Logging"), so that one query finds a message's lines whichever package wrote them.
 */
export interface MessageLogFields {
  /** The inbox's consumer name. */
  readonly consumer: string;
  readonly messageId: string | undefined;
  /** Kafka: where the record is. */
  readonly topic?: string;
  readonly partition?: number;
  readonly offset?: string;
  /** RabbitMQ: where the delivery came from. */
  readonly queue?: string;
  readonly deliveryTag?: number;
  /** `processed`, `duplicate`, `conflict`, `dead_letter` or `retry_later`. */
  readonly outcome?: ProcessOutcome['status'];
  /** Why, for a dead letter or a hand-back. */
  readonly reason?: string;
  readonly attempts?: number;
  /** True when the broker was told to forget it (acked, offset marked); false when handed back. */
  readonly settled?: boolean;
  /** From the delivery's arrival to its settlement, in milliseconds. */
  readonly durationMs?: number;
}

/** The outcome's part of {@link MessageLogFields}. */
export function outcomeLogFields(
  outcome: ProcessOutcome,
): Pick<MessageLogFields, 'outcome' | 'reason' | 'attempts' | 'messageId'> {
  switch (outcome.status) {
    case 'processed':
      return { messageId: outcome.messageId, outcome: outcome.status, attempts: outcome.attempts };
    case 'duplicate':
      return { messageId: outcome.messageId, outcome: outcome.status };
    case 'conflict':
      return { messageId: outcome.messageId, outcome: outcome.status, reason: 'payload_conflict' };
    default:
      return {
        messageId: outcome.messageId,
        outcome: outcome.status,
        reason: outcome.reason,
        attempts: outcome.attempts,
      };
  }
}

/**
 * The debug line an adapter writes when it is done with a message (settled or handed back), with every field of
 * {@link MessageLogFields}. Skipped without building its fields when the logger says debug
 * is off (pino's `isLevelEnabled`). On `@inboxkit/core/adapter`.
 *
 * @example
 * ```ts
 * logHandled(logger, () => ({ consumer, topic, partition, offset, ...outcomeLogFields(outcome), settled, durationMs }))
 * ```
 */
export function logHandled(logger: InboxLogger, fields: () => MessageLogFields): void {
  try {
    if (typeof logger.isLevelEnabled === 'function' && !logger.isLevelEnabled('debug')) return;
    logger.debug(fields(), 'inboxkit: message handled');
  } catch {
    // A logger that throws must not leave a delivery unsettled: the line is lost.
  }
}

/**
 * `logger` with `fields` added to every line (a line's own fields win): how an adapter puts
 * `consumer` on the lines of its parts that do not know it (partition pauses, offset
 * commits, connections). Not for the per-message path. On `@inboxkit/core/adapter`.
 *
 * @example
 * ```ts
 * const logger = loggerWith(config.logger, { consumer: inbox.consumer })
 * ```
 */
export function loggerWith(logger: InboxLogger, fields: Readonly<Record<string, unknown>>): InboxLogger {
  const merged =
    (level: 'debug' | 'info' | 'warn' | 'error') =>
    (own: object, message?: string): void => {
      logger[level]({ ...fields, ...own }, message);
    };
  const bound: InboxLogger = {
    debug: merged('debug'),
    info: merged('info'),
    warn: merged('warn'),
    error: merged('error'),
  };
  if (typeof logger.isLevelEnabled === 'function') {
    const isLevelEnabled = logger.isLevelEnabled.bind(logger);
    return { ...bound, isLevelEnabled };
  }
  return bound;
}
