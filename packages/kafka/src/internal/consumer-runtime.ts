import {
  ConfigurationError,
  type DeadLetterOutcome,
  type InboxLogger,
  InvalidMessageError,
  type ProcessOutcome,
} from '@inboxkit/core';
import {
  type DeadLetterEntry,
  type DeadLetterRecorder,
  type HandBackReason,
  inboxConfig,
  invalidMessageOutcome,
  loggerWith,
  settleOutcomes,
  type TransactionFence,
  toError,
  transactionSettings,
} from '@inboxkit/core/adapter';
import type { KafkaConsumer, KafkaGroupJoinEvent, KafkaRecord } from '../kafka-client.js';
import type { CloseOptions, KafkaInboxControl } from '../kafka-inbox-control.js';
import { KafkaInboxEmitter, type PauseReason } from '../kafka-inbox-events.js';
import { decodeHeaders, type KafkaInboxMessage, recordName } from '../kafka-inbox-message.js';
import type { KafkaInboxConfig } from '../kafka-inbox-options.js';
import { AssignmentTracker } from './assignment-tracker.js';
import type { CrashLoopWindow } from './crash-loop-window.js';
import { DeadLetterPublisher } from './dead-letter-publisher.js';
import { HandoverCheck } from './handover.js';
import { OffsetCommitter, partitionKey } from './offset-committer.js';
import { OffsetStore } from './offset-store.js';
import { OwnClients } from './own-clients.js';
import { PartitionPauses } from './partition-pauses.js';

/** A record turned into an inbox message; `invalid` when it cannot be processed at all. */
export interface PreparedRecord<V> {
  readonly message: KafkaInboxMessage<V>;
  readonly invalid: DeadLetterOutcome | undefined;
}

/** A record and what became of it, in partition order. */
export interface SettleItem {
  readonly message: KafkaInboxMessage;
  readonly outcome: ProcessOutcome;
}

/**
 * The state and steps shared by the `eachMessage` and `eachBatch` wrappers: turning records
 * into inbox messages, settling outcomes (dead-letter publish, offsets), pauses, the
 * assignment, shutdown. Adapters are translators: every dedup decision is the inbox's.
 */
export class ConsumerRuntime<DB, V> {
  readonly config: KafkaInboxConfig<DB, V>;
  readonly events: KafkaInboxEmitter;
  readonly assignments: AssignmentTracker;
  readonly pauses: PartitionPauses;
  readonly committer: OffsetCommitter;
  /** The admin client and the dead-letter producer, made from the user's `kafka` client. */
  readonly clients: OwnClients;
  readonly #deadLetters: DeadLetterPublisher;
  readonly #handover: HandoverCheck;
  readonly #logger: InboxLogger;
  /** Offsets stored in Postgres (`dedup: 'offsets'`), else `undefined`. */
  readonly #offsets: OffsetStore | undefined;
  /** Partitions sought to their stored offset since the last join. */
  readonly #sought = new Set<string>();
  #inFlight = 0;
  #idleWaiters: (() => void)[] = [];
  #stopping = false;
  #closing: Promise<void> | undefined;
  #detach: (() => void) | undefined;

