import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/support/postgres.ts';

// `@opentelemetry/api` is an optional peer dependency (docs/telemetry.md): an application
// that does not install it must run unchanged. The built package is laid out in a scratch
// `node_modules` with its required dependencies only, and a script run there processes a
// message against Postgres and drives an adapter's span.

const run = promisify(execFile);
const core = join(dirname(fileURLToPath(import.meta.url)), '..');

let t: TestDatabase;
let scratch: string;
beforeAll(async () => {
  t = await createTestDatabase('core_without_otel');
  scratch = await mkdtemp(join(tmpdir(), 'inboxkit-no-otel-'));
  const modules = join(scratch, 'node_modules');
  await mkdir(join(modules, '@inboxkit', 'core'), { recursive: true });
  await cp(join(core, 'dist'), join(modules, '@inboxkit', 'core', 'dist'), { recursive: true });
  await cp(join(core, 'package.json'), join(modules, '@inboxkit', 'core', 'package.json'));
  for (const dependency of ['kysely', 'pg', 'p-retry']) {
    await symlink(await realpath(join(core, 'node_modules', dependency)), join(modules, dependency), 'dir');
  }
});
afterAll(async () => {
  if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
  await t?.dispose();
});

const SCRIPT = `
import { createInbox } from '@inboxkit/core';
import { inboxTelemetry, traceHeaders } from '@inboxkit/core/adapter';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';

let api = 'absent';
try {
  await import('@opentelemetry/api');
  api = 'present';
} catch {}
const db = new Kysely({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 }) }) });
const inbox = createInbox({ db, consumer: 'without-otel' });
const outcome = await inbox.process({ id: 'w-1', payload: 'x' }, async () => 'ran');
const telemetry = inboxTelemetry(inbox);
const span = telemetry.message({
  system: 'kafka',
  destination: 'charges',
  headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
  attributes: {},
});
const inside = await span.run(async () => traceHeaders());
span.end(outcome, true);
const again = await inbox.process({ id: 'w-1', payload: 'x' }, async () => 'ran twice');
console.log(JSON.stringify({ api, first: outcome.status, result: outcome.result, again: again.status, off: telemetry.off, inside }));
await db.destroy();
`;

it('runs without @opentelemetry/api installed: processes, deduplicates, and every telemetry call passes through', async () => {
  await writeFile(join(scratch, 'script.mjs'), SCRIPT);
  const { stdout } = await run(process.execPath, ['script.mjs'], {
    cwd: scratch,
    env: { ...process.env, DATABASE_URL: t.url },
  });
  expect(JSON.parse(stdout.trim())).toEqual({
    api: 'absent',
    first: 'processed',
    result: 'ran',
    again: 'duplicate',
    off: true,
    inside: {},
  });
});
