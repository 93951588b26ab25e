import { ConfigurationError } from '../errors.js';
import { bool, positiveInteger } from '../option-checks.js';

/**
 * The inbox's OpenTelemetry spans and metrics (docs/telemetry.md). They are made only when
 * `@opentelemetry/api` is installed, and cost nothing measurable until the application
 * registers an SDK.
 *
 * @example
 * ```ts
 * createInbox({ db, consumer: 'payments', telemetry: { gaugeIntervalMs: 30_000 } })
 * createInbox({ db, consumer: 'payments', telemetry: false }) // none, even with an SDK
 * ```
 */
export interface TelemetryOptions {
  /** Spans and metrics at all. Default `true`. */
  readonly enabled?: boolean;
  /**
   * The gauges (keys, oldest key, crash-loop suspects), which query Postgres: a few
   * bounded statements per inbox at most once per `gaugeIntervalMs`. Default `true`.
   */
  readonly gauges?: boolean;
  /**
   * How long the gauges' figures are kept, in milliseconds: a collection within it reports
   * them again without querying Postgres. Default `60000`.
   */
  readonly gaugeIntervalMs?: number;
}

/** The telemetry options, compiled. */
export interface TelemetryConfig {
  readonly enabled: boolean;
  readonly gauges: boolean;
  readonly gaugeIntervalMs: number;
}

const KNOWN = new Set(['enabled', 'gauges', 'gaugeIntervalMs']);

export function compileTelemetryOptions(options: boolean | TelemetryOptions | undefined): TelemetryConfig {
  if (options === undefined || typeof options === 'boolean') {
    return Object.freeze({ enabled: options ?? true, gauges: true, gaugeIntervalMs: 60_000 });
  }
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError(
      `Expected \`telemetry\` to be a boolean or an object { enabled, gauges, gaugeIntervalMs }, got ${String(options)}.`,
    );
  }
  for (const key of Object.keys(options)) {
    if (!KNOWN.has(key)) {
      throw new ConfigurationError(`Unknown option \`telemetry.${key}\`; known: ${[...KNOWN].join(', ')}.`);
    }
  }
  return Object.freeze({
    enabled: bool('telemetry.enabled', options.enabled, true),
    gauges: bool('telemetry.gauges', options.gauges, true),
    gaugeIntervalMs: positiveInteger('telemetry.gaugeIntervalMs', options.gaugeIntervalMs, 60_000),
  });
}
