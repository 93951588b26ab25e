// Types for scripts/bench-charts.mjs (imported by bench/support.ts and test/docs/bench-charts.test.ts).

/** A result file that cannot be drawn: not JSON, or without a figure a chart needs. */
export declare class ResultError extends Error {
  /** The result file's name, e.g. `core.json`. */
  readonly file: string;
}

/** One chart: its file name in docs/benchmarks, the result file it is drawn from, the SVG. */
export interface RenderedChart {
  readonly file: string;
  readonly source: string;
  readonly svg: string;
}

/** Every chart the result files in `resultsDir` (default bench/results) give, sorted by file name. */
export declare function renderCharts(resultsDir?: string): RenderedChart[];
/** Writes the charts into `outDir`, removing the SVGs there that no chart produced. */
export declare function writeCharts(outDir: string, charts: readonly RenderedChart[]): void;
/** The files of `outDir` that differ from `charts` (missing, different or left over). */
export declare function staleCharts(outDir: string, charts: readonly RenderedChart[]): string[];
