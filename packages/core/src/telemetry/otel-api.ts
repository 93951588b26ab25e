// `@opentelemetry/api` is an optional peer dependency (docs/telemetry.md): it is imported
// dynamically, once, when core is loaded, so an application without it runs unchanged and
// an application with it shares its global tracer and meter providers. Types from the API
// stay inside core: nothing public names them, so a user without the package type-checks.
import type * as Otel from '@opentelemetry/api';

export type OtelApi = typeof Otel;
export type { Otel };

let api: OtelApi | null | undefined;

/**
 * Settles once the import was tried: the API, or `null` when it is not installed. Started
 * when this module is evaluated, so it has settled long before the first message arrives
 * (a broker connection takes longer than a cached import).
 */
export const otelLoaded: Promise<OtelApi | null> = import('@opentelemetry/api').then(
  (module) => {
    api = module;
    return module;
  },
  () => {
    api = null;
    return null;
  },
);

/** The API when loaded, `null` when absent, `undefined` while the import is still running. */
export function otelApi(): OtelApi | null | undefined {
  return api;
}

/** The instrumentation scope of every tracer and meter inboxkit makes. */
export const INSTRUMENTATION_SCOPE = '@inboxkit/core';
