// One message (docs/design.md, "The algorithm"): claim the key, run the handler, store its
// result, commit; each failed attempt retried with the retry policy.
import pRetry, { AbortError } from 'p-retry';
import type { FailureKind } from './error-classification.js';
import { isLockTimeout, isUnusableFunction } from './error-classification.js';
import { ConfigurationError, CrashLoopError, LockTimeoutError, toError } from './errors.js';
import type { TransactionFence } from './fence.js';
import { runTimed } from './handler-timeout.js';
import { HookFailed, type InboxContext, isNoPartition, unavailable } from './inbox-context.js';
import type { InboxMessage } from './inbox-message.js';
import type { MessageHandler, ProcessOptions } from './inbox-types.js';
import type { ConflictOutcome, DuplicateOutcome, ProcessedOutcome, ProcessOutcome } from './outcome.js';
import type { RetryPolicy } from './retry-policy.js';
import type { Claim, ClaimMessage } from './sql/claim-message.js';
import type { QueryRunner } from './sql/executor.js';
import { resultJson } from './sql/store-results.js';

/** A suspect's attempt found its count past `crashLoopLimit`: dead-letter it unrun. */
class CrashLoopDetected extends Error {
  readonly crashes: number;
  readonly firstAttemptAt: Date;
  constructor(crashes: number, firstAttemptAt: Date) {
    super('inboxkit: crash loop');
    this.crashes = crashes;
    this.firstAttemptAt = firstAttemptAt;
  }
}

/** A partitioned table had no partition for the claim's row (23514): partitions are made, the attempt runs again. */
class PartitionMissing extends Error {
  readonly error: unknown;
  constructor(error: unknown) {
    super('inboxkit: no partition for the claim; making partitions');
    this.error = error;
  }
}

/** The claim function was missing or not executable (42883, 42501): the attempt runs again, claiming without it. */
class ClaimAgain extends Error {
  constructor() {
    super('inboxkit: the claim function is missing; claiming without it');
  }
}

/**
 * Processes one message effectively once (see `Inbox.process`). Never throws for a
 * message's sake: every outcome is a value; only a handler that is not a function and a
 * throwing `beforeAttempt` reject.
 */
export async function processMessage<DB, M extends InboxMessage, R>(
  ctx: InboxContext<DB>,
  message: M,
  handler: MessageHandler<DB, M, R>,
  options: ProcessOptions = {},
): Promise<ProcessOutcome<R>> {
  if (typeof handler !== 'function') {
    throw new ConfigurationError('inbox.process(message, handler): `handler` must be a function.');
  }
  const started = performance.now();
  // Fingerprints compare stored keys: a fence alone stores none.
  const key = ctx.keyOf(message, options.fence === undefined || options.fence.claimIds);
  if ('status' in key) return key;
  const { id, hash } = key;
  // Rejects only with a ConfigurationError (a partitioned table it may not claim on).
  if (ctx.claim === undefined) await ctx.findClaim();
  // Suspects run alone: a crash one causes must not count against neighbours in flight.
  const suspect = options.suspect === true;
  if (suspect) await ctx.gate.enterExclusive();
  else {
    const waiting = ctx.gate.enterShared();
    if (waiting !== undefined) await waiting;
  }
  try {
    // With a fence the position decides first: a key seen before the transaction would
    // answer without moving it.
    if ((suspect || ctx.config.duplicateFastPath) && options.fence === undefined) {
      const early = await lookUpFirst(ctx, id, hash);
      if (early !== undefined) return early;
    }
    const outcome = await withRetries(ctx, message, id, hash, handler, suspect, options);
    ctx.report(outcome, performance.now() - started);
    return outcome;
  } finally {
    if (suspect) ctx.gate.leaveExclusive();
    else ctx.gate.leaveShared();
  }
}

/**
 * The read before the transaction that the algorithm allows as a fast path: a key
 * already stored is a duplicate (or a conflict) without a transaction. Used by suspects
 * and by `duplicateFastPath`. Anything else is left to the transaction that follows.
 */
async function lookUpFirst<DB>(
  ctx: InboxContext<DB>,
  id: string,
  hash: Buffer | null,
): Promise<ProcessOutcome<never> | undefined> {
  try {
    const stored = (await ctx.sql.readStored(ctx.runner, ctx.consumer, [id])).get(id);
    if (stored === undefined) return undefined;
    const outcome = ctx.fromStored(id, hash, stored);
    ctx.report(outcome);
    return outcome;
  } catch (thrown) {
    const error = toError(thrown);
    if ((await ctx.classify(error)) === 'unavailable') {
      return ctx.retryLater(id, 'database_unavailable', unavailable(error), 0);
    }
    return undefined;
  }
}

