// The benchmark charts (docs/benchmarks/*.svg) are drawn from bench/results/*.json by
// scripts/bench-charts.mjs: they must be current (a results change without a redraw fails here),
// each must be shown by docs/benchmarks.md, and a result file the script cannot read must fail
// the script with a message naming the file.
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { ResultError, renderCharts, staleCharts, writeCharts } from '../../scripts/bench-charts.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const RESULTS = join(ROOT, 'bench', 'results');
const CHARTS = join(ROOT, 'docs', 'benchmarks');
const SCRIPT = join(ROOT, 'scripts', 'bench-charts.mjs');
const run = promisify(execFile);

const scratch: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'inboxkit-bench-charts-'));
  scratch.push(dir);
  return dir;
}
afterEach(() => {
  for (const dir of scratch.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** Runs the script as a user does; resolves with its exit code and output. */
async function script(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [SCRIPT, ...args]);
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('docs/benchmarks/*.svg', () => {
  it('are the charts bench/results draws today, byte for byte (redraw: pnpm run bench:charts)', () => {
    const charts = renderCharts(RESULTS);
    expect(charts.length).toBeGreaterThan(10);
    expect(staleCharts(CHARTS, charts)).toEqual([]);
    // Drawn into a folder of its own, the same files come out.
    const out = tempDir();
    writeCharts(out, charts);
    const svgs = (dir: string) =>
      readdirSync(dir)
        .filter((name) => name.endsWith('.svg'))
        .sort();
    expect(svgs(out)).toEqual(svgs(CHARTS));
    for (const name of readdirSync(out)) {
      expect(readFileSync(join(out, name), 'utf8'), name).toBe(readFileSync(join(CHARTS, name), 'utf8'));
    }
  });

  it('come out the same twice from the same results', () => {
    const first = renderCharts(RESULTS);
    const second = renderCharts(RESULTS);
    expect(second).toEqual(first);
  });

  it('have a white background of their own (readable in a dark theme too)', () => {
    for (const chart of renderCharts(RESULTS)) {
      expect(chart.svg, chart.file).toMatch(
        /^<svg [^>]*>\n<title>[^<]+<\/title>\n<rect width="\d+" height="\d+" fill="#ffffff"\/>/,
      );
    }
  });

  it('are each shown by docs/benchmarks.md, which shows no other', () => {
    const page = readFileSync(join(ROOT, 'docs', 'benchmarks.md'), 'utf8');
    const shown = [...page.matchAll(/!\[[^\]]+\]\(benchmarks\/([^)]+\.svg)\)/g)].map((m) => m[1]);
    const files = readdirSync(CHARTS).filter((name) => name.endsWith('.svg'));
    expect([...new Set(shown)].sort()).toEqual(files.sort());
  });

  it('--check passes on the committed charts', async () => {
    const { code, stderr } = await script('--check');
    expect(stderr).toBe('');
    expect(code).toBe(0);
  });
});

describe('scripts/bench-charts.mjs on a result file it cannot read', () => {
  it('fails on a file that is not JSON, naming the file, and writes nothing', async () => {
    const results = tempDir();
    const out = tempDir();
    copyFileSync(join(RESULTS, 'outbox.json'), join(results, 'outbox.json'));
    writeFileSync(join(results, 'core.json'), '{"machine": {"date": "2026-12-04T20:29:29.693Z"}, "figures": [');
    expect(() => renderCharts(results)).toThrow(ResultError);
    expect(() => renderCharts(results)).toThrow(/^bench\/results\/core\.json: is not valid JSON/);
    const { code, stdout, stderr } = await script('--results', results, '--out', out);
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).toMatch(/^bench-charts: bench\/results\/core\.json: is not valid JSON/);
    expect(readdirSync(out)).toEqual([]);
  });

  it('fails on a file without a figure a chart needs, naming the file and the figure', () => {
    const results = tempDir();
    const core = JSON.parse(readFileSync(join(RESULTS, 'core.json'), 'utf8')) as {
      figures: { name: string; concurrency: number }[];
    };
    core.figures = core.figures.filter(
      (f) => !(f.name === 'hand-written twin, 30% redeliveries' && f.concurrency === 8),
    );
    writeFileSync(join(results, 'core.json'), JSON.stringify(core));
    expect(() => renderCharts(results)).toThrow(
      'bench/results/core.json: figures has no "hand-written twin, 30% redeliveries" at concurrency 8',
    );
  });

  it('fails on a figure that is not a number', () => {
    const results = tempDir();
    const outbox = JSON.parse(readFileSync(join(RESULTS, 'outbox.json'), 'utf8')) as {
      relay: { rows: Record<string, unknown> };
    };
    outbox.relay.rows['kafka inboxkit relay'] = '4073';
    writeFileSync(join(results, 'outbox.json'), JSON.stringify(outbox));
    expect(() => renderCharts(results)).toThrow(
      'bench/results/outbox.json: relay.rows.kafka inboxkit relay is not a number',
    );
  });

  it('leaves out the charts of a result file that is absent', () => {
    const results = tempDir();
    copyFileSync(join(RESULTS, 'telemetry.json'), join(results, 'telemetry.json'));
    expect(renderCharts(results).map((c) => c.file)).toEqual(['telemetry.svg']);
  });
});
