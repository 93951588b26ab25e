import type { InboxMessage } from '@inboxkit/core';
import type { FenceRunner, TransactionFence } from '@inboxkit/core/adapter';
import type { KafkaInboxMessage } from '../kafka-inbox-message.js';
import type { OffsetTable } from '../offset-table.js';
import { compileOffsetStatements, type QueryRunner } from '../sql/offsets.js';
import { partitionKey } from './offset-committer.js';

/**
 * Kafka offsets stored in Postgres (`dedup: 'offsets'` / `'offsets+ids'`): one row per
 * (group, topic, partition) holding the next offset to apply, moved in the same
 * transaction as the handler's writes (docs/design.md, "Kafka offsets in Postgres"). Each
 * partition's {@link TransactionFence} is what core runs in its transactions.
 */
export class OffsetStore {
  readonly claimIds: boolean;
  readonly #statements: ReturnType<typeof compileOffsetStatements>;
  readonly #fences = new Map<string, TransactionFence>();

  constructor(table: OffsetTable, settings: readonly string[], claimIds: boolean) {
    this.claimIds = claimIds;
    this.#statements = compileOffsetStatements(table, settings);
  }

  /** The stored next offset of a partition, or `undefined` when none was stored yet. */
  async read(runner: QueryRunner, groupId: string, topic: string, partition: number): Promise<string | undefined> {
    const stored = await this.#statements.read(runner, [groupId, topic, partition]);
    // A row made by a transaction that applied nothing holds 0: no position yet.
    return stored === undefined || stored === '0' ? undefined : stored;
  }

  /** The fence of a partition: records before the stored offset are covered. */
  fence(groupId: string, topic: string, partition: number): TransactionFence {
    const key = `${groupId}\u0000${partitionKey(topic, partition)}`;
    let fence = this.#fences.get(key);
    if (fence === undefined) {
      const row = [groupId, topic, partition] as const;
      const statements = this.#statements;
      // What each open transaction found and set, for `leave` (a transaction is one runner).
      const open = new WeakMap<FenceRunner, { before: bigint; moved: bigint }>();
      fence = Object.freeze({
        claimIds: this.claimIds,
        async enter(trx: FenceRunner, messages: readonly InboxMessage[]) {
          const last = messages.at(-1) as KafkaInboxMessage | undefined;
          const moved = last === undefined ? 0n : BigInt(last.offset) + 1n;
          const before = await statements.lockAndAdvance(trx, row, moved);
          open.set(trx, { before, moved: moved > before ? moved : before });
          if (before === 0n) return notCovered;
          const stored = before.toString();
          return (message: InboxMessage) => offsetBelow((message as KafkaInboxMessage).offset, stored);
        },
        async leave(trx: FenceRunner, through: InboxMessage | undefined) {
          const state = open.get(trx);
          if (state === undefined) throw new Error('inboxkit: fence left without being entered');
          open.delete(trx);
          const past = through === undefined ? 0n : BigInt((through as KafkaInboxMessage).offset) + 1n;
          const next = past > state.before ? past : state.before;
          if (next !== state.moved) await statements.set(trx, row, next);
        },
      });
      this.#fences.set(key, fence);
    }
    return fence;
  }
}

const notCovered = (): boolean => false;

/**
 * `a < b` for two offsets as Kafka clients give them (decimal strings without leading zeros):
 * a shorter one is smaller, and of two as long the text decides. No BigInt per record.
 */
function offsetBelow(a: string, b: string): boolean {
  return a.length < b.length || (a.length === b.length && a < b);
}
