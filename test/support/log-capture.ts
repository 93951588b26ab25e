// A logger that keeps every line (level, fields, message), for tests of what inboxkit logs
// (docs/telemetry.md, "Logging"). Debug is on, as a pino logger at level 'debug' says.
import type { InboxLogger } from '@inboxkit/core';

export interface LogLine {
  readonly level: 'debug' | 'info' | 'warn' | 'error';
  readonly fields: Record<string, unknown>;
  readonly message: string | undefined;
}

export function captureLogger(): InboxLogger & { readonly lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at =
    (level: LogLine['level']) =>
    (fields: object, message?: string): void => {
      lines.push({ level, fields: fields as Record<string, unknown>, message });
    };
  return {
    lines,
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    isLevelEnabled: () => true,
  };
}
