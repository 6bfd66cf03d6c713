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

-- Every rule is still checked (by the messages_check trigger's code).
SELECT outbox.enqueue('bad topic', NULL, '{}');
SELECT outbox.enqueue('t', NULL, '{}', '{"outbox-id": "1"}');
SELECT outbox.enqueue(NULL, NULL, '{}');
SET outbox.max_message_size = 10;
SELECT outbox.enqueue('t', 'a key of 20 bytes..', NULL);
RESET outbox.max_message_size;

-- enqueue() inserts the row itself (src/enqueue.c), with every default an
-- INSERT would give it: the same row as a plain INSERT in the same
-- transaction.
BEGIN;
SELECT outbox.enqueue('wp', 'direct', '{"n": 2}', '{"h": "v"}') > 0 AS enqueued;
INSERT INTO outbox.messages (topic, key, payload, headers)
     VALUES ('wp', 'statement', '{"n": 2}', '{"h": "v"}');
SELECT key, id > 0 AS has_id, created_at = now() AS created_now,
       published_at = now() AS published_now, attempts,
       published_xid = pg_current_xact_id() AS this_xact,
       confirmed_at, confirm_status, confirm_detail, expired_at
  FROM outbox.messages WHERE key IN ('direct', 'statement') ORDER BY id;
COMMIT;
SELECT a.id + 1 = b.id AS consecutive_ids
  FROM outbox.messages a, outbox.messages b
 WHERE a.key = 'direct' AND b.key = 'statement';

-- It follows changes of the table: a new column's default, a new CHECK
-- constraint, a new partial index (amcheck: every row the index should
-- hold is in it), a trigger of the owner's (then the INSERT runs as a
-- statement, which fires it), and back.
ALTER TABLE outbox.messages ADD COLUMN regress_extra text DEFAULT 'x';
SELECT outbox.enqueue('wp', 'after-alter', '{}') > 0 AS enqueued;
SELECT regress_extra FROM outbox.messages WHERE key = 'after-alter';
ALTER TABLE outbox.messages ADD CONSTRAINT regress_no_forbidden
    CHECK (key IS DISTINCT FROM 'forbidden');
SELECT outbox.enqueue('wp', 'forbidden', '{}');
ALTER TABLE outbox.messages DROP CONSTRAINT regress_no_forbidden;
-- What the call leaves locked until the transaction ends is what an
-- INSERT leaves: the table and the identity's sequence, no index.
BEGIN;
SELECT outbox.enqueue('wp', 'locks', '{}') > 0 AS enqueued;
SELECT c.relname, l.mode
  FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
 WHERE l.pid = pg_backend_pid() AND c.relnamespace = 'outbox'::regnamespace
 ORDER BY c.relname;
COMMIT;
CREATE INDEX regress_idx ON outbox.messages (key) WHERE key LIKE 'idx-%';
CREATE UNIQUE INDEX regress_uidx ON outbox.messages (key) WHERE key LIKE 'uniq-%';
SELECT outbox.enqueue('wp', 'idx-' || i, '{}') > 0 AS enqueued
  FROM generate_series(1, 3) i;
SELECT outbox.enqueue('wp', 'uniq-1', '{}') > 0 AS enqueued;
SELECT outbox.enqueue('wp', 'uniq-1', '{}');
-- An expression index is left to the statement, which fills it.
CREATE INDEX regress_eidx ON outbox.messages (lower(key));
SELECT outbox.enqueue('wp', 'EXPR-' || i, '{}') > 0 AS enqueued
  FROM generate_series(1, 2) i;
SELECT count(*) FROM outbox.messages WHERE lower(key) LIKE 'expr-%';
CREATE EXTENSION amcheck;
SELECT c.relname, bt_index_check(c.oid, true)::text = '' AS index_complete
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE i.indrelid = 'outbox.messages'::regclass ORDER BY c.relname;
DROP EXTENSION amcheck;
DROP INDEX outbox.regress_idx, outbox.regress_uidx, outbox.regress_eidx;
-- A default that drops an index of the table while the row is being made:
-- the row's entries go to the indexes left (the cached list named the
-- dropped one), and the primary key holds every row.
CREATE INDEX regress_gone_idx ON outbox.messages (key) WHERE key LIKE 'gone-%';
CREATE FUNCTION regress_wp_drop_index() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('outbox.regress_gone_idx') IS NOT NULL THEN
        DROP INDEX outbox.regress_gone_idx;
        RETURN 'dropped';
    END IF;
    RETURN 'none';
