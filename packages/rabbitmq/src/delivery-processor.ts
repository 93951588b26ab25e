import type {
  ConflictOutcome,
  DeadLetterOutcome,
  DuplicateOutcome,
  ProcessedOutcome,
  ProcessOutcome,
} from '@inboxkit/core';
import {
  asDeadLetter,
  deadLetterFailure,
  type HandBackReason,
  type InboxTelemetry,
  inboxTelemetry,
  invalidMessageOutcome,
  logHandled,
  outcomeLogFields,
  settleOutcome,
  toError,
  traceHeaders,
  truncateUtf8,
} from '@inboxkit/core/adapter';
import { BatchCollector } from './batch-collector.js';
import type { ConfirmPublisher } from './confirm-publisher.js';
import {
  DEAD_LETTER_HEADERS,
  type FailureInfo,
  failureHeaders,
  originalAddress,
  republishOptions,
} from './dead-letter-headers.js';
import { decodeBody } from './decode.js';
import type { Delivery } from './delivery.js';
import { batchSource, deliverySource } from './delivery-telemetry.js';
import { FailureStreak } from './failure-streak.js';
import { readMessageId } from './message-id.js';
import type { OwnRequeues } from './own-requeues.js';
import type { RabbitMessage } from './rabbit-message.js';
import { sleep } from './sleep.js';
import type { SubscriptionConfig } from './subscribe-options.js';
import type { RequeueReason, SubscriptionEmitter } from './subscription-events.js';

const EMPTY_HEADERS: Readonly<Record<string, unknown>> = Object.freeze({});

/** The error message travelling with a retry, in bytes of UTF-8. */
const ERROR_MESSAGE_BYTES = 1024;

/** What is settled: the message, or only its id and content when it could not be read. */
type SettledMessage = { readonly id: string; readonly payload: Buffer };

/** Headers of a reply. */
export const REPLY_HEADERS = {
  /** The id of the request this replies to. */
  messageId: 'x-inboxkit-message-id',
  /** `true` when the request was a duplicate and the reply carries the stored result. */
  duplicate: 'x-inboxkit-duplicate',
} as const;

/**
 * Turns one delivery into one inbox call and its outcome into exactly one ack or nack
 * (docs/design.md, "Failures" and "Adapters"):
 *
 * | outcome | what the broker is told |
 * | --- | --- |
 * | processed, duplicate | reply first when asked (`replyTo` + `correlationId`), then ack |
 * | dead_letter, conflict, bad message | publish to the dead-letter target (confirmed), record it in the inbox, then ack; or a broker-delayed retry |
 * | retry_later (Postgres down, lock timeout) | nack with requeue after a backoff; never dead-lettered |
 * | a publish or record that failed | nack with requeue after a backoff |
 *
 * Nothing here throws: an unexpected error requeues the delivery after a backoff.
 */
export class DeliveryProcessor<DB, T, R> {
  readonly #config: SubscriptionConfig<DB, T, R>;
  readonly #publisher: ConfirmPublisher;
  readonly #events: SubscriptionEmitter;
  readonly #ownRequeues: OwnRequeues;
  readonly #signal: AbortSignal;
  readonly #streak: FailureStreak;
  readonly #batches: BatchCollector<RabbitMessage<T>, ProcessOutcome<R>> | undefined;
  readonly #telemetry: InboxTelemetry;

