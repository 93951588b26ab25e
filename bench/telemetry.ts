// Telemetry benchmark: what OpenTelemetry costs the inbox (docs/telemetry.md, "Cost").
//
//   pnpm run build && node bench/telemetry.ts [--messages 5000] [--rounds 5] [--concurrency 8]
//
// The core bench's `inbox.process` case (bench/core.ts: 30% redeliveries, a handler that
// inserts one business row, Postgres in DATABASE_URL), each delivery wrapped the way an
// adapter wraps it (a process span started from its headers, run, ended with the outcome),
// under three set-ups, interleaved round by round (the order rotates), medians kept:
// - `off`: `telemetry: false`, the very branch taken when `@opentelemetry/api` is not
//   installed (the import failed: nothing is wrapped, nothing recorded);
// - `api, no SDK`: the API loaded, no SDK registered (every call a no-op): the default;
// - `SDK`: a tracer provider (batch span processor, an exporter that drops spans), a meter
//   provider with a reader, the async-hooks context manager and the W3C propagator.
// With each rate, the CPU time the Node process spent per message (process.cpuUsage), which
// the machine's other load disturbs less than the rate; then the CPU each set-up adds per
// message without a database at all, for a figure free of the database's noise. Prints a table and saves bench/results/telemetry.json.
import { parseArgs } from 'node:util';
import { createInbox, type Inbox } from '@inboxkit/core';
import { inboxTelemetry } from '@inboxkit/core/adapter';
import { createPgPool } from '@inboxkit/core/pg';
import { context, metrics, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, BatchSpanProcessor, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import { CompiledQuery, Kysely, PostgresDialect } from 'kysely';
import { benchDatabase, median, saveResults } from './support.ts';

const { values: args } = parseArgs({
  options: {
    messages: { type: 'string', default: '5000' },
    rounds: { type: 'string', default: '5' },
    concurrency: { type: 'string', default: '8' },
  },
});
const N = Number(args.messages);
const ROUNDS = Number(args.rounds);
const C = Number(args.concurrency);

interface BenchDB {
  bench_rows: { id: string; amount: number };
}
const BUSINESS = 'INSERT INTO bench_rows (id, amount) VALUES ($1, $2)';

const url = await benchDatabase('inboxkit_bench_telemetry');
const pool = createPgPool({ connectionString: url, max: C });
const db = new Kysely<BenchDB>({ dialect: new PostgresDialect({ pool }) });
await pool.query('CREATE TABLE bench_rows (id text PRIMARY KEY, amount integer NOT NULL)');
{
  const { migrateInbox } = await import('@inboxkit/core');
  const { error } = await migrateInbox(db);
  if (error) throw error;
}

/** The deliveries: `N`, 30% of them redeliveries of an id at least 64 places earlier (seeded). */
function deliveries(): { id: string; payload: string; headers: Record<string, string> }[] {
  let seed = 42;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const list: { id: string; payload: string; headers: Record<string, string> }[] = [];
  const fresh: (typeof list)[number][] = [];
  for (let i = 0; i < N; i++) {
    if (fresh.length > 64 && random() < 0.3) {
      list.push(fresh[Math.floor(random() * (fresh.length - 64))] as (typeof list)[number]);
    } else {
      const id = `m-${i}`;
      const traceId = (i + 1).toString(16).padStart(32, '0');
      const delivery = {
        id,
        payload: JSON.stringify({ id, amount: i % 1000, currency: 'EUR', account: `acct-${i % 97}` }),
        headers: { traceparent: `00-${traceId}-${'1'.padStart(16, '0')}-01` },
      };
      fresh.push(delivery);
      list.push(delivery);
    }
  }
  return list;
}
const MIX = deliveries();

/** What an adapter does around `inbox.process` (packages/kafka/src/inbox-each-message.ts). */
async function deliver(inbox: Inbox<BenchDB>, delivery: (typeof MIX)[number]): Promise<void> {
  const span = inboxTelemetry(inbox).message({
    system: 'kafka',
    destination: 'bench',
    headers: delivery.headers,
    attributes: { 'messaging.destination.name': 'bench', 'messaging.consumer.group.name': 'bench' },
    sentAtMs: Date.now() - 5,
  });
  const outcome = await span.run(() =>
    inbox.process(delivery, async (trx) => {
      await trx.executeQuery(CompiledQuery.raw(BUSINESS, [delivery.id, 1]));
    }),
  );
  span.end(outcome, true);
  if (outcome.status !== 'processed' && outcome.status !== 'duplicate') throw new Error(`unexpected ${outcome.status}`);
}

async function drain(inbox: Inbox<BenchDB>): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: C }, async () => {
      for (;;) {
        const i = next++;
        if (i >= MIX.length) return;
        await deliver(inbox, MIX[i] as (typeof MIX)[number]);
      }
    }),
  );
  return (MIX.length / (performance.now() - started)) * 1000;
}

/** An exporter that drops every span: the SDK's own cost, not an exporter's. */
const dropSpans: SpanExporter = {
  export: (_spans, done) => done({ code: 0 }),
  shutdown: async () => {},
};
class Reader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

/** Registers an SDK; returns what unregisters it. */
function registerSdk(): () => Promise<void> {
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(dropSpans)] });
  const meterProvider = new MeterProvider({ readers: [new Reader()] });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(tracerProvider);
  metrics.setGlobalMeterProvider(meterProvider);
  return async () => {
    await tracerProvider.shutdown();
    await meterProvider.shutdown();
    trace.disable();
    metrics.disable();
    propagation.disable();
    context.disable();
  };
}

