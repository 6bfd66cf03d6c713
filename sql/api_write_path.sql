-- The write path: enqueue() in C (SECURITY DEFINER, no SET clause) and the
-- guard of the event columns of outbox.messages.
\set VERBOSITY terse
CREATE EXTENSION outbox;

-- enqueue() is C, runs as its owner and pins no setting.
SELECT p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'c') AS is_c,
       p.prosecdef AS security_definer, p.proconfig AS settings
  FROM pg_proc p WHERE p.oid = 'outbox.enqueue(text,text,jsonb,jsonb)'::regprocedure;

-- It resolves nothing under the caller's search_path: a hostile schema
-- with a table "messages", an int8 "=" and a jsonb cast changes nothing.
CREATE ROLE regress_wp_app;
CREATE SCHEMA regress_wp_evil AUTHORIZATION regress_wp_app;
GRANT USAGE ON SCHEMA outbox TO regress_wp_app;
GRANT EXECUTE ON FUNCTION outbox.enqueue(text, text, jsonb, jsonb) TO regress_wp_app;
SET ROLE regress_wp_app;
CREATE TABLE regress_wp_evil.messages (topic text, key text, payload jsonb,
                                       headers jsonb, id bigint);
CREATE FUNCTION regress_wp_evil.whoami(text) RETURNS text LANGUAGE sql
    AS $$ SELECT current_user::text $$;
SET search_path = regress_wp_evil, pg_temp;
SELECT outbox.enqueue('wp', 'evil-path', '{"n": 1}') > 0 AS enqueued;
-- ... into outbox.messages, not the look-alike.
SELECT count(*) AS lookalike_rows FROM regress_wp_evil.messages;
-- The caller still has no privilege on the table itself.
SELECT count(*) FROM outbox.messages;
RESET search_path;
RESET ROLE;
SELECT topic, key, payload FROM outbox.messages WHERE key = 'evil-path';

-- Every rule is still checked (by the messages_check trigger).
SELECT outbox.enqueue('bad topic', NULL, '{}');
SELECT outbox.enqueue('t', NULL, '{}', '{"outbox-id": "1"}');
SELECT outbox.enqueue(NULL, NULL, '{}');
SET outbox.max_message_size = 10;
SELECT outbox.enqueue('t', 'a key of 20 bytes..', NULL);
RESET outbox.max_message_size;

-- The kept plan follows a change of the table (the plan cache revalidates).
ALTER TABLE outbox.messages ADD COLUMN regress_extra text DEFAULT 'x';
SELECT outbox.enqueue('wp', 'after-alter', '{}') > 0 AS enqueued;
ALTER TABLE outbox.messages DROP COLUMN regress_extra;
SELECT outbox.enqueue('wp', 'after-drop', '{}') > 0 AS enqueued;
SELECT key FROM outbox.messages WHERE topic = 'wp' ORDER BY id;

-- Guard of the event columns: an ALTER TABLE that would make rows
-- undecodable is refused (the decoder would skip every event).  payload,
-- headers, key and id are also pinned by PostgreSQL itself (the validation
-- trigger's column list, the identity); attempts and renames only by the
-- guard.
ALTER TABLE outbox.messages ALTER COLUMN payload TYPE json;
ALTER TABLE outbox.messages ALTER COLUMN headers TYPE text;
ALTER TABLE outbox.messages ALTER COLUMN id TYPE numeric;
ALTER TABLE outbox.messages ALTER COLUMN attempts TYPE bigint;
ALTER TABLE outbox.messages DROP COLUMN key;
ALTER TABLE outbox.messages RENAME COLUMN payload TO body;
ALTER TABLE outbox.messages RENAME TO messages_old;
CREATE SCHEMA regress_wp_other;
ALTER TABLE outbox.messages SET SCHEMA regress_wp_other;
-- Also with session_replication_role = replica.
SET session_replication_role = replica;
ALTER TABLE outbox.messages ALTER COLUMN attempts TYPE bigint;
RESET session_replication_role;
-- Nothing changed.
SELECT attname, format_type(atttypid, NULL) FROM pg_attribute
 WHERE attrelid = 'outbox.messages'::regclass
   AND attname IN ('id', 'topic', 'key', 'payload', 'headers', 'attempts')
 ORDER BY attnum;
-- Other changes are allowed, on this table and on any other.
ALTER TABLE outbox.messages ADD COLUMN regress_note text;
ALTER TABLE outbox.messages DROP COLUMN regress_note;
ALTER TABLE regress_wp_evil.messages ALTER COLUMN payload TYPE json;
ALTER TABLE regress_wp_evil.messages RENAME TO messages2;

-- purge() has a partial index that new rows (no verdict yet) never enter.
SELECT indexdef FROM pg_indexes
 WHERE schemaname = 'outbox' AND tablename = 'messages' ORDER BY 1;
SELECT count(*) AS rows, pg_relation_size('outbox.messages_confirmed_idx') <= 8192 AS index_empty
  FROM outbox.messages;

DROP SCHEMA regress_wp_evil CASCADE;
DROP SCHEMA regress_wp_other;
DROP EXTENSION outbox;
DROP ROLE regress_wp_app;
