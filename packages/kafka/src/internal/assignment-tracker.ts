import type { KafkaGroupJoinEvent } from '../kafka-client.js';
import { CrashLoopWindow } from './crash-loop-window.js';
import { partitionKey } from './offset-committer.js';

/**
 * Which partitions this member owns, learnt from the group-join event, and the crash-loop
 * window of each. A partition met for the first time, or newly assigned by a join, gets a
 * new {@link CrashLoopWindow} (open unless its previous owner left it cleanly); one that stays
 * with this member across a rebalance keeps its state (nobody else can have crashed on it in
 * between). A new member id (the member was dropped from the group and joined again) makes
 * every partition new.
 */
export class AssignmentTracker {
  readonly #windowSize: number;
  readonly #windows = new Map<string, CrashLoopWindow>();
  #owned: Set<string> | undefined;
  #assignment: { topic: string; partitions: number[] }[] = [];
  #groupId: string | undefined;
  #memberId: string | undefined;

  constructor(windowSize: number, groupId: string | undefined) {
    this.#windowSize = windowSize;
    this.#groupId = groupId;
  }

  get groupId(): string | undefined {
    return this.#groupId;
  }

  get memberId(): string | undefined {
    return this.#memberId;
  }

  /** Topics known to be assigned (or seen), for pausing everything at shutdown. */
  topics(): string[] {
    const topics = new Set<string>();
    for (const key of this.#owned ?? this.#windows.keys()) topics.add(key.slice(0, key.indexOf('\u0000')));
    return [...topics];
  }

  /** True when the partition is assigned to this member (or, before any join was seen, always). */
  owns(topic: string, partition: number): boolean {
    return this.#owned === undefined || this.#owned.has(partitionKey(topic, partition));
  }

  /** The partitions assigned at the last join (empty before any join was seen). */
  assignment(): { topic: string; partitions: number[] }[] {
    return this.#assignment.map(({ topic, partitions }) => ({ topic, partitions: [...partitions] }));
  }

  /** Records a join; returns the assignment as lists. */
  join(event: KafkaGroupJoinEvent): { topic: string; partitions: number[] }[] {
    const { groupId, memberId, memberAssignment } = event.payload;
    if (this.#groupId === undefined) this.#groupId = groupId;
    if (memberId !== this.#memberId) this.#windows.clear();
    this.#memberId = memberId;
    const owned = new Set<string>();
    const assignment: { topic: string; partitions: number[] }[] = [];
    for (const [topic, partitions] of Object.entries(memberAssignment)) {
      assignment.push({ topic, partitions: [...partitions] });
      for (const partition of partitions) owned.add(partitionKey(topic, partition));
    }
    for (const key of this.#windows.keys()) if (!owned.has(key)) this.#windows.delete(key);
    this.#owned = owned;
    this.#assignment = assignment;
    return assignment;
  }

  /** The crash-loop window of a partition; `undefined` until the partition's first record was met. */
  window(topic: string, partition: number): CrashLoopWindow | undefined {
    return this.#windows.size === 0 ? undefined : this.#windows.get(partitionKey(topic, partition));
  }

  /** Starts a partition's window: open (`windowSize` suspects) unless the previous owner left it cleanly. */
  start(topic: string, partition: number, cleanHandover: boolean): CrashLoopWindow {
    const window = new CrashLoopWindow(cleanHandover ? 0 : this.#windowSize);
    this.#windows.set(partitionKey(topic, partition), window);
    return window;
  }
}
