import type { CompiledQuery, QueryResult } from 'kysely';
import type { InboxMessage } from './inbox-message.js';

/** The part of a Kysely transaction a {@link TransactionFence} runs its statements on. */
export interface FenceRunner {
  /** Runs a compiled statement in the transaction. */
  executeQuery<R>(query: CompiledQuery<R>): Promise<QueryResult<R>>;
}

/**
 * A position an adapter keeps in the inbox's own transactions, beside (or instead of) the
 * message keys: Kafka's next offset per partition stored in Postgres (docs/design.md,
 * "Kafka offsets in Postgres"). On `@inboxkit/core/adapter`; applications never make one.
 *
 * Every transaction the inbox runs with a fence (a message's attempt, a batch pass, the
 * record of a dead letter) calls {@link enter} first and {@link leave} last, before its
 * commit, so the position moves in the same commit as the handler's writes:
 *
 * - `enter` locks the position (`SELECT ... FOR UPDATE`, bounded by the inbox's
 *   `lock_timeout`) and says which of the messages it already covers. Those are duplicates:
 *   their handler does not run. A lock held by another transaction (a former owner still
 *   running) is waited on; that owner's commit is then seen, and what it covered skipped.
 *   It may move the position past the last message already (in the same statement: the
 *   common case costs one round trip); a rollback undoes it.
 * - `leave` sets the position past `through`, the last message (in order) this transaction
 *   decided, or back to where `enter` found it when `through` is `undefined`. A position
 *   never moves back past what was there before the transaction.
 *
 * With a fence the batch entry points stop after the first message that is neither
 * processed nor a duplicate (a dead letter, an invalid message): `BatchResult.outcomes`
 * then holds fewer outcomes than messages, and the caller settles those and gives the rest
 * again. Nothing after such a message is covered before it is settled.
 */
export interface TransactionFence {
  /**
   * `true`: message keys are claimed in the inbox table as well (a message produced twice is
   * caught too); `false`: the fence alone decides what is new, and the inbox table is not
   * written.
   */
  readonly claimIds: boolean;
  /** Locks the position; returns which of `messages` it covers already. */
  enter(trx: FenceRunner, messages: readonly InboxMessage[]): Promise<(message: InboxMessage) => boolean>;
  /** Sets the position past `through` (`undefined`: nothing decided), before the commit. */
  leave(trx: FenceRunner, through: InboxMessage | undefined): Promise<void>;
}
