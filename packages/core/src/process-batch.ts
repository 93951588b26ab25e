// Many messages in one transaction (docs/design.md, "Batches"): every key claimed in one
// statement, handlers without savepoints while they succeed; a failing handler found with
// savepoints and settled alone, in order; a failure outside the handlers narrowed down.
import { sql, type Transaction } from 'kysely';
import { isLockTimeout } from './error-classification.js';
import { ConfigurationError, LockTimeoutError, toError } from './errors.js';
import type { RetryLaterReason } from './events.js';
import type { TransactionFence } from './fence.js';
import { HookFailed, type InboxContext, isNoPartition, type TimedHandlerCall, unavailable } from './inbox-context.js';
import type { InboxMessage } from './inbox-message.js';
import type { BatchHandler, BatchOptions, BatchResult, MessageHandler } from './inbox-types.js';
import type { ProcessOutcome } from './outcome.js';
import { processMessage } from './process-message.js';
import type { QueryRunner, StoredRow } from './sql/executor.js';
import { resultJson } from './sql/store-results.js';

/** A message of a batch after validation. */
interface Entry<M> {
  readonly index: number;
  readonly id: string;
  readonly hash: Buffer | null;
  readonly message: M;
}

/** How one batch transaction ended. */
type BatchPass<R> =
  /** Committed: every entry has its outcome. */
  | { readonly kind: 'committed'; readonly outcomes: Map<number, ProcessOutcome<R>> }
  /**
   * The savepoint pass stopped at the first failing handler, `culprit` (a position in the
   * entries): the entries before it committed with their outcomes; it and those after it
   * were released and are to be run again.
   */
  | { readonly kind: 'prefix'; readonly outcomes: Map<number, ProcessOutcome<R>>; readonly culprit: number }
  /** The optimistic pass was rolled back because a handler threw. */
  | { readonly kind: 'handler_failed' }
  /** Rolled back for a reason that is not a handler call's: to be narrowed down. */
  | { readonly kind: 'failed'; readonly error: Error }
  /** Rolled back; nothing was decided (database gone, a key held by another delivery, lasting contention). */
  | { readonly kind: 'retry_later'; readonly reason: RetryLaterReason; readonly error: Error };

/** Runs the handlers of one batch pass in entry order; a savepoint pass records its culprit in `stop`. */
type RunHandlers<DB, M, R> = (
  trx: Transaction<DB>,
  entries: readonly Entry<M>[],
  timed: TimedHandlerCall,
  stop: { culprit?: number },
) => Promise<Map<number, R>>;

/** Thrown inside an optimistic batch transaction to roll it back when one handler failed. */
class OptimisticBatchFailed extends Error {}

/**
 * The batch claim met a table whose layout changed under the running inbox (42P10: no
 * unique index for its `ON CONFLICT`, the table was partitioned since the inbox looked):
 * the pass is run again with the claim for the table as it is now.
 */
class LayoutChanged extends Error {}

/** A partitioned table had no partition for the claim's rows (23514): partitions are made, the pass runs again. */
class PartitionMissing extends Error {}

const SAVEPOINT = sql.raw('SAVEPOINT inboxkit_message');
const RELEASE_SAVEPOINT = sql.raw('RELEASE SAVEPOINT inboxkit_message');
const ROLLBACK_TO_SAVEPOINT = sql.raw('ROLLBACK TO SAVEPOINT inboxkit_message');

/** `Inbox.processBatch`: one handler call per new message, in one transaction. */
export function processBatch<DB, M extends InboxMessage, R>(
  ctx: InboxContext<DB>,
  messages: readonly M[],
  handler: MessageHandler<DB, M, R>,
  options: BatchOptions,
): Promise<BatchResult<R>> {
  if (typeof handler !== 'function') {
    throw new ConfigurationError('inbox.processBatch(messages, handler): `handler` must be a function.');
  }
  return runBatch(ctx, messages, handler, options, async (trx, entries, timed) => {
    const results = new Map<number, R>();
    for (const entry of entries) {
      await ctx.hook(options.beforeMessage);
      try {
        results.set(entry.index, await timed(entry.id, (context) => handler(trx, entry.message, context)));
      } catch {
        throw new OptimisticBatchFailed();
      }
    }
    return results;
  });
}

