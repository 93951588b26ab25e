-- inboxkit 0001: the inbox table and the crash-loop attempt counts.
CREATE SCHEMA IF NOT EXISTS "public";

-- One row per (consumer, message id) that was processed or dead-lettered, written in the
-- same transaction as the handler's business writes.
CREATE TABLE IF NOT EXISTS "public"."processed_messages" (
  consumer      text        NOT NULL,
  message_id    text        NOT NULL,
  processed_at  timestamptz NOT NULL DEFAULT now(),
  payload_hash  bytea,
  result        jsonb,
  status        text        NOT NULL DEFAULT 'processed'
                CHECK (status IN ('processed', 'dead_lettered')),
  PRIMARY KEY (consumer, message_id)
);
CREATE INDEX IF NOT EXISTS "processed_messages_processed_at_idx" ON "public"."processed_messages" (processed_at);

-- Attempts of deliveries that may have crashed the process, committed before their
-- handler runs (never on the hot path).
CREATE TABLE IF NOT EXISTS "public"."processed_messages_attempts" (
  consumer          text        NOT NULL,
  message_id        text        NOT NULL,
  attempts          integer     NOT NULL,
  first_attempt_at  timestamptz NOT NULL DEFAULT now(),
  last_attempt_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer, message_id)
);
CREATE INDEX IF NOT EXISTS "processed_messages_attempts_last_idx" ON "public"."processed_messages_attempts" (last_attempt_at);
