// Runs examples/http-payments/server.ts as a user would (node, a free port, a database of
// its own) and checks that a retried POST gives one payment and a replayed answer.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/support/postgres.ts';
import { post } from './support/client.ts';

const server = fileURLToPath(new URL('../../../examples/http-payments/server.ts', import.meta.url));

let t: TestDatabase;
let child: ChildProcess | undefined;
let baseUrl: string;
let output = '';

beforeAll(async () => {
  t = await createTestDatabase('http_example');
  child = spawn(process.execPath, [server], {
    env: { ...process.env, DATABASE_URL: t.url, PORT: '0', LOG_LEVEL: 'error' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  baseUrl = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the example did not start:\n${output}`)), 30_000);
    child?.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const match = /listening on (http:\/\/\S+)/.exec(output);
      if (match?.[1]) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child?.stderr?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child?.on('exit', (code) => reject(new Error(`the example exited with ${code}:\n${output}`)));
  });
});

afterAll(async () => {
  if (child && child.exitCode === null) {
    const exited = new Promise((resolve) => child?.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
  await t?.dispose();
});

describe('examples/http-payments', () => {
  it('a POST sent twice with one key makes one payment; the second answer is the replayed first', async () => {
    const key = randomUUID();
    const body = { accountId: 'acc_1', amountCents: 1250, currency: 'EUR' };
    const first = await post(baseUrl, '/payments', { key, body });
    expect(first.status).toBe(201);
    expect(first.headers.get('idempotent-replayed')).toBeNull();
    const second = await post(baseUrl, '/payments', { key, body });
    expect(second.status).toBe(201);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect(second.text).toBe(first.text);
    expect(second.headers.get('location')).toBe(first.headers.get('location'));
    const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM payments`.execute(t.db);
    expect(Number(rows[0]?.n)).toBe(1);

    const reused = await post(baseUrl, '/payments', { key, body: { ...body, amountCents: 9999 } });
    expect(reused.status).toBe(422);
    expect((await post(baseUrl, '/payments', { body })).status).toBe(400);
  });

  it('a transfer sent twice without a key makes one transfer (derived key); another transferId makes another', async () => {
    const body = { transferId: `tr_${randomUUID()}`, fromAccountId: 'acc_1', toAccountId: 'acc_2', amountCents: 500 };
    const first = await post(baseUrl, '/transfers', { body });
    expect(first.status).toBe(201);
    const retry = await post(baseUrl, '/transfers', { body });
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(retry.text).toBe(first.text);
    const other = await post(baseUrl, '/transfers', { body: { ...body, transferId: `tr_${randomUUID()}` } });
    expect(other.status).toBe(201);
    expect(other.headers.get('idempotent-replayed')).toBeNull();
    const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM transfers`.execute(t.db);
    expect(Number(rows[0]?.n)).toBe(2);
  });

  it('stops on SIGTERM with exit code 0', async () => {
    const exited = new Promise<number | null>((resolve) => child?.once('exit', resolve));
    child?.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});
