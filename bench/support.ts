// Shared helpers of the benchmarks: a database of their own, medians, a printed table and
// a JSON file per benchmark under bench/results/.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { renderCharts, writeCharts } from '../scripts/bench-charts.mjs';

export interface Figure {
  readonly name: string;
  readonly concurrency: number;
  readonly messagesPerSec: number;
}

export interface Target {
  readonly target: string;
  readonly value: number;
  readonly limit: number;
  readonly higherIsBetter: boolean;
}

/** Creates (or recreates) a database for a benchmark on DATABASE_URL's server and returns its URL. */
export async function benchDatabase(name: string): Promise<string> {
  const admin = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const client = new pg.Client({ connectionString: admin });
  await client.connect();
  try {
    await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    await client.query(`CREATE DATABASE "${name}"`);
  } finally {
    await client.end();
  }
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return url.toString();
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? NaN) : ((sorted[mid - 1] ?? NaN) + (sorted[mid] ?? NaN)) / 2;
}

export function met(target: Target): boolean {
  return target.higherIsBetter ? target.value >= target.limit : target.value <= target.limit;
}

export function printTable(
  figures: readonly Figure[],
  targets: readonly Target[],
  notes: readonly string[] = [],
): void {
  const width = Math.max(...figures.map((f) => f.name.length), 10);
  console.log(`\n${'mode'.padEnd(width)}  ${'c'.padStart(2)}  ${'msg/s'.padStart(9)}`);
  for (const f of figures) {
    console.log(
      `${f.name.padEnd(width)}  ${String(f.concurrency).padStart(2)}  ${String(f.messagesPerSec).padStart(9)}`,
    );
  }
  for (const note of notes) console.log(note);
  console.log('');
  for (const t of targets) {
    console.log(
      `${met(t) ? 'MET   ' : 'MISSED'}  ${t.target}: ${t.value.toFixed(2)} (${t.higherIsBetter ? '>=' : '<='} ${t.limit})`,
    );
  }
}

/** Writes bench/results/<name>.json with the machine it ran on. */
export function saveResults(name: string, body: object): void {
  const dir = new URL('./results/', import.meta.url);
  mkdirSync(dir, { recursive: true });
  const file = new URL(`${name}.json`, dir);
  const machine = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
  };
  writeFileSync(file, `${JSON.stringify({ machine, ...body }, null, 2)}\n`);
  console.log(`\nsaved ${file.pathname}`);
  // The charts of docs/benchmarks.md follow the results (scripts/bench-charts.mjs).
  const charts = fileURLToPath(new URL('../docs/benchmarks/', import.meta.url));
  try {
    writeCharts(charts, renderCharts(fileURLToPath(dir)));
    console.log(`redrew the charts in ${charts}`);
  } catch (error) {
    console.error(`charts not redrawn: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/**
 * Counts the records a run has done and times it from the first record to the `total`th:
 * `start()` at the first, `add(n)` as they settle; `finished` resolves at the last.
 */
export class RecordClock {
  done = 0;
  #first = 0;
  #last = 0;
  #finished: () => void = () => {};
  readonly finished = new Promise<void>((resolve) => {
    this.#finished = resolve;
  });

  readonly total: number;

  constructor(total: number) {
    this.total = total;
  }

  start(): void {
    if (this.#first === 0) this.#first = performance.now();
  }

  add(count: number): void {
    this.done += count;
    if (this.done >= this.total) {
      this.#last = performance.now();
      this.#finished();
    }
  }

  /** Records a second over the run. */
  get rate(): number {
    return (this.total / (this.#last - this.#first)) * 1000;
  }
}

/**
 * Runs every mode (whose name matches `only`, when given) once a round for `rounds` rounds,
 * the modes of a round back to back, and returns each mode's rates in round order.
 */
export async function sampleRounds<M>(
  modes: Record<string, M>,
  options: { rounds: number; only: string },
  measure: (name: string, mode: M) => Promise<number>,
): Promise<Map<string, number[]>> {
  const samples = new Map<string, number[]>();
  for (let round = 0; round < options.rounds; round++) {
    for (const [name, mode] of Object.entries(modes)) {
      if (options.only !== '' && !new RegExp(options.only).test(name)) continue;
      const rate = await measure(name, mode);
      samples.set(name, [...(samples.get(name) ?? []), rate]);
      process.stderr.write(`  round ${round + 1}/${options.rounds} ${name}: ${Math.round(rate)} msg/s\n`);
    }
  }
  return samples;
}

/**
 * `a` over `b` (modes named by a prefix): the median of the per-round ratios. The modes of
 * one round run back to back, so pairing them keeps out most of the noise of a shared machine.
 */
export function pairedRatio(samples: Map<string, number[]>, a: string, b: string): number {
  const of = (name: string) => [...samples].find(([key]) => key.startsWith(name))?.[1] ?? [];
  const [as, bs] = [of(a), of(b)];
  return median(as.map((value, i) => value / (bs[i] ?? Number.NaN)));
}