  constructor(config: KafkaInboxConfig<DB, V>, crashLoopWindowSize: number) {
    this.config = config;
    // The parts that do not know the inbox log its name too (docs/telemetry.md, "Logging").
    const logger = loggerWith(config.logger, { consumer: config.inbox.consumer });
    this.#logger = logger;
    this.events = new KafkaInboxEmitter(logger);
    this.assignments = new AssignmentTracker(crashLoopWindowSize, config.groupId);
    this.pauses = new PartitionPauses(config.kafkaConsumer, config.pause, logger, this.events);
    this.committer = new OffsetCommitter(config.kafkaConsumer, config.commitIntervalMs, logger, this.events);
    this.clients = new OwnClients(config.kafka, config.producer, logger);
    this.#deadLetters = new DeadLetterPublisher({
      clients: this.clients,
      topicFor: config.deadLetterTopic,
      timeoutMs: config.deadLetterTimeoutMs,
      topology: config.topology,
      logger,
    });
    this.#handover = new HandoverCheck(() => this.clients.admin(), config.kafkaConsumer, logger);
    if (config.offsetTable !== undefined) {
      const { lockTimeoutMs, handlerTimeoutMs } = inboxConfig(config.inbox);
      this.#offsets = new OffsetStore(
        config.offsetTable,
        transactionSettings(lockTimeoutMs, handlerTimeoutMs),
        config.dedup === 'offsets+ids',
      );
    }
    this.#detach = listenToJoins(config.kafkaConsumer, (event) => this.#joined(event));
  }

  /** True once `close()` started: no new record is taken. */
  get stopping(): boolean {
    return this.#stopping;
  }

  /**
   * The crash-loop window of a partition whose first record (since it was assigned) is at
   * `firstOffset`: marks the partition as being worked on, and opens the window unless its
   * previous owner left it cleanly. Call it only when `assignments.window()` has none.
   *
   * With offsets stored in Postgres, the stored offset is read first and, when the client
   * fetched from elsewhere (Kafka's committed offset is never trusted), the partition is
   * sought there and `undefined` returned: drop the delivery, the records come again from
   * the stored offset (once per assignment, so that a stored offset the log no longer has
   * cannot make it loop; the fence skips what is covered in any case).
   */
  async startWindow(topic: string, partition: number, firstOffset: string): Promise<CrashLoopWindow | undefined> {
    if (this.#offsets !== undefined) {
      const groupId = this.#groupIdForOffsets();
      const key = partitionKey(topic, partition);
      if (!this.#sought.has(key)) {
        const stored = await this.#offsets.read(inboxConfig(this.config.inbox).db, groupId, topic, partition);
        this.#sought.add(key);
        if (stored !== undefined && stored !== firstOffset) {
          this.#logger.info(
            { topic, partition, fetched: firstOffset, stored },
            'inboxkit: partition assigned; seeking to the offset stored in Postgres',
          );
          this.config.kafkaConsumer.seek({ topic, partition, offset: stored });
          // Kafka's committed offset is only for lag tools, but keep it true: when nothing
          // follows the stored offset, no later record would ever move it there.
          this.committer.mark(topic, partition, stored);
          return undefined;
        }
      }
    }
    const clean = await this.#handover.claim(this.assignments.groupId, topic, partition, firstOffset);
    this.committer.committed(topic, partition, firstOffset);
    const window = this.assignments.start(topic, partition, clean);
    if (window.open) {
      this.#logger.info(
        { topic, partition, offset: firstOffset },
        'inboxkit: partition assigned without a clean handover; its first new records run one at a time as crash-loop suspects',
      );
    }
    return window;
  }

  /** Turns a record into the message the handler gets (id, decoded value, headers). */
  prepare(topic: string, partition: number, record: KafkaRecord): PreparedRecord<V> {
    const headers = decodeHeaders(record.headers);
    const context = { topic, partition, record, headers };
    const found = this.config.messageId(context);
    let problem: InvalidMessageError | undefined;
    let id = '';
    if ('id' in found) id = found.id;
    else
      problem = new InvalidMessageError(
        `Record ${recordName(topic, partition, record.offset)} has no message id: ${found.missing}${found.missing.endsWith('.') ? '' : '.'}`,
        undefined,
        found.cause === undefined ? undefined : { cause: found.cause },
      );
    let value: V | undefined;
    try {
      value = this.config.decode(record.value, context);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      problem ??= new InvalidMessageError(
        `Record ${recordName(topic, partition, record.offset)} (message id ${JSON.stringify(id)}) has a value that cannot be decoded as ${this.config.decoderName}: ${reason}`,
        id,
        { cause: error },
      );
    }
    const message: KafkaInboxMessage<V> = {
      id,
      payload: record.value,
      topic,
      partition,
      offset: record.offset,
      key: record.key,
      value: value as V,
      headers,
      timestamp: record.timestamp,
      record,
    };
    if (problem === undefined) return { message, invalid: undefined };
    const usableId = id.length <= this.config.maxIdLength ? id : undefined;
    return { message, invalid: invalidMessageOutcome(problem, usableId) };
  }

  /**
   * Settles a partition's outcomes in order (core's `settleOutcomes`): dead letters are
   * published (and acknowledged) and recorded, then the offset after the last settled record
   * is marked for commit. Stops at the first record that cannot be settled now (database
   * unavailable, lock timeout, dead-letter publish or record failed): the partition is
   * paused and sought back to it. Returns how many records, from the first, are settled.
   */
  settle(
    topic: string,
    partition: number,
    items: readonly SettleItem[],
    resolveOffset?: (offset: string) => void,
  ): Promise<number> {
    let topics: Map<DeadLetterEntry, string> | undefined;
    const { inbox } = this.config;
    const fence = this.fence(topic, partition);
    // With offsets stored in Postgres, recording a dead letter also moves the offset past it.
    const recorder: DeadLetterRecorder =
      fence === undefined
        ? inbox
        : {
            recordDeadLetter: (message, outcome) => inbox.recordDeadLetter(message, outcome, { fence }),
            recordsEvery: true,
          };
    return settleOutcomes(recorder, items, {
      publishDeadLetters: async (entries) => {
        topics = await this.#publishDeadLetters(entries);
      },
      deadLettered: (entry) => {
        this.events.emit('deadLettered', {
          message: entry.message,
          outcome: entry.outcome,
          deadLetterTopic: topics?.get(entry) ?? '',
        });
      },
      ack: (count) => {
        if (this.events.has('settled')) {
          for (let i = 0; i < count; i++) this.events.emit('settled', items[i] as SettleItem);
        }
        const last = (items[count - 1] as SettleItem).message.offset;
        resolveOffset?.(last);
        this.committer.mark(topic, partition, (BigInt(last) + 1n).toString());
        this.pauses.succeeded(topic, partition);
      },
      handBack: (index, reason, error) => {
        const offset = (items[index] as SettleItem).message.offset;
        this.pauses.pause(topic, partition, offset, pauseReason(reason), error);
      },
    });
  }

  /** Publishes dead letters, each to its topic; resolves once the broker acknowledged them all. */
  #publishDeadLetters(entries: readonly DeadLetterEntry<KafkaInboxMessage>[]): Promise<Map<DeadLetterEntry, string>> {
    const { maxStackLength, maxErrorMessageLength, inbox } = this.config;
    return this.#deadLetters.publish(entries, {
      groupId: this.assignments.groupId,
      memberId: this.assignments.memberId,
      consumer: inbox.consumer,
      maxStackLength,
      maxErrorMessageLength,
    });
  }

  /** Something outside the handler failed (a bug, a client error): pause, seek back, log. */
  unexpected(topic: string, partition: number, offset: string, thrown: unknown): void {
    this.pauses.pause(topic, partition, offset, 'unexpected_error', toError(thrown));
  }

  /** Leaves a record for later without pausing (shutdown): seeks back so the client does not move past it. */
  defer(topic: string, partition: number, offset: string): void {
    try {
      this.config.kafkaConsumer.seek({ topic, partition, offset });
    } catch {
      // not running any more: nothing moves
    }
  }

  enter(): void {
    this.#inFlight++;
  }

  leave(): void {
    this.#inFlight--;
    if (this.#inFlight === 0 && this.#idleWaiters.length > 0) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const wake of waiters) wake();
    }
  }

  control(): KafkaInboxControl {
    return {
      close: (options) => this.close(options),
      commit: () => this.committer.flush(),
      on: (event, listener) => this.events.on(event, listener),
      paused: () => this.pauses.list(),
      assignment: () => this.assignments.assignment(),
    };
  }

  /**
   * Undoes what the runtime set up for a consumer that never ran (its start-up failed):
   * the group-join listener, and the clients the adapter made (a connected admin client
   * would keep the process alive).
   */
  async abandon(): Promise<void> {
    this.#detach?.();
    await this.clients.close();
  }

  close(options: CloseOptions = {}): Promise<void> {
    this.#closing ??= this.#stop(options.disconnect ?? true);
    return this.#closing;
  }

  async #stop(disconnect: boolean): Promise<void> {
    const { kafkaConsumer } = this.config;
    const errors: unknown[] = [];
    this.#stopping = true;
    this.#pauseEverything();
    if (this.#inFlight > 0) await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
    this.pauses.close();
    await this.committer.flush(true);
    this.committer.close();
    this.#detach?.();
    if (disconnect) {
      // kafkajs' disconnect() stops the consumer first (leaving the group); some clients
      // offer no stop() at all.
      try {
        await kafkaConsumer.disconnect();
      } catch (error) {
        errors.push(error);
      }
    }
    // The admin client and producer the adapter made are its own to close (never the user's).
    await this.clients.close();
    this.#logger.info({}, 'inboxkit: Kafka consumer closed');
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, 'inboxkit: closing the Kafka consumer failed');
  }

  /** Stops fetching: every partition of every known topic is paused. */
  #pauseEverything(): void {
    const topics = this.assignments.topics();
    if (topics.length === 0) return;
    try {
      this.config.kafkaConsumer.pause(topics.map((topic) => ({ topic })));
    } catch {
      // not running: nothing is fetched anyway
    }
  }

  /** The partition's fence with offsets stored in Postgres, else `undefined`. */
  fence(topic: string, partition: number): TransactionFence | undefined {
    if (this.#offsets === undefined) return undefined;
    return this.#offsets.fence(this.#groupIdForOffsets(), topic, partition);
  }

  #groupIdForOffsets(): string {
    const groupId = this.assignments.groupId;
    if (groupId === undefined) {
      throw new ConfigurationError(
        "dedup: 'offsets' needs the consumer group: pass `groupId` (this client sends no group-join event).",
      );
    }
    return groupId;
  }

  #joined(event: KafkaGroupJoinEvent): void {
    const assignment = this.assignments.join(event);
    this.#sought.clear();
    this.#handover.reset();
    const owns = (topic: string, partition: number) => this.assignments.owns(topic, partition);
    this.pauses.reapply(owns);
    this.committer.retain(owns);
    if (this.#stopping) this.#pauseEverything();
    this.events.emit('assigned', {
      groupId: event.payload.groupId,
      memberId: event.payload.memberId,
      assignment,
    });
  }
}

