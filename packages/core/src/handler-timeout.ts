import { HandlerTimeoutError } from './errors.js';

/** What a timed handler call needs to know. */
export interface TimedCall {
  /** `handlerTimeoutMs`, or `undefined` for no limit. */
  readonly timeoutMs: number | undefined;
  /** The message whose handler runs (for the error). */
  readonly messageId: string;
}

/**
 * Runs one handler call under `handlerTimeoutMs`. When the time runs out the signal is
 * aborted with a {@link HandlerTimeoutError}, and once the handler has settled the call
 * rejects with that error, whatever the handler returned: an attempt past its time never
 * commits.
 *
 * A handler stuck in a statement is not cancelled from here: the claim set the
 * transaction's `statement_timeout` to the limit plus a short grace (`statementGraceMs`),
 * so Postgres itself cancels the statement (57014) without a second connection, which a pool whose every connection is
 * held by a stuck handler could not give (docs/design.md, "Liveness").
 *
 * It waits for the handler to settle on purpose: rejecting earlier would let Kysely roll
 * back and release the connection while the handler may still send statements on it,
 * and one sent after the rollback would run outside any transaction.
 */
export async function runTimed<R>(call: TimedCall, run: (signal: AbortSignal) => Promise<R> | R): Promise<R> {
  // Without a limit the signal never aborts. It is still one per call: listeners a handler
  // adds to it (and never removes) must go away with it, not pile up on a shared one.
  if (call.timeoutMs === undefined) return run(new AbortController().signal);
  const limit = call.timeoutMs;
  const controller = new AbortController();
  const started = performance.now();
  let timedOut: HandlerTimeoutError | undefined;
  const timer = setTimeout(() => {
    timedOut = new HandlerTimeoutError(call.messageId, limit);
    controller.abort(timedOut);
  }, limit);
  let result: R | undefined;
  try {
    result = await run(controller.signal);
  } catch (error) {
    // The server's statement_timeout fires a grace after `limit`, counted from when the
    // statement began; should it still beat a late timer, it is the same timeout.
    if (timedOut === undefined && isStatementTimeout(error) && performance.now() - started >= limit - 5) {
      timedOut = new HandlerTimeoutError(call.messageId, limit);
      controller.abort(timedOut);
    }
    if (timedOut === undefined) throw error;
  } finally {
    clearTimeout(timer);
  }
  if (timedOut !== undefined) throw timedOut;
  return result as R;
}

function isStatementTimeout(error: unknown, depth = 0): boolean {
  if (typeof error !== 'object' || error === null || depth > 5) return false;
  if ((error as { code?: unknown }).code === '57014') return true;
  return isStatementTimeout((error as { cause?: unknown }).cause, depth + 1);
}