type Mode = 'off' | 'api, no SDK' | 'SDK';
const MODES: Mode[] = ['off', 'api, no SDK', 'SDK'];
let run = 0;
/** An inbox of a fresh consumer (so every round sees new keys), made under the mode's set-up. */
async function measure(mode: Mode): Promise<{ rate: number; cpu: number }> {
  const unregister = mode === 'SDK' ? registerSdk() : undefined;
  try {
    await pool.query('TRUNCATE bench_rows, processed_messages');
    const inbox = createInbox({
      db,
      consumer: `bench-${run++}`,
      telemetry: mode === 'off' ? false : { gauges: false },
    });
    const cpuBefore = process.cpuUsage();
    const rate = await drain(inbox);
    const used = process.cpuUsage(cpuBefore);
    return { rate, cpu: (used.user + used.system) / MIX.length };
  } finally {
    await unregister?.();
  }
}

const rates = new Map<Mode, number[]>(MODES.map((mode) => [mode, []]));
const cpuInRounds = new Map<Mode, number[]>(MODES.map((mode) => [mode, []]));
for (let round = 0; round < ROUNDS; round++) {
  const order = MODES.map((_, i) => MODES[(i + round) % MODES.length] as Mode);
  for (const mode of order) {
    const { rate, cpu } = await measure(mode);
    rates.get(mode)?.push(rate);
    cpuInRounds.get(mode)?.push(cpu);
    console.log(`round ${round + 1} ${mode}: ${Math.round(rate)} msg/s, ${cpu.toFixed(1)} µs CPU/msg`);
  }
}

/** The CPU one set-up adds per message: the adapter's wrapping around a process call that does no I/O. */
async function cpuPerMessage(mode: Mode): Promise<number> {
  const unregister = mode === 'SDK' ? registerSdk() : undefined;
  try {
    const inbox = createInbox({ db, consumer: `cpu-${run++}`, telemetry: mode === 'off' ? false : { gauges: false } });
    const telemetry = inboxTelemetry(inbox);
    const outcome = { status: 'processed', messageId: 'x', result: undefined, attempts: 1 } as const;
    const once = async (delivery: (typeof MIX)[number]) => {
      const span = telemetry.message({
        system: 'kafka',
        destination: 'bench',
        headers: delivery.headers,
        attributes: { 'messaging.destination.name': 'bench' },
        sentAtMs: Date.now(),
      });
      const result = await span.run(() =>
        mode === 'off'
          ? Promise.resolve(outcome)
          : telemetry.process(
              async () => {},
              async () => outcome,
            ),
      );
      span.end(result, true);
    };
    for (const delivery of MIX) await once(delivery); // warm up
    const started = performance.now();
    for (let i = 0; i < 10; i++) for (const delivery of MIX) await once(delivery);
    return ((performance.now() - started) * 1000) / (10 * MIX.length);
  } finally {
    await unregister?.();
  }
}
// Interleaved too, five times each, medians: the JIT's warm-up favours whichever runs later.
const cpuRuns = new Map<Mode, number[]>(MODES.map((mode) => [mode, []]));
for (let round = 0; round < 5; round++) {
  for (const mode of MODES.map((_, i) => MODES[(i + round) % MODES.length] as Mode)) {
    cpuRuns.get(mode)?.push(await cpuPerMessage(mode));
  }
}
const cpu = new Map<Mode, number>(MODES.map((mode) => [mode, median(cpuRuns.get(mode) ?? [])]));

const off = median(rates.get('off') ?? []);
console.log(
  `\n${'set-up'.padEnd(14)}  ${'msg/s'.padStart(7)}  ${'vs off'.padStart(7)}  ${'CPU µs/msg'.padStart(10)}  ${'no-DB µs/msg'.padStart(12)}`,
);
const figures = MODES.map((mode) => {
  const rate = median(rates.get(mode) ?? []);
  const figure = {
    name: mode,
    concurrency: C,
    messagesPerSec: Math.round(rate),
    ratioToOff: Number((rate / off).toFixed(3)),
    /** CPU of the Node process per message, with the database (median of the rounds). */
    processCpuMicrosPerMessage: Number(median(cpuInRounds.get(mode) ?? []).toFixed(1)),
    /** CPU per message of the wrapping alone, no database. */
    cpuMicrosPerMessage: Number((cpu.get(mode) ?? NaN).toFixed(2)),
  };
  console.log(
    `${mode.padEnd(14)}  ${String(figure.messagesPerSec).padStart(7)}  ${figure.ratioToOff.toFixed(3).padStart(7)}  ${figure.processCpuMicrosPerMessage.toFixed(1).padStart(10)}  ${figure.cpuMicrosPerMessage.toFixed(2).padStart(12)}`,
  );
  return figure;
});
const noSdkCost = 1 - median(rates.get('api, no SDK') ?? []) / off;
const cpuAdded = (cpu.get('api, no SDK') ?? 0) - (cpu.get('off') ?? 0);
const processCpu = (mode: Mode) => median(cpuInRounds.get(mode) ?? []);
const cpuShare = processCpu('api, no SDK') / processCpu('off') - 1;
console.log(
  `\nno SDK against no @opentelemetry/api: throughput ratio ${(1 - noSdkCost).toFixed(3)} (target: cost <= 2%, ${noSdkCost <= 0.02 ? 'MET' : 'MISSED'}); process CPU per message ${(cpuShare * 100).toFixed(1)}%; the wrapping alone adds ${cpuAdded.toFixed(2)} µs per message`,
);
saveResults('telemetry', {
  messages: N,
  rounds: ROUNDS,
  concurrency: C,
  figures,
  target: { target: 'no SDK costs at most 2% of inbox.process throughput', value: noSdkCost, limit: 0.02 },
  processCpuAddedNoSdk: cpuShare,
});
await db.destroy();
