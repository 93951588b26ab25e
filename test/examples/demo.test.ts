import { spawn } from 'node:child_process';
import { expect, inject, it } from 'vitest';

/** Runs an example program to its end and returns its exit code and output. */
function runProgram(file: string, args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--disable-warning=TimeoutNegativeWarning', file, ...args], {
      env: {
        ...process.env,
        DATABASE_URL: inject('databaseUrl'),
        AMQP_URL: inject('amqpUrl'),
        KAFKA_BROKERS: inject('kafkaBrokers').join(','),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk) => {
      output += chunk;
    });
    child.stderr.on('data', (chunk) => {
      output += chunk;
    });
    child.on('close', (code) => resolve({ code, output }));
  });
}

it('the demo charges every request exactly once over Kafka and RabbitMQ and notifies each charge once through the outbox, despite re-sends, SIGKILLs and a poison request, which inboxkit dlq replay applies once after the fix', async () => {
  const { code, output } = await runProgram('examples/demo/demo.ts', ['--charges', '300', '--timeout-seconds', '100']);
  expect(output).toContain(
    'OK: every charge was applied exactly once on both brokers, and notified exactly once; the poison request, replayed after the fix, applied once; the dead-letter destinations are empty',
  );
  expect(output).toMatch(/inboxkit dlq replay --topic \S+\.dlq --all/);
  expect(output).toMatch(/inboxkit dlq replay --queue \S+\.dlq --all/);
  expect(output).not.toContain('inboxkit dlq replay failed');
  expect(output).toMatch(/kafka: killed with SIGKILL at \d+ charges/);
  expect(output).toMatch(/rabbitmq: killed with SIGKILL at \d+ charges/);
  expect(output).toMatch(/relay: killed with SIGKILL at \d+ notifications/);
  expect(output).toMatch(/notifications: killed with SIGKILL at \d+ notifications/);
  expect(output).toMatch(/relay SIGKILLed and restarted 1, notifications consumer 1;.* left in the outbox 0/);
  expect(output).not.toContain('exited on its own');
  expect(code).toBe(0);
}, 180_000);

it('the core demo charges every request exactly once', async () => {
  const { code, output } = await runProgram('examples/demo/core-demo.ts', ['--charges', '300']);
  expect(output).toContain('OK: every charge was applied exactly once');
  expect(code).toBe(0);
}, 60_000);
