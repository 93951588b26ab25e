/** An event source as the Kafka control and the RabbitMQ subscription both are: `on(name, listener)`. */
export interface EventSource<Events> {
  on<E extends keyof Events>(event: E, listener: (payload: Events[E]) => void): unknown;
}

/** Records every payload of the named events, from now on, in one array per name. */
export function collectEvents<Events, K extends keyof Events>(
  source: EventSource<Events>,
  ...names: K[]
): { [N in K]: Events[N][] } {
  const collected = {} as { [N in K]: Events[N][] };
  for (const name of names) {
    const payloads: Events[typeof name][] = [];
    collected[name] = payloads;
    source.on(name, (payload) => payloads.push(payload));
  }
  return collected;
}