/**
 * Attempts with p-retry until processed, duplicate, conflict, dead-lettered or handed
 * back. Lock contention is waited out inside one p-retry attempt, so it does not spend
 * the retry budget; past the contention deadline the message is handed back.
 * Reports nothing: the caller does.
 */
async function withRetries<DB, M extends InboxMessage, R>(
  ctx: InboxContext<DB>,
  message: M,
  id: string,
  hash: Buffer | null,
  handler: MessageHandler<DB, M, R>,
  suspect: boolean,
  { beforeAttempt, fence }: ProcessOptions,
): Promise<ProcessOutcome<R>> {
  const policy = ctx.config.retry;
  const firstSeenAt = new Date();
  const retriesStarted = performance.now();
  const contentionDeadline = ctx.contentionDeadline();
  let attempts = 0;
  let lastKind = 'transient' as FailureKind;
  let lastError: Error | undefined;
  let refused = false;
  let crashLoop: CrashLoopDetected | undefined;
  let refusal: ConfigurationError | undefined;
  let madePartitions = false;
  try {
    return await pRetry(
      async (attemptNumber) => {
        attempts = attemptNumber;
        for (let wait = 0; ; wait++) {
          await ctx.hook(beforeAttempt);
          try {
            const claim = ctx.claim ?? (await ctx.findClaim());
            return await attempt(ctx, claim, message, id, hash, handler, attemptNumber, suspect, fence);
          } catch (thrown) {
            if (thrown instanceof ClaimAgain) continue;
            if (thrown instanceof PartitionMissing) {
              // Once per message: if partitions cannot be made, the failure takes its course.
              if (madePartitions) throw thrown.error;
              madePartitions = true;
              // A failure here shows again as the claim's, and takes its course then.
              await ctx.makePartitions().catch(() => {});
              continue;
            }
            if (thrown instanceof ConfigurationError) {
              refusal = thrown;
              throw new AbortError(thrown);
            }
            if (thrown instanceof CrashLoopDetected) {
              crashLoop = thrown;
              throw new AbortError(thrown);
            }
            const error = toError(thrown);
            lastError = error;
            lastKind = await ctx.classify(error);
            if (lastKind === 'contention' && performance.now() < contentionDeadline) {
              await ctx.contentionPause(wait);
              continue;
            }
            if (lastKind !== 'transient') throw new AbortError(error);
            throw error;
          }
        }
      },
      {
        retries: policy.retries,
        factor: policy.factor,
        minTimeout: policy.minTimeout,
        maxTimeout: policy.maxTimeout,
        randomize: policy.randomize,
        maxRetryTime: policy.maxRetryTime,
        shouldRetry: async ({ error, attemptNumber, retriesLeft, retryDelay }) => {
          const again =
            policy.shouldRetry === undefined || (await policy.shouldRetry({ error, attemptNumber, retriesLeft }));
          if (!again) refused = true;
          else {
            ctx.events.emit('retry', {
              consumer: ctx.consumer,
              messageId: id,
              attempt: attemptNumber,
              delayMs: retryDelay,
              error,
            });
          }
          return again;
        },
      },
    );
  } catch (thrown) {
    if (thrown instanceof HookFailed) throw thrown.error;
    if (refusal !== undefined) throw refusal;
    if (crashLoop !== undefined) {
      const { crashes, firstAttemptAt } = crashLoop;
      return ctx.deadLetter(id, 'crash_loop', new CrashLoopError(id, crashes), crashes, firstAttemptAt);
    }
    const error = lastError ?? toError(thrown);
    switch (lastKind) {
      case 'unavailable':
        return ctx.retryLater(id, 'database_unavailable', unavailable(error), attempts);
      case 'lock_timeout':
      case 'contention':
        return ctx.retryLater(id, 'lock_timeout', error, attempts);
      case 'permanent':
        return ctx.deadLetter(id, 'non_retryable', error, attempts, firstSeenAt);
      default:
        return ctx.deadLetter(
          id,
          refused || declinedTypeError(error, policy, attempts, retriesStarted) ? 'non_retryable' : 'retries_exhausted',
          error,
          attempts,
          firstSeenAt,
        );
    }
  }
}

/**
 * True when p-retry stopped at a `TypeError` it does not retry (a programming error) while
 * retries and time were left. A `TypeError` it does retry (a network error of `fetch`) that
 * fails until the retries or `maxRetryTime` run out has spent them: `retries_exhausted`
 * (docs/design.md, "Failures").
 */
function declinedTypeError(error: Error, policy: RetryPolicy, attempts: number, started: number): boolean {
  if (!(error instanceof TypeError)) return false;
  return attempts <= policy.retries && performance.now() - started < policy.maxRetryTime;
}