/** `Inbox.processBulk`: one handler call for all new messages, in one transaction. */
export function processBulk<DB, M extends InboxMessage, R>(
  ctx: InboxContext<DB>,
  messages: readonly M[],
  handler: BatchHandler<DB, M, R>,
  options: BatchOptions,
): Promise<BatchResult<R>> {
  if (typeof handler !== 'function') {
    throw new ConfigurationError('inbox.processBulk(messages, handler): `handler` must be a function.');
  }
  const single: MessageHandler<DB, M, R> = async (trx, message, context) => {
    const results = await handler(trx, [message], context);
    return results?.[0] as R;
  };
  return runBatch(ctx, messages, single, options, async (trx, entries, timed) => {
    await ctx.hook(options.beforeMessage);
    const results = new Map<number, R>();
    let returned: readonly R[] | undefined | void;
    try {
      returned = await timed(entries[0]?.id ?? '', (context) =>
        handler(
          trx,
          entries.map((entry) => entry.message),
          context,
        ),
      );
    } catch {
      throw new OptimisticBatchFailed();
    }
    if (returned !== undefined && returned !== null) {
      entries.forEach((entry, i) => {
        results.set(entry.index, returned[i] as R);
      });
    }
    return results;
  });
}

/** The batch algorithm shared by both handler shapes; `single` is the shape's one-message handler. */
async function runBatch<DB, M extends InboxMessage, R>(
  ctx: InboxContext<DB>,
  messages: readonly M[],
  single: MessageHandler<DB, M, R>,
  options: BatchOptions,
  optimistic: RunHandlers<DB, M, R>,
): Promise<BatchResult<R>> {
  if (!Array.isArray(messages)) {
    throw new ConfigurationError('inbox.processBatch(messages, ...): `messages` must be an array.');
  }
  const { fence } = options;
  // Rejects only with a ConfigurationError (a partitioned table it may not claim on).
  if (ctx.claim === undefined) await ctx.findClaim();
  const outcomes: (ProcessOutcome<R> | undefined)[] = new Array(messages.length);
  const entries: Entry<M>[] = [];
  const firstOf = new Map<string, Entry<M>>();
  const copies: { index: number; of: Entry<M> }[] = [];
  // With a fence, the batch ends at the first message that is neither processed nor a
  // duplicate: nothing after it may be covered by the position before it is settled.
  let end = messages.length;

  // 1. Validate, fingerprint, and set aside copies of an id already in this batch.
  for (const [index, message] of messages.entries()) {
    // Fingerprints compare stored keys: a fence alone stores none.
    const key = ctx.keyOf(message, fence === undefined || fence.claimIds);
    if ('status' in key) {
      outcomes[index] = key;
      if (fence !== undefined) {
        end = index + 1;
        break;
      }
      continue;
    }
    const { id, hash } = key;
    // A fence alone claims no id: every message is its own, whatever its id.
    const own = fence !== undefined && !fence.claimIds;
    const first = own ? undefined : firstOf.get(id);
    if (first === undefined) {
      const entry = { index, id, hash, message };
      if (!own) firstOf.set(id, entry);
      entries.push(entry);
    } else if (first.hash !== null && hash !== null && !first.hash.equals(hash)) {
      outcomes[index] = ctx.conflict(id);
      if (fence !== undefined) {
        end = index + 1;
        break;
      }
    } else {
      copies.push({ index, of: first });
    }
  }

  // 2. Optimistic passes; a failing handler is found with savepoints and settled alone,
  //    in order; a failure outside the handlers settles the rest one at a time.
  const savepoints: RunHandlers<DB, M, R> = (trx, pass, timed, stop) =>
    savepointPass(ctx, trx, pass, timed, single, options, stop);
  const alone = (entry: Entry<M>) =>
    processMessage(ctx, entry.message, single, { beforeAttempt: options.beforeMessage, fence });
  let rest: readonly Entry<M>[] = entries;
  while (rest.length > 0) {
    let pass = await batchPass(ctx, rest, optimistic, fence);
    if (pass.kind === 'handler_failed') pass = await batchPass(ctx, rest, savepoints, fence);
    if (pass.kind === 'committed' || pass.kind === 'prefix') {
      for (const [index, outcome] of pass.outcomes) outcomes[index] = outcome;
    }
    if (pass.kind === 'committed') break;
    if (pass.kind === 'retry_later') {
      for (const entry of rest) outcomes[entry.index] = ctx.retryLater(entry.id, pass.reason, pass.error, 0);
      break;
    }
    const culprit = pass.kind === 'prefix' ? pass.culprit : 0;
    const settleAlone = pass.kind === 'prefix' ? rest.slice(culprit, culprit + 1) : rest;
    let handedBack: ProcessOutcome<R> | undefined;
    let stopped = false;
    for (const entry of settleAlone) {
      const outcome = handedBack ?? (await alone(entry));
      outcomes[entry.index] = outcome;
      // What follows a message handed back must not commit before it.
      if (outcome.status === 'retry_later') handedBack = outcome;
      else if (fence !== undefined && outcome.status !== 'processed' && outcome.status !== 'duplicate') {
        end = entry.index + 1;
        stopped = true;
        break;
      }
    }
    if (stopped) break;
    rest = pass.kind === 'prefix' ? rest.slice(culprit + 1) : [];
    if (handedBack !== undefined) {
      for (const entry of rest) outcomes[entry.index] = handedBack;
      break;
    }
  }

  // 3. A copy of an id within the batch follows its first occurrence.
  for (const { index, of } of copies) {
    if (index < end) outcomes[index] = ctx.copyOutcome(outcomes[of.index] as ProcessOutcome<R>, of.id);
  }
  return { outcomes: (end < messages.length ? outcomes.slice(0, end) : outcomes) as ProcessOutcome<R>[] };
}

