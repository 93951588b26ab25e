// Modules the docs show that are not dependencies of this workspace (a user installs them):
// the part of their API the docs' blocks use, so that those blocks type-check for what they
// take from inboxkit. A context brings this file in with
// `/// <reference path="../contexts/optional-modules.d.ts" />` on its first line (the path
// resolves from test/docs/.check/ and from test/docs/contexts/ alike).
//
// Checked by hand against the real packages: pino 10's `pino()` logger is assignable to
// `InboxLogger` as it is (docs/telemetry.md, "Logging").

declare module '@opentelemetry/sdk-node' {
  export interface NodeSDKConfiguration {
    serviceName: string;
    instrumentations: unknown[];
  }
  export class NodeSDK {
    constructor(configuration?: Partial<NodeSDKConfiguration>);
    start(): void;
    shutdown(): Promise<void>;
  }
}

declare module '@opentelemetry/instrumentation-pg' {
  export class PgInstrumentation {
    constructor(config?: Record<string, unknown>);
  }
}

declare module 'pino' {
  interface LogFn {
    (obj: object, msg?: string, ...args: unknown[]): void;
    (msg: string, ...args: unknown[]): void;
  }
  export interface Logger {
    level: string;
    fatal: LogFn;
    error: LogFn;
    warn: LogFn;
    info: LogFn;
    debug: LogFn;
    trace: LogFn;
    isLevelEnabled(level: string): boolean;
    child(bindings: Record<string, unknown>): Logger;
  }
  export interface LoggerOptions {
    level?: string;
    base?: Record<string, unknown> | null;
    redact?: string[];
    mixin?: () => object;
  }
  export default function pino(options?: LoggerOptions): Logger;
}
