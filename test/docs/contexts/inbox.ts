// docs/inbox.md: an inbox over the charges table of the page's first program, and a batch of its messages.
interface DB {
  charges: { id: string; user_id: string; amount_cents: number };
}
interface Charge {
  userId: string;
  amountCents: number;
}
declare const inbox: import('@inboxkit/core').Inbox<DB>;
declare const messages: { id: string; payload: Buffer; charge: Charge }[];

export {};
