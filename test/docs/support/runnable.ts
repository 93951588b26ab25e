// Which test runs which marked block (`<!-- snippet: run=NAME -->`). The type-check test
// (test/docs/typecheck.test.ts) fails on a marked block no test claims, and on a claim whose
// block is gone, so a quick start cannot quietly drop out of the tests.

export interface Runnable {
  /** The `run=` value. */
  readonly run: string;
  /** The Markdown files holding such a block. */
  readonly files: readonly string[];
  /** The test file that runs them. */
  readonly test: string;
  /** Further snippet attributes that test reads. */
  readonly attributes?: readonly string[];
}

export const RUNNABLE: readonly Runnable[] = [
  { run: 'kafka', files: ['README.md'], test: 'test/docs/quick-starts.test.ts' },
  { run: 'rabbitmq', files: ['README.md'], test: 'test/docs/quick-starts.test.ts' },
  { run: 'http', files: ['README.md'], test: 'test/docs/quick-starts.test.ts' },
  { run: 'outbox', files: ['README.md'], test: 'test/docs/quick-starts.test.ts' },
  { run: 'inbox', files: ['docs/inbox.md'], test: 'test/docs/quick-starts.test.ts' },
];
