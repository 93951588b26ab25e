import { ConfigurationError } from './errors.js';

/**
 * Schema and table names are checked once at construction and then always quoted. A name
 * is a plain Postgres identifier: a letter or underscore, then letters, digits, `_` or `$`,
 * at most 63 bytes. Anything else (quotes, semicolons, spaces) is refused with a message
 * that names the option, rather than being quoted into a surprising table name.
 */
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_$]*$/;
const MAX_IDENTIFIER_BYTES = 63;

/**
 * Checks a schema or table name and returns it: a plain Postgres identifier (a letter or
 * underscore, then letters, digits, `_` or `$`), at most `maxBytes` bytes (default 63).
 *
 * @throws {@link "@inboxkit/core"!ConfigurationError} (`code: 'INBOX_CONFIGURATION'`), naming `option`.
 */
export function checkIdentifier(option: string, value: unknown, maxBytes = MAX_IDENTIFIER_BYTES): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new ConfigurationError(`Expected \`${option}\` to be a non-empty string, got ${typeof value}.`);
  }
  if (!IDENTIFIER.test(value)) {
    throw new ConfigurationError(
      `\`${option}\` must be a plain identifier (a letter or underscore, then letters, digits, _ or $); got ${JSON.stringify(value)}.`,
    );
  }
  if (Buffer.byteLength(value) > maxBytes) {
    throw new ConfigurationError(`\`${option}\` must be at most ${maxBytes} bytes long; got ${JSON.stringify(value)}.`);
  }
  return value;
}

/** Quotes an identifier for SQL text. Only ever called on names {@link checkIdentifier} accepted. */
export function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** The inbox's tables, checked and quoted once. */
export interface InboxTables {
  readonly schema: string;
  readonly table: string;
  /** `"schema"."table"` */
  readonly qualified: string;
  /** `"schema"."table_attempts"`: delivery attempts of possibly crashing messages. */
  readonly attemptsQualified: string;
  /** `"schema"."table_claim"`: the claim function (migration 0002, `sql/claim-message.ts`). */
  readonly claimFunction: string;
  /** `"schema"."table_maintain"`: partition maintenance of a partitioned table (`sql/partitioned-table.ts`). */
  readonly maintainFunction: string;
}

export const ATTEMPTS_SUFFIX = '_attempts';
export const CLAIM_FUNCTION_SUFFIX = '_claim';
export const MAINTAIN_FUNCTION_SUFFIX = '_maintain';
/** Every name derived from the table's (`<table>_attempts`, `<table>_claim`, `<table>_maintain`) fits in 63 bytes. */
const MAX_TABLE_BYTES =
  MAX_IDENTIFIER_BYTES -
  Math.max(ATTEMPTS_SUFFIX.length, CLAIM_FUNCTION_SUFFIX.length, MAINTAIN_FUNCTION_SUFFIX.length);

export function inboxTables(schema: unknown = 'public', table: unknown = 'processed_messages'): InboxTables {
  const s = checkIdentifier('schema', schema);
  const t = checkIdentifier('table', table, MAX_TABLE_BYTES);
  return Object.freeze({
    schema: s,
    table: t,
    qualified: `${quoteIdentifier(s)}.${quoteIdentifier(t)}`,
    attemptsQualified: `${quoteIdentifier(s)}.${quoteIdentifier(t + ATTEMPTS_SUFFIX)}`,
    claimFunction: `${quoteIdentifier(s)}.${quoteIdentifier(checkIdentifier('table', t + CLAIM_FUNCTION_SUFFIX))}`,
    maintainFunction: `${quoteIdentifier(s)}.${quoteIdentifier(checkIdentifier('table', t + MAINTAIN_FUNCTION_SUFFIX))}`,
  });
}
