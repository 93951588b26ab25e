import { defineConfig } from 'vitest/config';

// Every test talks to real services (docs/design.md, "Tests and services"). Two workers at most: these are
// 2-core machines, and fault tests start processes of their own. Each project resolves
// only the services it needs.
export default defineConfig({
  test: {
    testTimeout: 120_000,
    hookTimeout: 180_000,
    maxWorkers: 2,
    // kafkajs 2.2.4 sets negative timeouts, which Node 24 warns about in every process.
    execArgv: ['--disable-warning=TimeoutNegativeWarning'],
    projects: [
      {
        extends: true,
        test: {
          name: 'core',
          include: ['packages/core/test/**/*.test.ts'],
          globalSetup: ['test/support/global-postgres.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'rabbitmq',
          include: ['packages/rabbitmq/test/**/*.test.ts', 'test/rabbitmq/**/*.test.ts'],
          globalSetup: ['test/support/global-rabbitmq.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'kafka',
          include: ['packages/kafka/test/**/*.test.ts', 'test/kafka/**/*.test.ts'],
          globalSetup: ['test/support/global-kafka.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'examples',
          include: ['test/examples/**/*.test.ts'],
          globalSetup: ['test/support/global-all.ts'],
        },
      },
      {
        // spin on the protocol's model (model/inbox.pml): no services needed.
        extends: true,
        test: {
          name: 'model',
          include: ['test/model/**/*.test.ts'],
        },
      },
      {
        // The inboxkit command, run as a process against every service.
        extends: true,
        test: {
          name: 'cli',
          include: ['packages/cli/test/**/*.test.ts'],
          globalSetup: ['test/support/global-all.ts'],
        },
      },
      {
        // The packages as published: packed, installed outside the workspace, run on Node 22
        // and 24 (docs/releasing.md).
        extends: true,
        test: {
          name: 'packages',
          include: ['test/packages/**/*.test.ts'],
          globalSetup: ['test/support/global-all.ts'],
        },
      },
      {
        // The docs: every TypeScript block type-checked, every quick start run as written
        // against the real services (SIGTERM, start-up while they come up), SQL recipes run,
        // benchmark charts current.
        extends: true,
        test: {
          name: 'docs',
          include: ['test/docs/**/*.test.ts'],
          globalSetup: ['test/support/global-all.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'http',
          include: ['packages/http/test/**/*.test.ts'],
          globalSetup: ['test/support/global-postgres.ts'],
        },
      },
      {
        // The essential cases again, every connection through a private PgBouncer in
        // transaction mode (docs/pgbouncer.md): createTestDatabase routes them there.
        extends: true,
        test: {
          name: 'pgbouncer',
          include: [
            'test/pgbouncer/**/*.test.ts',
            'packages/core/test/inbox.test.ts',
            'packages/core/test/concurrency.test.ts',
            'packages/core/test/handler-timeout.test.ts',
            'packages/core/test/purge.test.ts',
            'packages/core/test/partitioned.test.ts',
            'packages/core/test/batch.test.ts',
            'packages/core/test/options.test.ts',
            'packages/http/test/behaviour.test.ts',
            'test/rabbitmq/duplicates.test.ts',
            'packages/kafka/test/each-message.test.ts',
            'packages/kafka/test/each-batch.test.ts',
          ],
          globalSetup: ['test/support/global-pgbouncer.ts'],
        },
      },
    ],
  },
});
