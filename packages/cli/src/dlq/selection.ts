import type { DlqEntry } from './dlq-entry.js';

/** Which dead letters a replay takes: `--id`, `--reason`, `--since`/`--until` (all given must match), or `--all`. */
export interface Selection {
  readonly ids: ReadonlySet<string> | undefined;
  readonly reason: string | undefined;
  readonly since: Date | undefined;
  readonly until: Date | undefined;
  readonly all: boolean;
}

export function isSelected(entry: DlqEntry, selection: Selection): boolean {
  if (selection.all) return true;
  if (selection.ids !== undefined && (entry.messageId === undefined || !selection.ids.has(entry.messageId)))
    return false;
  if (selection.reason !== undefined && entry.reason !== selection.reason) return false;
  const at = entry.failedAt?.getTime();
  if (selection.since !== undefined && (at === undefined || at < selection.since.getTime())) return false;
  if (selection.until !== undefined && (at === undefined || at > selection.until.getTime())) return false;
  return true;
}

/** The limits a replay checks before touching a selected dead letter. */
export interface ReplayLimits {
  readonly maxReplays: number;
  readonly retentionMs: number;
  readonly force: boolean;
  readonly now: number;
}

/**
 * Why a selected dead letter must not be replayed, or `undefined` when it may:
 * - it was replayed `maxReplays` times already (a loop: the bug is not fixed);
 * - it is older than the retention window and `--force` was not given: keys of its time
 *   may have been purged, so it could run as a new message (and a copy of it that did
 *   apply would not stop it);
 * - a payload conflict: its key holds other content, so a replay is a conflict again;
 * - no destination to replay it to;
 * - an id but no consumer (a RabbitMQ `deadLetter: 'nack'` dead letter carries none of our
 *   headers; `--consumer` names it): its dead-lettered key could not be cleared.
 */
export function refusal(entry: DlqEntry, limits: ReplayLimits): string | undefined {
  if (entry.replays >= limits.maxReplays) {
    return `replayed ${entry.replays} time(s) already (--max-replays ${limits.maxReplays})`;
  }
  const born = entry.failedAt ?? entry.firstSeenAt;
  if (!limits.force && born !== undefined && limits.now - born.getTime() > limits.retentionMs) {
    return 'older than the retention window (--force to replay: it may then run as a new message)';
  }
  if (entry.reason === 'payload_conflict') {
    return 'payload_conflict: its key holds other content, a replay would conflict again (inboxkit forget the key first if this content must run)';
  }
  if (entry.destination === undefined) return 'no original destination in its headers';
  // A message with an id may have a dead-lettered key: replayed without clearing it, it
  // would be acked as a duplicate and never run.
  if (entry.messageId !== undefined && entry.consumer === undefined) {
    return 'no consumer in its headers (a broker dead letter, deadLetter: nack): pass --consumer <inbox consumer name>';
  }
  return undefined;
}
