import { UsageError } from './errors.js';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** `500ms`, `30s`, `15m`, `12h`, `7d`, `2w`, or a plain number of milliseconds. */
export function parseDuration(option: string, text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?$/.exec(text.trim());
  if (match === null) {
    throw new UsageError(
      `Expected ${option} to be a duration such as 30s, 15m, 12h or 7d; got ${JSON.stringify(text)}.`,
    );
  }
  return Math.round(Number(match[1]) * (UNITS[match[2] ?? 'ms'] ?? 1));
}

/** A point in time: an ISO 8601 date, or a duration meaning that long ago (`2h`). */
export function parseInstant(option: string, text: string, now = Date.now()): Date {
  if (/^\d+(?:\.\d+)?(ms|s|m|h|d|w)$/.test(text.trim())) return new Date(now - parseDuration(option, text));
  const date = new Date(text);
  if (Number.isNaN(date.getTime()) || !/^\d{4}-\d{2}-\d{2}/.test(text)) {
    throw new UsageError(
      `Expected ${option} to be an ISO 8601 date or a duration ago (2h, 3d); got ${JSON.stringify(text)}.`,
    );
  }
  return date;
}

/** A positive whole number option. */
export function parseCount(option: string, text: string, min = 1): number {
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(value) || value < min) {
    throw new UsageError(`Expected ${option} to be a whole number of at least ${min}; got ${JSON.stringify(text)}.`);
  }
  return value;
}

/** `3d 4h`, `12m`, `40s`: an age for a table. */
export function formatAge(ms: number): string {
  if (ms < 0) ms = 0;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}