/**
 * The pass that finds the first failing handler: one message at a time, each inside a
 * savepoint. At the first failure its savepoint is rolled back and the pass stops there
 * (`stop.culprit`); the messages before it commit. A savepoint that cannot be rolled back
 * (the connection is gone) fails the whole pass with the handler's error.
 */
async function savepointPass<DB, M extends InboxMessage, R>(
  ctx: InboxContext<DB>,
  trx: Transaction<DB>,
  entries: readonly Entry<M>[],
  timed: TimedHandlerCall,
  single: MessageHandler<DB, M, R>,
  options: BatchOptions,
  stop: { culprit?: number },
): Promise<Map<number, R>> {
  const results = new Map<number, R>();
  for (const [position, entry] of entries.entries()) {
    await ctx.hook(options.beforeMessage);
    await SAVEPOINT.execute(trx);
    try {
      results.set(entry.index, await timed(entry.id, (context) => single(trx, entry.message, context)));
      await RELEASE_SAVEPOINT.execute(trx);
    } catch (error) {
      try {
        await ROLLBACK_TO_SAVEPOINT.execute(trx);
      } catch {
        throw error;
      }
      stop.culprit = position;
      return results;
    }
  }
  return results;
}

/**
 * One batch transaction: claim every key in one statement, run the handlers over the new
 * ones, store results, commit. A savepoint pass that stopped at a culprit releases the
 * keys from the culprit on and commits the rest. Lock contention in our own statements
 * is waited out; other failures are sorted into a {@link BatchPass}.
 */
