import { DEAD_LETTER_HEADER_PREFIX, DEAD_LETTER_HEADERS } from '@inboxkit/core/adapter';

/** Where a replayed message goes: where it was first published. */
export type Destination =
  | { readonly kind: 'kafka'; readonly topic: string; readonly partition: number | undefined }
  | { readonly kind: 'rabbitmq'; readonly exchange: string; readonly routingKey: string };

/** A dead letter as the `x-inboxkit-*` headers describe it, whatever the broker. */
export interface DlqEntry {
  /** Where it sits in the dead-letter destination: `partition/offset` (Kafka), `#n` in queue order (RabbitMQ). */
  readonly position: string;
  readonly messageId: string | undefined;
  readonly consumer: string | undefined;
  readonly reason: string | undefined;
  readonly errorName: string | undefined;
  readonly errorMessage: string | undefined;
  readonly errorCode: string | undefined;
  readonly errorStack: string | undefined;
  readonly attempts: number | undefined;
  readonly firstSeenAt: Date | undefined;
  readonly failedAt: Date | undefined;
  /** Times it was replayed before (`x-inboxkit-replays`). */
  readonly replays: number;
  readonly destination: Destination | undefined;
  readonly payload: Buffer;
  /** Every header, as text. */
  readonly headers: Readonly<Record<string, string>>;
}

const H = DEAD_LETTER_HEADERS;

/** Reads the common fields of a dead letter from its headers (already as text). */
export function entryFromHeaders(
  position: string,
  headers: Record<string, string>,
  payload: Buffer,
  destination: Destination | undefined,
  fallbackId?: string,
): DlqEntry {
  return {
    position,
    messageId: headers[H.messageId] ?? fallbackId,
    consumer: headers[H.consumer],
    reason: headers[H.reason],
    errorName: headers[H.errorName],
    errorMessage: headers[H.errorMessage],
    errorCode: headers[H.errorCode],
    errorStack: headers[H.errorStack],
    attempts: number(headers[H.attempts]),
    firstSeenAt: date(headers[H.firstSeenAt]),
    failedAt: date(headers[H.failedAt]),
    replays: number(headers[H.replays]) ?? 0,
    destination,
    payload,
    headers,
  };
}

/** Header text of any broker's header value (Kafka: Buffer or string; AMQP: string, number...). */
export function headerText(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  if (Array.isArray(value)) return value.length === 0 ? undefined : headerText(value[value.length - 1]);
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** True for the headers a replay drops: ours (but the replay count, which it sets) and the broker's dead-letter history. */
export function isDeadLetterHeader(name: string): boolean {
  return (
    name.startsWith(DEAD_LETTER_HEADER_PREFIX) ||
    name === 'x-death' ||
    name.startsWith('x-first-death-') ||
    name.startsWith('x-last-death-')
  );
}

export const REPLAYS_HEADER = H.replays;

function number(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  return Number.isFinite(n) ? n : undefined;
}

function date(text: string | undefined): Date | undefined {
  if (text === undefined) return undefined;
  const d = new Date(text);
  return Number.isNaN(d.getTime()) ? undefined : d;
}