  constructor(
    config: SubscriptionConfig<DB, T, R>,
    publisher: ConfirmPublisher,
    events: SubscriptionEmitter,
    ownRequeues: OwnRequeues,
    signal: AbortSignal,
  ) {
    this.#config = config;
    this.#publisher = publisher;
    this.#events = events;
    this.#ownRequeues = ownRequeues;
    this.#signal = signal;
    this.#streak = new FailureStreak(config.requeueBackoff);
    this.#telemetry = inboxTelemetry(config.inbox);
    this.#batches =
      config.maxBatchSize > 1
        ? new BatchCollector(config.maxBatchSize, (messages) => this.#runBatch(messages))
        : undefined;
  }

  /** Handles a delivery to its settlement. Never rejects. */
  async handle(delivery: Delivery): Promise<void> {
    const started = performance.now();
    // The delivery's process span, active while it is processed and settled (docs/telemetry.md).
    const trace = this.#telemetry.message(() => deliverySource(this.#config.queue, delivery.raw));
    let unexpected: Error | undefined;
    await trace.run(async () => {
      unexpected = await this.#handleSafely(delivery, (message) => trace.bind(message));
    });
    const { outcome, finished } = delivery;
    trace.end(outcome, finished, unexpected);
    if (outcome !== undefined) {
      logHandled(this.#config.logger, () => ({
        ...this.#fields(delivery),
        ...outcomeLogFields(outcome),
        settled: finished,
        durationMs: Math.round(performance.now() - started),
      }));
    }
  }

  /** The fields every line about a delivery carries (docs/telemetry.md, "Logging"). */
  #fields(delivery: Delivery): { consumer: string; messageId: string | undefined; queue: string; deliveryTag: number } {
    return {
      consumer: this.#config.consumer,
      messageId: delivery.id,
      queue: this.#config.queue,
      deliveryTag: delivery.raw.fields.deliveryTag,
    };
  }

  /** {@link handle} without its span; resolves with the unexpected error, if one was met. */
  async #handleSafely(delivery: Delivery, traced: (message: object) => void): Promise<Error | undefined> {
    try {
      await this.#handle(delivery, traced);
      return undefined;
    } catch (thrown) {
      const error = toError(thrown);
      this.#config.logger.error(
        { ...this.#fields(delivery), err: error },
        'inboxkit: unexpected error while handling a delivery; it is requeued',
      );
      this.#events.emit('error', { error, during: 'handling a delivery' });
      if (!delivery.settled) await this.#requeueLater(delivery, 'unexpected_error', error);
      return error;
    }
  }

  async #handle(delivery: Delivery, traced: (message: object) => void): Promise<void> {
    const { inbox, handler, queue } = this.#config;
    const raw = delivery.raw;
    let id: string;
    try {
      id = readMessageId(raw, this.#config.messageId);
    } catch (error) {
      return this.#settleOutcome(delivery, { id: '', payload: raw.content }, invalidMessageOutcome(error, undefined));
    }
    delivery.id = id;
    let body: T;
    try {
      body = decodeBody(this.#config.decoder, raw, id);
    } catch (error) {
      return this.#undecodable(delivery, id, error);
    }
    const headers = raw.properties.headers ?? EMPTY_HEADERS;
    const deliveryCount = deliveryCountOf(headers);
    const message: RabbitMessage<T> = {
      id,
      payload: raw.content,
      content: raw.content,
      body,
      properties: raw.properties,
      fields: raw.fields,
      headers,
      redelivered: raw.fields.redelivered,
      deliveryCount,
      queue,
    };
    traced(message);
    // A redelivery may be the repeat of one that crashed a process: crash-loop protection
    // (counted in Postgres, run alone). Not when this process itself handed it back.
    const suspect = (message.redelivered || deliveryCount > 0) && !this.#ownRequeues.take(id);
    const outcome =
      this.#batches !== undefined && !suspect
        ? await this.#batches.submit(message)
        : await inbox.process(message, handler, { suspect });
    return this.#settle(delivery, message, outcome);
  }

  /**
   * One batch of deliveries that arrived together: one transaction, an outcome per message;
   * one handler call for all with `bulkHandler`. A batch of one takes the single path,
   * which has no batch bookkeeping to pay for.
   */
  async #runBatch(messages: readonly RabbitMessage<T>[]): Promise<readonly ProcessOutcome<R>[]> {
    const { inbox, handler, bulkHandler, queue } = this.#config;
    const first = messages[0];
    if (messages.length === 1 && first !== undefined) return [await inbox.process(first, handler)];
    // One span for the transaction, linked to each delivery's own span.
    const trace = this.#telemetry.batchTrace(batchSource(queue), () =>
      messages.map((message) => ({ ...batchSource(queue), headers: undefined, message })),
    );
    let outcomes: readonly ProcessOutcome<R>[] = [];
    let thrown: unknown;
    try {
      outcomes = await trace.run(async () =>
        bulkHandler !== undefined
          ? (await inbox.processBulk(messages, bulkHandler)).outcomes
          : (await inbox.processBatch(messages, handler)).outcomes,
      );
      return outcomes;
    } catch (error) {
      thrown = error;
      throw error;
    } finally {
      trace.end(outcomes, outcomes.length, thrown);
    }
  }

  /**
   * The RabbitMQ side of an outcome: a message that failed for good goes through the retry
   * queue while broker-delayed retries are left, and its attempts add up across them.
   */
  async #settle(delivery: Delivery, message: RabbitMessage<T>, outcome: ProcessOutcome<R>): Promise<void> {
    delivery.outcome = outcome;
    if (outcome.status !== 'dead_letter') return this.#settleOutcome(delivery, message, outcome, message);
    const headers = message.headers;
    const retries = numberHeader(headers[DEAD_LETTER_HEADERS.retries]);
    const earlier = numberHeader(headers[DEAD_LETTER_HEADERS.attempts]);
    const firstSeen = dateHeader(headers[DEAD_LETTER_HEADERS.firstSeenAt]) ?? outcome.firstSeenAt;
    const retry = this.#config.delayedRetry;
    const delayMs = retry?.delaysMs[retries];
    if (retry !== undefined && delayMs !== undefined && outcome.reason === 'retries_exhausted') {
      return this.#scheduleRetry(delivery, message, outcome, retry.queue, retries + 1, delayMs, earlier, firstSeen);
    }
    const total = { ...outcome, attempts: earlier + outcome.attempts, firstSeenAt: firstSeen };
    return this.#settleOutcome(delivery, message, total, message);
  }

  /**
   * Core's settling sequence with RabbitMQ's verbs: ack; publish a dead letter with the
   * failure headers and wait for the broker's confirm, record it, ack; or nack with requeue
   * after a backoff. With `deadLetter: 'nack'` the broker dead-letters it instead.
   */
  #settleOutcome(
    delivery: Delivery,
    message: SettledMessage,
    outcome: ProcessOutcome<R>,
    rabbit?: RabbitMessage<T>,
  ): Promise<void> {
    // The inbox's own outcome when there was one (its span counts it once), else the adapter's.
    delivery.outcome ??= outcome;
    if (
      this.#config.deadLetter.kind === 'nack' &&
      (outcome.status === 'dead_letter' || outcome.status === 'conflict')
    ) {
      return this.#nackDeadLetter(delivery, message, asDeadLetter(outcome));
    }
    let route: { exchange: string; routingKey: string } | undefined;
    return settleOutcome(this.#config.inbox, message, outcome, {
      publishDeadLetter: async (entry) => {
        route = await this.#publishDeadLetter(delivery, entry.outcome);
      },
      ack: (settled) => this.#ack(delivery, settled, rabbit, route),
      handBack: (reason, error) => this.#requeueLater(delivery, requeueReason(reason), error),
    });
  }

  async #ack(
    delivery: Delivery,
    outcome: ProcessedOutcome<R> | DuplicateOutcome | DeadLetterOutcome | ConflictOutcome,
    message: RabbitMessage<T> | undefined,
    route: { exchange: string; routingKey: string } | undefined,
  ): Promise<void> {
    switch (outcome.status) {
      case 'processed':
        this.#streak.reset();
        if (message === undefined) break;
        return this.#done(delivery, message, outcome.result, false);
      case 'duplicate':
        this.#streak.reset();
        if (message === undefined || outcome.previousStatus === 'dead_lettered') break;
        return this.#done(delivery, message, outcome.result, true);
      default:
        delivery.ack();
        this.#deadLettered(delivery, asDeadLetter(outcome), route?.exchange ?? '', route?.routingKey ?? '');
        return;
    }
    delivery.ack();
  }

  /** Processed or a duplicate: reply when asked, then ack. */
  async #done(delivery: Delivery, message: RabbitMessage<T>, result: unknown, duplicate: boolean): Promise<void> {
    const replyTo = message.properties.replyTo;
    const correlationId = message.properties.correlationId;
    if (typeof replyTo === 'string' && replyTo.length > 0 && typeof correlationId === 'string') {
      if (!delivery.live) return delivery.abandon();
      try {
        // Not mandatory: a requester that went away must not keep the request unacked.
        await this.#publisher.publish({
          exchange: '',
          routingKey: replyTo,
          content: Buffer.from(this.#replyJson(message.id, result)),
          options: {
            correlationId,
            contentType: 'application/json',
            headers: { [REPLY_HEADERS.messageId]: message.id, [REPLY_HEADERS.duplicate]: duplicate },
          },
        });
      } catch (error) {
        // Committed but not answered: the redelivery is a duplicate and gets the stored result.
        return this.#requeueLater(delivery, 'publish_failed', toError(error));
      }
    }
    delivery.ack();
  }

  async #scheduleRetry(
    delivery: Delivery,
    message: RabbitMessage<T>,
    outcome: DeadLetterOutcome,
    retryQueue: string,
    retry: number,
    delayMs: number,
    earlierAttempts: number,
    firstSeenAt: Date,
  ): Promise<void> {
    if (!delivery.live) return delivery.abandon();
    const original = originalAddress(delivery.raw);
    try {
      await this.#publisher.publish({
        exchange: '',
        routingKey: retryQueue,
        content: delivery.raw.content,
        options: republishOptions(
          delivery.raw,
          {
            [DEAD_LETTER_HEADERS.retries]: retry,
            [DEAD_LETTER_HEADERS.attempts]: earlierAttempts + outcome.attempts,
            [DEAD_LETTER_HEADERS.firstSeenAt]: firstSeenAt.toISOString(),
            [DEAD_LETTER_HEADERS.originalExchange]: original.exchange,
            [DEAD_LETTER_HEADERS.originalRoutingKey]: original.routingKey,
            [DEAD_LETTER_HEADERS.errorName]: outcome.error.name,
            [DEAD_LETTER_HEADERS.errorMessage]: truncateUtf8(outcome.error.message, ERROR_MESSAGE_BYTES),
            ...traceHeaders(),
          },
          { expiration: String(delayMs), mandatory: true },
        ),
      });
    } catch (error) {
      return this.#requeueLater(delivery, 'publish_failed', toError(error));
    }
    delivery.ack();
    this.#config.logger.info(
      {
        ...this.#fields(delivery),
        outcome: outcome.status,
        reason: outcome.reason,
        attempts: outcome.attempts,
        retry,
        delayMs,
        retryQueue,
      },
      'inboxkit: handler failed; message sent through the retry queue',
    );
    this.#events.emit('retryScheduled', { messageId: message.id, retry, delayMs });
  }

  /** A message with an id whose content the decoder refused. */
  async #undecodable(delivery: Delivery, id: string, error: unknown): Promise<void> {
    const message = { id, payload: delivery.raw.content };
    if (delivery.raw.fields.redelivered) {
      // Dead-lettered already, but the ack was lost: do not publish it twice.
      let stored: Awaited<ReturnType<SubscriptionConfig<DB, T, R>['inbox']['find']>>;
      try {
        stored = await this.#config.inbox.find(id);
      } catch (thrown) {
        return this.#requeueLater(delivery, 'database_unavailable', toError(thrown));
      }
      if (stored !== undefined) {
        delivery.ack();
        return;
      }
    }
    return this.#settleOutcome(delivery, message, invalidMessageOutcome(error, id));
  }

  /**
   * Publishes the message to the dead-letter target with the failure headers and waits for
   * the broker's confirm; returns where it went. Throws when it was not confirmed, or when
   * the channel is gone (the hand-back then abandons the delivery: the broker redelivers it).
   */
  async #publishDeadLetter(
    delivery: Delivery,
    outcome: DeadLetterOutcome | ConflictOutcome,
  ): Promise<{ exchange: string; routingKey: string }> {
    const route = this.#config.deadLetter;
    if (route.kind === 'nack') throw new Error('deadLetter is nack: the broker dead-letters the message');
    if (!delivery.live) throw new Error('the channel of the delivery is gone');
    const raw = delivery.raw;
    const routingKey = route.routingKey ?? originalAddress(raw).routingKey;
    const failedAt = new Date();
    const info: FailureInfo = {
      ...deadLetterFailure(outcome, failedAt),
      failedAt,
      consumer: this.#config.consumer,
      queue: this.#config.queue,
    };
    await this.#publisher.publish({
      exchange: route.exchange,
      routingKey,
      content: raw.content,
      // The trace goes on from this delivery's process span (docs/telemetry.md).
      options: republishOptions(raw, { ...failureHeaders(raw, info), ...traceHeaders() }, { mandatory: true }),
    });
    return { exchange: route.exchange, routingKey };
  }

  /**
   * `deadLetter: 'nack'`: rejects the message to the queue's dead-letter exchange, then
   * records it. Recorded after the nack: had we recorded it first and died before the nack,
   * the redelivery would be acked as a duplicate and never reach the dead-letter exchange.
   */
  async #nackDeadLetter(delivery: Delivery, message: SettledMessage, outcome: DeadLetterOutcome): Promise<void> {
    if (!delivery.nack(false)) return;
    this.#deadLettered(delivery, outcome, '', delivery.raw.fields.routingKey);
    if (outcome.reason === 'payload_conflict' || outcome.messageId === undefined || outcome.messageId !== message.id) {
      return;
    }
    await this.#config.inbox.recordDeadLetter(message, outcome).catch((error: unknown) => {
      this.#config.logger.warn(
        { ...this.#fields(delivery), outcome: outcome.status, reason: outcome.reason, err: error },
        'inboxkit: dead letter nacked but not recorded; a redelivery of the same id would be handled again',
      );
    });
  }

  #deadLettered(delivery: Delivery, outcome: DeadLetterOutcome, exchange: string, routingKey: string): void {
    this.#config.logger.warn(
      {
        ...this.#fields(delivery),
        messageId: outcome.messageId,
        outcome: outcome.status,
        reason: outcome.reason,
        attempts: outcome.attempts,
        err: outcome.error,
        deadLetterExchange: exchange,
        deadLetterRoutingKey: routingKey,
      },
      'inboxkit: message dead-lettered',
    );
    this.#events.emit('deadLettered', { messageId: outcome.messageId, reason: outcome.reason, exchange, routingKey });
  }

  /**
   * Hands a delivery back to the queue after a backoff (nack with requeue), without a
   * verdict: Postgres unreachable, a lock held by another delivery, a publish that was
   * not confirmed. It holds its prefetch slot meanwhile, which slows the consumer down
   * instead of spinning. `close()` cuts the wait short.
   */
  async #requeueLater(delivery: Delivery, reason: RequeueReason, error: Error): Promise<void> {
    if (!delivery.live) return delivery.abandon();
    const delayMs = this.#streak.fail();
    this.#events.emit('requeued', { messageId: delivery.id, reason, delayMs, error });
    this.#config.logger.warn(
      { ...this.#fields(delivery), outcome: delivery.outcome?.status, reason, delayMs, err: error },
      'inboxkit: delivery handed back to the queue after a backoff',
    );
    await sleep(delayMs, this.#signal);
    if (delivery.nack(true) && delivery.id !== undefined) this.#ownRequeues.add(delivery.id);
  }

  /**
   * The reply's JSON, canonical: object keys sorted, BigInts as strings. A duplicate's
   * result comes back from `jsonb`, which reorders keys; both replies go through this, so a
   * retried request gets the very bytes of the first reply.
   */
  #replyJson(id: string, result: unknown): string {
    try {
      return JSON.stringify(result ?? null, canonical);
    } catch (error) {
      this.#config.logger.error(
        { err: error, messageId: id },
        'inboxkit: the result cannot be sent as JSON; replying null',
      );
      return 'null';
    }
  }
}

function canonical(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const record = value as Record<string, unknown>;
    return Object.fromEntries(
      Object.keys(record)
        .sort()
        .map((key) => [key, record[key]]),
    );
  }
  return value;
}

/** What core's hand-back reasons are called in the `requeued` event. */
function requeueReason(reason: HandBackReason): RequeueReason {
  if (reason === 'dead_letter_publish_failed') return 'publish_failed';
  if (reason === 'dead_letter_record_failed') return 'database_unavailable';
  return reason;
}

/** A quorum queue's `x-delivery-count`: how many times the message came back. */
function deliveryCountOf(headers: Readonly<Record<string, unknown>>): number {
  return numberHeader(headers['x-delivery-count']);
}

function numberHeader(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : 0;
}

function dateHeader(value: unknown): Date | undefined {
  if (typeof value !== 'string') return undefined;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date;
}
