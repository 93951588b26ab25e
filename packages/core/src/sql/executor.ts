import { CompiledQuery, type QueryResult } from 'kysely';

/** The part of a Kysely instance or transaction the statements need. */
export interface QueryRunner {
  executeQuery<R>(query: CompiledQuery<R>): Promise<QueryResult<R>>;
}

/** Statement text is built once per inbox; only values travel as parameters. */
export function raw<R>(text: string, parameters: unknown[]): CompiledQuery<R> {
  return CompiledQuery.raw(text, parameters) as CompiledQuery<R>;
}

/** A row of the inbox table as the statements read it back. */
export interface StoredRow {
  readonly status: 'processed' | 'dead_lettered';
  readonly payload_hash: Buffer | null;
  readonly result: unknown;
  readonly processed_at: Date;
}
