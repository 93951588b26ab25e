import Table from 'cli-table3';
import { formatAge } from './durations.js';

/** Writes a value as one JSON document on stdout (Buffers as base64, dates as ISO 8601). */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, jsonReplacer)}\n`);
}

function jsonReplacer(this: unknown, _key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value !== null && typeof value === 'object' && (value as { type?: unknown }).type === 'Buffer') {
    const data = (value as { data?: unknown }).data;
    if (Array.isArray(data)) return Buffer.from(data).toString('base64');
  }
  return value;
}

/** Writes a table on stdout. */
export function printTable(head: string[], rows: Array<Array<string | number>>): void {
  const table = new Table({ head, style: { head: [], border: [] } });
  for (const row of rows) table.push(row.map((cell) => String(cell)));
  process.stdout.write(`${table.toString()}\n`);
}

/** A label/value table, for one record. */
export function printRecord(fields: Array<[string, string]>): void {
  const table = new Table({ style: { head: [], border: [] } });
  for (const [label, value] of fields) table.push({ [label]: value });
  process.stdout.write(`${table.toString()}\n`);
}

export function printLine(text: string): void {
  process.stdout.write(`${text}\n`);
}

export function formatDate(date: Date | null | undefined, now = Date.now()): string {
  if (date === null || date === undefined) return '-';
  return `${date.toISOString()} (${formatAge(now - date.getTime())} ago)`;
}
