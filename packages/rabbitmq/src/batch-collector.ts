/**
 * Groups deliveries that arrive together into batches, without waiting for more: what
 * arrived in the same turn of the event loop (amqplib hands over every message of a socket
 * read at once) goes into one batch, up to `maxSize`; a batch that fills up goes at once.
 * A quiet consumer thus pays no latency for batching, a busy one commits many messages at
 * a time. Batches run concurrently (each is its own transaction).
 */
export class BatchCollector<M, O> {
  readonly #maxSize: number;
  readonly #run: (items: readonly M[]) => Promise<readonly O[]>;
  #pending: Array<{ item: M; resolve: (outcome: O) => void; reject: (error: unknown) => void }> = [];
  #scheduled = false;

  constructor(maxSize: number, run: (items: readonly M[]) => Promise<readonly O[]>) {
    this.#maxSize = maxSize;
    this.#run = run;
  }

  /** Resolves with the item's own outcome once its batch ran. */
  submit(item: M): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.#pending.push({ item, resolve, reject });
      if (this.#pending.length >= this.#maxSize) this.#flush();
      else this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#flush();
    });
  }

  #flush(): void {
    const batch = this.#pending.splice(0, this.#maxSize);
    if (this.#pending.length > 0) this.#schedule();
    if (batch.length === 0) return;
    this.#run(batch.map((entry) => entry.item)).then(
      (outcomes) => {
        batch.forEach((entry, index) => {
          const outcome = outcomes[index];
          if (outcome === undefined) entry.reject(new Error('inboxkit: a batch returned fewer outcomes than messages'));
          else entry.resolve(outcome);
        });
      },
      (error: unknown) => {
        for (const entry of batch) entry.reject(error);
      },
    );
  }
}
