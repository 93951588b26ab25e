-- inboxkit kafka 0001: the next offset of each (group, topic, partition), for dedup: 'offsets'.
CREATE SCHEMA IF NOT EXISTS "public";

-- One row per partition a consumer group processed, written in the same transaction as the
-- handler's business writes: the records before next_offset are applied. No purge needed.
CREATE TABLE IF NOT EXISTS "public"."kafka_offsets" (
  group_id     text        NOT NULL,
  topic        text        NOT NULL,
  partition    integer     NOT NULL,
  next_offset  bigint      NOT NULL,
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (group_id, topic, partition)
);