/** The runtime behind each wrapper, for `runInboxConsumer`'s start-up (which connects its admin client). */
const runtimes = new WeakMap<object, ConsumerRuntime<unknown, unknown>>();

/** Gives a wrapper function its controls. */
export function withControls<F extends object, DB, V>(
  wrapper: F,
  runtime: ConsumerRuntime<DB, V>,
): F & KafkaInboxControl {
  const controlled = Object.assign(wrapper, runtime.control());
  runtimes.set(controlled, runtime as ConsumerRuntime<unknown, unknown>);
  return controlled;
}

/** The runtime of a wrapper made by {@link withControls}. */
export function runtimeOf(wrapper: object): ConsumerRuntime<unknown, unknown> {
  const runtime = runtimes.get(wrapper);
  if (runtime === undefined) throw new Error('inboxkit: not an inbox wrapper');
  return runtime;
}

/**
 * Listens to the client's group-join events when it has them (kafkajs does; clients whose
 * `on`/`events` throw "not implemented" do not): returns the remover, or `undefined`.
 */
function listenToJoins(
  kafkaConsumer: KafkaConsumer,
  listener: (event: KafkaGroupJoinEvent) => void,
): (() => void) | undefined {
  try {
    const groupJoin = kafkaConsumer.events?.GROUP_JOIN;
    if (typeof kafkaConsumer.on !== 'function' || typeof groupJoin !== 'string') return undefined;
    const remove = kafkaConsumer.on(groupJoin, listener);
    return typeof remove === 'function' ? remove : undefined;
  } catch {
    return undefined;
  }
}

/** A partition's pause reason for a message core hands back. */
function pauseReason(reason: HandBackReason): PauseReason {
  return reason === 'dead_letter_publish_failed' || reason === 'dead_letter_record_failed'
    ? 'dead_letter_failed'
    : reason;
}
