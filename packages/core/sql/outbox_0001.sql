-- inboxkit outbox 0001: the outbox table.
CREATE SCHEMA IF NOT EXISTS "public";

-- One row per message to publish, written in the transaction that decided to send it and
-- deleted by a relay once the broker confirmed it.
CREATE TABLE IF NOT EXISTS "public"."outbox" (
  sequence         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  message_id       text        NOT NULL,
  destination      text        NOT NULL,           -- the Kafka topic, or the RabbitMQ exchange
  routing_key      text,                           -- RabbitMQ only
  key              text,                           -- the ordering key (and the Kafka record key)
  headers          jsonb       NOT NULL DEFAULT '{}',
  payload          bytea       NOT NULL,
  created_at       timestamptz NOT NULL DEFAULT now(),
  attempts         integer     NOT NULL DEFAULT 0, -- publishes the broker refused
  next_attempt_at  timestamptz NOT NULL DEFAULT now(),
  last_error       text,
  status           text        NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'failed'))
);
CREATE INDEX IF NOT EXISTS "outbox_pending_idx" ON "public"."outbox" (sequence) WHERE status = 'pending';
-- Not partial: the planner then uses it for the claim's per-key lookups, which compare
-- with a parameter (a partial index's predicate is not proven there).
CREATE INDEX IF NOT EXISTS "outbox_key_idx" ON "public"."outbox" (key, sequence);
CREATE INDEX IF NOT EXISTS "outbox_keyless_idx" ON "public"."outbox" (sequence) WHERE key IS NULL AND status = 'pending';
-- Failed rows only (`outbox.failed()`, `retryFailed()`, `inboxkit outbox list | retry`): a deep
-- backlog of pending rows is never read to find them.
CREATE INDEX IF NOT EXISTS "outbox_failed_idx" ON "public"."outbox" (sequence) WHERE status = 'failed';
