import cliProgress from 'cli-progress';

/** A progress bar on stderr, or nothing (with --json, or when stderr is no terminal). */
export interface Progress {
  increment(by?: number): void;
  /** Raises the total when the work turns out larger than counted. */
  grow(total: number): void;
  stop(): void;
}

export function progress(label: string, total: number, enabled: boolean): Progress {
  if (!enabled || process.stderr.isTTY !== true) {
    return { increment() {}, grow() {}, stop() {} };
  }
  const bar = new cliProgress.SingleBar(
    { format: `${label} [{bar}] {value}/{total}`, stream: process.stderr, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  let value = 0;
  let max = total;
  bar.start(max, 0);
  return {
    increment(by = 1) {
      value += by;
      if (value > max) {
        max = value;
        bar.setTotal(max);
      }
      bar.update(value);
    },
    grow(next) {
      if (next > max) {
        max = next;
        bar.setTotal(max);
      }
    },
    stop() {
      bar.stop();
    },
  };
}
