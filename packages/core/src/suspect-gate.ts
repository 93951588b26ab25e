/**
 * Suspects (deliveries that may be repeats of one that crashed the process) run strictly
 * alone: no other handler of this inbox is in flight beside one. Otherwise a crash caused
 * by a suspect would count against innocent neighbours in flight with it, and they could
 * reach the crash-loop limit for nothing.
 *
 * A readers-writer gate: ordinary messages share it, a suspect takes it exclusively. New
 * ordinary messages wait while a suspect is waiting, so suspects are not starved. Entering
 * without contention is a counter increment.
 */
export class SuspectGate {
  #shared = 0;
  #exclusive = false;
  #waitingExclusive = 0;
  #waiters: Array<() => void> = [];

  enterShared(): Promise<void> | undefined {
    if (!this.#exclusive && this.#waitingExclusive === 0) {
      this.#shared++;
      return undefined;
    }
    return this.#wait(() => {
      if (this.#exclusive || this.#waitingExclusive > 0) return false;
      this.#shared++;
      return true;
    });
  }

  leaveShared(): void {
    this.#shared--;
    this.#wake();
  }

  async enterExclusive(): Promise<void> {
    this.#waitingExclusive++;
    try {
      await this.#wait(() => {
        if (this.#exclusive || this.#shared > 0) return false;
        this.#exclusive = true;
        return true;
      });
    } finally {
      this.#waitingExclusive--;
    }
  }

  leaveExclusive(): void {
    this.#exclusive = false;
    this.#wake();
  }

  #wait(tryEnter: () => boolean): Promise<void> {
    if (tryEnter()) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const attempt = (): void => {
        if (tryEnter()) resolve();
        else this.#waiters.push(attempt);
      };
      this.#waiters.push(attempt);
    });
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const attempt of waiters) attempt();
  }
}