END $$;
ALTER TABLE outbox.messages ADD COLUMN regress_drop text;
ALTER TABLE outbox.messages ALTER COLUMN regress_drop
    SET DEFAULT regress_wp_drop_index();
SELECT outbox.enqueue('wp', 'gone-' || i, '{}') > 0 AS enqueued
  FROM generate_series(1, 2) i;
SELECT key, regress_drop FROM outbox.messages WHERE key LIKE 'gone-%'
 ORDER BY id;
CREATE EXTENSION amcheck;
SELECT bt_index_check('outbox.messages_pkey', true)::text = '' AS index_complete;
DROP EXTENSION amcheck;
ALTER TABLE outbox.messages DROP COLUMN regress_drop;
DROP FUNCTION regress_wp_drop_index();
-- A default calling a function of the owner's follows the function's
-- replacement (the planner inlined its body when the default was planned).
CREATE FUNCTION regress_wp_default() RETURNS text LANGUAGE sql
    AS $$ SELECT 'first' $$;
ALTER TABLE outbox.messages ADD COLUMN regress_fn text DEFAULT regress_wp_default();
SELECT outbox.enqueue('wp', 'fn-1', '{}') > 0 AS enqueued;
CREATE OR REPLACE FUNCTION regress_wp_default() RETURNS text LANGUAGE sql
    AS $$ SELECT 'second' $$;
SELECT outbox.enqueue('wp', 'fn-2', '{}') > 0 AS enqueued;
SELECT key, regress_fn FROM outbox.messages WHERE key LIKE 'fn-%' ORDER BY id;
ALTER TABLE outbox.messages DROP COLUMN regress_fn;
DROP FUNCTION regress_wp_default();
-- A check on the whole row, twice (the statement path: its state is not
-- kept between calls).
ALTER TABLE outbox.messages ADD CONSTRAINT regress_row_size
    CHECK (pg_column_size(messages.*) < 100000);
SELECT outbox.enqueue('wp', 'row-' || i, '{}') > 0 AS enqueued
  FROM generate_series(1, 2) i;
ALTER TABLE outbox.messages DROP CONSTRAINT regress_row_size;
-- A domain column without a default: its NOT NULL applies to the null.
CREATE DOMAIN regress_wp_nn AS text NOT NULL;
ALTER TABLE outbox.messages ADD COLUMN regress_dom regress_wp_nn DEFAULT 'old';
ALTER TABLE outbox.messages ALTER COLUMN regress_dom DROP DEFAULT;
SELECT outbox.enqueue('wp', 'domain', '{}');
ALTER TABLE outbox.messages DROP COLUMN regress_dom;
DROP DOMAIN regress_wp_nn;
-- A read-only transaction refuses the INSERT, as a statement would.
BEGIN READ ONLY;
SELECT outbox.enqueue('wp', 'read-only', '{}');
ROLLBACK;
CREATE TABLE regress_wp_audit (key text, by_trigger boolean);
CREATE FUNCTION regress_wp_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO regress_wp_audit VALUES (NEW.key, true);
    RETURN NEW;
END $$;
CREATE TRIGGER regress_wp_audit AFTER INSERT ON outbox.messages
    FOR EACH ROW EXECUTE FUNCTION regress_wp_audit();
SELECT outbox.enqueue('wp', 'with-trigger', '{}') > 0 AS enqueued;
SELECT outbox.enqueue('bad topic', 'with-trigger', '{}');
DROP TRIGGER regress_wp_audit ON outbox.messages;
SELECT outbox.enqueue('wp', 'without-trigger', '{}') > 0 AS enqueued;
SELECT * FROM regress_wp_audit;
DROP TABLE regress_wp_audit;
DROP FUNCTION regress_wp_audit();
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

-- A new extension in the same session: enqueue() writes to the new table.
DROP EXTENSION outbox;
CREATE EXTENSION outbox;
SELECT outbox.enqueue('wp', 'recreated', '{}') > 0 AS enqueued;
SELECT key FROM outbox.messages;

DROP SCHEMA regress_wp_evil CASCADE;
DROP SCHEMA regress_wp_other;
DROP EXTENSION outbox;
DROP ROLE regress_wp_app;
