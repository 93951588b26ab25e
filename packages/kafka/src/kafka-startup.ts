import {
  ConfigurationError,
  InboxError,
  retryUntilReady,
  type StartupRetry,
  type StartupWaitOptions,
} from '@inboxkit/core';
import type { KafkaAdmin, KafkaConsumer } from './kafka-client.js';

/**
 * Kafka did not let the consumer start within `subscribe.timeoutMs`: the kafkajs consumer or
 * the adapter's admin client could not connect, or the subscription failed, on every attempt.
 *
 * | code | meaning |
 * | --- | --- |
 * | `INBOX_KAFKA_UNAVAILABLE` | start-up gave up waiting for the broker; `cause` is the last attempt's error |
 */
export class KafkaUnavailableError extends InboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('INBOX_KAFKA_UNAVAILABLE', message, options);
  }
}

/** The start-up steps, in order. */
export type KafkaStartupStep = 'connect-kafka-consumer' | 'connect-admin' | 'subscribe';

/** A failed start-up attempt and the step it failed in. */
export interface KafkaStartupRetry extends StartupRetry {
  readonly step: KafkaStartupStep;
}

/**
 * The `subscribe` option of `runInboxConsumer`: connect the clients and subscribe there,
 * waiting for a broker that is down or restarting (each step retried with backoff).
 */
export interface KafkaSubscribeOptions extends Omit<StartupWaitOptions, 'onRetry'> {
  /** The topics to consume (names or patterns), as in kafkajs' `consumer.subscribe({ topics })`. */
  readonly topics: readonly (string | RegExp)[];
  /** Where a group without committed offsets starts: the beginning of each partition. Default `false` (the end). */
  readonly fromBeginning?: boolean;
  /**
   * Called after each failed attempt, before the wait, with the step that failed: log it,
   * or a consumer waiting for its broker looks hung. An exception it throws is ignored.
   */
  readonly onRetry?: (retry: KafkaStartupRetry) => void;
}

/** The clients started by {@link connectAndSubscribe}. */
export interface StartupClients {
  readonly kafkaConsumer: KafkaConsumer;
  /** Connects the adapter's admin client (once; a failed connect is tried again). */
  readonly admin: () => Promise<KafkaAdmin>;
}

/** Checks the `subscribe` option's own fields at once (the wait's fields are checked by core). */
export function checkSubscribeOptions(options: KafkaSubscribeOptions, kafkaConsumer: KafkaConsumer): void {
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError(
      'Expected `subscribe` to be an object: { topics: [...], fromBeginning?, timeoutMs? }.',
    );
  }
  const { topics, fromBeginning } = options;
  if (
    !Array.isArray(topics) ||
    topics.length === 0 ||
    !topics.every((topic) => (typeof topic === 'string' && topic.length > 0) || topic instanceof RegExp)
  ) {
    throw new ConfigurationError('Expected `subscribe.topics` to be a non-empty array of topic names or RegExps.');
  }
  const { timeoutMs } = options;
  if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs) || timeoutMs < 0)) {
    throw new ConfigurationError(
      `Expected \`subscribe.timeoutMs\` to be a number of milliseconds of at least 0 (or Infinity), got ${String(timeoutMs)}.`,
    );
  }
  if (fromBeginning !== undefined && typeof fromBeginning !== 'boolean') {
    throw new ConfigurationError('Expected `subscribe.fromBeginning` to be a boolean.');
  }
  if (typeof kafkaConsumer.connect !== 'function' || typeof kafkaConsumer.subscribe !== 'function') {
    throw new ConfigurationError(
      'The `subscribe` option needs a Kafka consumer with connect() and subscribe(); connect and subscribe it yourself and leave `subscribe` out.',
    );
  }
}

/**
 * Connects the kafkajs consumer and the adapter's admin client (the dead-letter producer is
 * connected at the first dead letter), then subscribes, each step retried with backoff until
 * it succeeds: a consumer started while the broker is down or restarting comes up with it. One deadline
 * (`timeoutMs`) covers all the steps; an error no wait can cure (failed authentication or
 * authorisation) is thrown at once. Calling `connect()` on a client that is already
 * connected is harmless in kafkajs.
 */
export async function connectAndSubscribe(clients: StartupClients, options: KafkaSubscribeOptions): Promise<void> {
  const { topics, fromBeginning, onRetry, timeoutMs, ...wait } = options;
  const deadline = Date.now() + (timeoutMs ?? Number.POSITIVE_INFINITY);
  const { kafkaConsumer, admin } = clients;
  const steps: [KafkaStartupStep, (() => Promise<void>) | undefined][] = [
    ['connect-kafka-consumer', kafkaConsumer.connect?.bind(kafkaConsumer)],
    ['connect-admin', () => admin().then(() => undefined)],
    [
      'subscribe',
      () =>
        kafkaConsumer.subscribe?.({ topics: [...topics], fromBeginning: fromBeginning ?? false }) ?? Promise.resolve(),
    ],
  ];
  for (const [step, run] of steps) {
    if (run === undefined) continue;
    await retryUntilReady(
      run,
      {
        ...wait,
        ...(timeoutMs === undefined ? {} : { timeoutMs: Math.max(0, deadline - Date.now()) }),
        ...(onRetry === undefined ? {} : { onRetry: (retry: StartupRetry) => onRetry({ ...retry, step }) }),
      },
      {
        what: `Kafka (${step})`,
        option: 'subscribe',
        permanent: cannotBeWaitedOut,
        timedOut: (message, lastError) => new KafkaUnavailableError(message, { cause: lastError }),
      },
    );
  }
}

/** Failed authentication or authorisation: the broker answered, and waiting will not change its answer. */
function cannotBeWaitedOut(error: unknown): boolean {
  const { name, type } = (error ?? {}) as { name?: unknown; type?: unknown };
  return (
    name === 'KafkaJSSASLAuthenticationError' ||
    (typeof type === 'string' && (type.endsWith('_AUTHORIZATION_FAILED') || type === 'SASL_AUTHENTICATION_FAILED'))
  );
}
