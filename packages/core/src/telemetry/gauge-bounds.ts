/** The most rows a gauge counts: past it, it reports the bound (the outbox's backlog). */
export const COUNT_BOUND = 10_000;
/** The longest one gauge statement may run before Postgres cancels it. */
export const GAUGE_STATEMENT_TIMEOUT_MS = 2000;