/**
 * One attempt: one transaction. Throws the handler's error (or our own statements'), or
 * {@link CrashLoopDetected} for a suspect past `crashLoopLimit`.
 *
 * A suspect's attempt is counted once its claim went through, so waiting on a key that
 * another delivery holds never counts, and the count is committed before the handler
 * runs, so it survives the process dying. It is written on a second connection, since
 * the claim's transaction cannot commit it early. An attempt that fails without a crash
 * takes its count back while its key is still held: only a real crash stays counted, and
 * no other delivery of the id ever sees the count of an attempt still running
 * (docs/design.md, "Crash loops"; model/inbox.pml checks it).
 */
async function attempt<DB, M extends InboxMessage, R>(
  ctx: InboxContext<DB>,
  claimMessage: ClaimMessage,
  message: M,
  id: string,
  hash: Buffer | null,
  handler: MessageHandler<DB, M, R>,
  attemptNumber: number,
  suspect: boolean,
  fence: TransactionFence | undefined,
): Promise<ProcessedOutcome<R> | DuplicateOutcome | ConflictOutcome> {
  const { db, consumer, isolationLevel, storeResults, crashLoopLimit, lockTimeoutMs } = ctx.config;
  return db
    .transaction()
    .setIsolationLevel(isolationLevel)
    .execute(async (trx) => {
      const runner = trx as unknown as QueryRunner;
      let claim: Claim = { claimed: true };
      try {
        // A fence's position is locked first: a former owner still running is waited on here.
        if (fence !== undefined && (await fence.enter(runner, [message]))(message)) {
          await fence.leave(runner, undefined);
          return ctx.covered(id);
        }
        if (fence === undefined || fence.claimIds) claim = await claimMessage(runner, consumer, id, hash);
      } catch (error) {
        if (isLockTimeout(error)) throw new LockTimeoutError(id, lockTimeoutMs, { cause: error });
        if (claimMessage === ctx.sql.claimMessage && isUnusableFunction(error)) {
          ctx.claimFunctionMissing();
          throw new ClaimAgain();
        }
        if (ctx.partitioned === true && isNoPartition(error)) throw new PartitionMissing(error);
        if (claimMessage === ctx.sql.claimMessageWithoutFunction && (error as { code?: unknown }).code === '42P10') {
          // No unique index for ON CONFLICT: the table was partitioned since the inbox looked.
          ctx.claim = undefined;
          throw new ClaimAgain();
        }
        throw error;
      }
      if (!claim.claimed) {
        if (claim.stored === undefined) {
          throw new Error(`inboxkit: key ${JSON.stringify(id)} was neither claimed nor found; retrying`);
        }
        const outcome = ctx.fromStored(id, hash, claim.stored);
        // A duplicate is covered; a conflict is not until it is dead-lettered.
        if (fence !== undefined) await fence.leave(runner, outcome.status === 'duplicate' ? message : undefined);
        return outcome;
      }
      if (suspect) {
        const counted = await ctx.onSideConnection(
          (side) => ctx.sql.recordAttempt(side, consumer, id),
          () => uncount(ctx, id), // counted after this attempt gave up: it never ran
        );
        if (counted.attempts > crashLoopLimit) {
          await uncount(ctx, id);
          throw new CrashLoopDetected(counted.attempts - 1, counted.firstAttemptAt);
        }
      }
      try {
        const result = await runTimed(ctx.timedCall(id), (signal) =>
          handler(trx, message, { attempt: attemptNumber, consumer, signal }),
        );
        if (suspect) await ctx.sql.clearAttempts(runner, consumer, id);
        if (storeResults) {
          const json = resultJson(result);
          if (json !== undefined && (fence === undefined || fence.claimIds)) {
            await ctx.sql.storeResults(runner, consumer, [id], [json]);
          }
        }
        if (fence !== undefined) await fence.leave(runner, message);
        return { status: 'processed', messageId: id, result, attempts: attemptNumber } as const;
      } catch (error) {
        if (suspect) await uncount(ctx, id);
        throw error;
      }
    });
}

/** Takes back a suspect's counted attempt (best effort: a failure leaves one count too many, logged). */
async function uncount<DB>(ctx: InboxContext<DB>, id: string): Promise<void> {
  try {
    await ctx.onSideConnection((side) => ctx.sql.uncountAttempt(side, ctx.consumer, id));
  } catch (error) {
    ctx.config.logger.warn(
      { consumer: ctx.consumer, messageId: id, err: error },
      'inboxkit: could not take back the crash-loop count of an attempt that did not crash',
    );
  }
}
