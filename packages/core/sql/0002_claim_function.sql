-- inboxkit 0002: the claim as one function. It claims a message's key and, when the key
-- was there already, returns the stored row, in one round trip (packages/core/src/sql/claim-message.ts).
CREATE OR REPLACE FUNCTION "public"."processed_messages_claim"(
  p_consumer text, p_message_id text, p_payload_hash bytea, p_lock_timeout text, p_statement_timeout text
)
RETURNS TABLE (claimed boolean, status text, payload_hash bytea, result jsonb, processed_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $inboxkit$
#variable_conflict use_column
BEGIN
  -- Local to the calling transaction: they bound the insert's wait and the handler's statements.
  PERFORM pg_catalog.set_config('lock_timeout', p_lock_timeout, true);
  IF p_statement_timeout IS NOT NULL THEN
    PERFORM pg_catalog.set_config('statement_timeout', p_statement_timeout, true);
  END IF;
  INSERT INTO "public"."processed_messages" (consumer, message_id, payload_hash)
  VALUES (p_consumer, p_message_id, p_payload_hash)
  ON CONFLICT (consumer, message_id) DO NOTHING;
  IF FOUND THEN
    RETURN QUERY SELECT true, NULL::text, NULL::bytea, NULL::jsonb, NULL::timestamptz;
  ELSE
    -- A new statement: under READ COMMITTED it sees a row committed by the transaction
    -- the insert waited for.
    RETURN QUERY SELECT false, k.status, k.payload_hash, k.result, k.processed_at
      FROM "public"."processed_messages" AS k
      WHERE k.consumer = p_consumer AND k.message_id = p_message_id;
  END IF;
END
$inboxkit$;