async function batchPass<DB, M extends InboxMessage, R>(
  ctx: InboxContext<DB>,
  entries: readonly Entry<M>[],
  runHandlers: RunHandlers<DB, M, R>,
  fence: TransactionFence | undefined,
): Promise<BatchPass<R>> {
  const { db, consumer, isolationLevel, storeResults, lockTimeoutMs } = ctx.config;
  const ids = entries.map((entry) => entry.id);
  const hashes = entries.map((entry) => entry.hash);
  const contentionDeadline = ctx.contentionDeadline();
  let relooked = false;
  let madePartitions = false;
  for (let wait = 0; ; wait++) {
    const outcomes = new Map<number, ProcessOutcome<R>>();
    const stop: { culprit?: number } = {};
    try {
      await db
        .transaction()
        .setIsolationLevel(isolationLevel)
        .execute(async (trx) => {
          const runner = trx as unknown as QueryRunner;
          // Entries, not ids: without claimed ids (a fence alone) two messages may share an id.
          let claimed: Set<Entry<M>>;
          let covered: Set<Entry<M>> | undefined;
          try {
            if (fence === undefined) {
              const keys = await ctx.claimMany(runner, consumer, ids, hashes);
              claimed = new Set(entries.filter((entry) => keys.has(entry.id)));
            } else {
              // The position is locked first, then only what it does not cover is claimed.
              const isCovered = await fence.enter(
                runner,
                entries.map((entry) => entry.message),
              );
              covered = new Set(entries.filter((entry) => isCovered(entry.message)));
              const live = entries.filter((entry) => !covered?.has(entry));
              let keys: Set<string> | undefined;
              if (fence.claimIds && live.length > 0) {
                keys = await ctx.claimMany(
                  runner,
                  consumer,
                  live.map((entry) => entry.id),
                  live.map((entry) => entry.hash),
                );
              }
              claimed = new Set(fence.claimIds ? live.filter((entry) => keys?.has(entry.id)) : live);
            }
          } catch (error) {
            if (isLockTimeout(error)) throw new LockTimeoutError(ids[0] ?? '', lockTimeoutMs, { cause: error });
            if ((error as { code?: unknown }).code === '42P10') throw new LayoutChanged();
            if (ctx.partitioned === true && isNoPartition(error) && !madePartitions) throw new PartitionMissing();
            throw error;
          }
          const fresh = entries.filter((entry) => claimed.has(entry));
          const unclaimed = entries.filter((entry) => !claimed.has(entry) && !covered?.has(entry));
          const stored =
            unclaimed.length > 0
              ? await ctx.sql.readStored(
                  runner,
                  consumer,
                  unclaimed.map((entry) => entry.id),
                )
              : new Map<string, StoredRow>();
          const results =
            fresh.length === 0 ? new Map<number, R>() : await runHandlers(trx, fresh, ctx.timedHandler(), stop);
          // The culprit of a savepoint pass and the fresh messages after it are not done.
          const culpritEntry = stop.culprit === undefined ? undefined : fresh[stop.culprit];
          const cut = culpritEntry === undefined ? entries.length : entries.indexOf(culpritEntry);
          const undone = fresh.slice(stop.culprit ?? fresh.length);
          if (undone.length > 0) {
            await ctx.sql.releaseMessages(
              runner,
              consumer,
              undone.map((entry) => entry.id),
            );
          }
          const storedIds: string[] = [];
          const storedJson: string[] = [];
          // The fence moves past the last message decided here, but never past a conflict:
          // it is dead-lettered only after this commit (its neighbours' keys stay claimed).
          let through: Entry<M> | undefined;
          let conflictSeen = false;
          for (const entry of entries.slice(0, cut)) {
            if (covered?.has(entry)) {
              outcomes.set(entry.index, ctx.covered(entry.id));
              if (!conflictSeen) through = entry;
              continue;
            }
            if (!claimed.has(entry)) {
              const row = stored.get(entry.id);
              outcomes.set(
                entry.index,
                row === undefined
                  ? ctx.retryLater(entry.id, 'lock_timeout', new LockTimeoutError(entry.id, lockTimeoutMs), 0)
                  : ctx.fromStored(entry.id, entry.hash, row),
              );
              if (outcomes.get(entry.index)?.status !== 'duplicate') conflictSeen = true;
              else if (!conflictSeen) through = entry;
              continue;
            }
            if (!conflictSeen) through = entry;
            const result = results.get(entry.index) as R;
            outcomes.set(entry.index, { status: 'processed', messageId: entry.id, result, attempts: 1 });
            if (storeResults && (fence === undefined || fence.claimIds)) {
              const json = resultJson(result);
              if (json !== undefined) {
                storedIds.push(entry.id);
                storedJson.push(json);
              }
            }
          }
          if (storedIds.length > 0) await ctx.sql.storeResults(runner, consumer, storedIds, storedJson);
          if (fence !== undefined) await fence.leave(runner, through?.message);
          if (culpritEntry !== undefined) stop.culprit = cut;
        });
    } catch (thrown) {
      if (thrown instanceof OptimisticBatchFailed) return { kind: 'handler_failed' };
      if (thrown instanceof PartitionMissing) {
        madePartitions = true;
        // A failure here shows again as the claim's, and takes its course then.
        await ctx.makePartitions().catch(() => {});
        continue;
      }
      if (thrown instanceof LayoutChanged && !relooked) {
        relooked = true;
        ctx.claim = undefined;
        await ctx.findClaim();
        continue;
      }
      if (thrown instanceof HookFailed) throw thrown.error;
      const error = toError(thrown);
      const kind = await ctx.classify(error);
      if (kind === 'contention' && performance.now() < contentionDeadline) {
        await ctx.contentionPause(wait);
        continue;
      }
      if (kind === 'unavailable')
        return { kind: 'retry_later', reason: 'database_unavailable', error: unavailable(error) };
      if (kind === 'lock_timeout' || kind === 'contention')
        return { kind: 'retry_later', reason: 'lock_timeout', error };
      return { kind: 'failed', error };
    }
    for (const outcome of outcomes.values()) ctx.report(outcome);
    return stop.culprit === undefined
      ? { kind: 'committed', outcomes }
      : { kind: 'prefix', outcomes, culprit: stop.culprit };
  }
}
