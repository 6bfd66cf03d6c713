--
-- api_hostile: a tenant with no outbox grants tries to gain privileges
-- through a capture trigger, and to publish through the decoder with
-- hand-written logical messages.  Neither works.
--
\set VERBOSITY terse
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS outbox;
RESET client_min_messages;
CREATE EXTENSION outbox;
SELECT 'init' FROM pg_create_logical_replication_slot('api_hostile', 'outbox');

CREATE FUNCTION pg_temp.events(OUT event jsonb)
    RETURNS SETOF jsonb LANGUAGE sql AS $$
    SELECT data::jsonb - 'lsn' - 'xid' - 'commit_time'
      FROM pg_logical_slot_get_changes('api_hostile', NULL, NULL)
$$;

CREATE ROLE regress_hostile_tenant;
GRANT CREATE ON SCHEMA public TO regress_hostile_tenant;

-- 1. The tenant owns a table that an administrator captures.
SET ROLE regress_hostile_tenant;
CREATE TABLE public.tenant_rows (id int PRIMARY KEY, note text);
CREATE TABLE public.tenant_log (who name, super boolean);
RESET ROLE;
SELECT outbox.capture('public.tenant_rows', 'tenant.rows');

-- The tenant adds a column of its own type whose cast to json runs its own
-- function, which records who runs it and tries to make the tenant a
-- superuser.
SET ROLE regress_hostile_tenant;
CREATE TYPE public.tenant_mood AS ENUM ('sly');
CREATE FUNCTION public.tenant_mood_json(public.tenant_mood) RETURNS json
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.tenant_log
    SELECT current_user, r.rolsuper FROM pg_catalog.pg_roles r
     WHERE r.rolname = current_user;
    BEGIN
        EXECUTE 'ALTER ROLE regress_hostile_tenant SUPERUSER';
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
    RETURN '"mood"'::json;
END;
$$;
CREATE CAST (public.tenant_mood AS json)
    WITH FUNCTION public.tenant_mood_json(public.tenant_mood);
ALTER TABLE public.tenant_rows ADD COLUMN mood public.tenant_mood;
-- The writer needs no privilege on outbox.messages to fire the capture.
INSERT INTO public.tenant_rows VALUES (1, 'hello', 'sly');
RESET ROLE;

-- The cast ran as the tenant, not as the superuser who installed outbox.
SELECT who, super FROM public.tenant_log;
SELECT rolsuper AS tenant_is_superuser FROM pg_roles
 WHERE rolname = 'regress_hostile_tenant';
-- The event was written, with the cast's rendering of the column.
SELECT event->>'topic' AS topic, event->'payload'->'new' AS new_row
  FROM pg_temp.events();

-- 2. Forged logical messages.  The tenant has no grant at all, not even
-- USAGE on schema outbox, but pg_logical_emit_message() is PUBLIC.
SET ROLE regress_hostile_tenant;
SELECT has_schema_privilege('outbox', 'USAGE') AS tenant_usage;
BEGIN;
-- the JSON spelling outbox 0.1.0 accepted
SELECT pg_logical_emit_message(true, 'outbox',
    '{"topic": "payments", "key": "acct-1", "payload": {"credit": 1000000}}') IS NOT NULL AS sent;
-- the binary encoding of version 1, with a forged id and attempts
SELECT pg_logical_emit_message(true, 'outbox',
    '\x4f01'::bytea || int8send(999) || '\x01'::bytea || int4send(1) ||
    int4send(8) || 'payments'::bytea || int4send(6) || 'acct-1'::bytea ||
    int4send(-1) || int4send(-1)) IS NOT NULL AS sent;
-- version 2 with a made-up authentication code
SELECT pg_logical_emit_message(true, 'outbox',
    '\x4f02'::bytea || int8send(999) || '\x01'::bytea || int4send(1) ||
    int4send(8) || 'payments'::bytea || int4send(6) || 'acct-1'::bytea ||
    int4send(-1) || int4send(-1) || decode(repeat('ab', 32), 'hex')) IS NOT NULL AS sent;
COMMIT;
RESET ROLE;
-- Nothing is decoded; each message gets a WARNING saying why.
\set VERBOSITY default
SELECT count(*) AS forged_events FROM pg_temp.events();
\set VERBOSITY terse

-- 3. A genuine message replayed: its bytes, emitted again by hand in
-- another transaction, are refused (the code binds the transaction id),
-- while the original is delivered.
SELECT 'init' FROM pg_create_logical_replication_slot('api_hostile_raw', 'test_decoding');
SELECT outbox.emit('payments', 'acct-1', '{"credit": 5}') IS NOT NULL AS emitted;
SELECT event->>'topic' AS topic, event->'payload' AS payload FROM pg_temp.events();
SELECT substring(data FROM position('content:'::bytea IN data) + 8) AS raw
  FROM pg_logical_slot_get_binary_changes('api_hostile_raw', NULL, NULL,
                                          'include-xids', '0', 'force-binary', '1')
 WHERE position('message:'::bytea IN data) = 1 \gset
SELECT pg_drop_replication_slot('api_hostile_raw');
SELECT length(:'raw'::bytea) > 32 AS captured;
SET ROLE regress_hostile_tenant;
SELECT pg_logical_emit_message(true, 'outbox', :'raw'::bytea) IS NOT NULL AS replayed;
RESET ROLE;
\set VERBOSITY default
SELECT count(*) AS replayed_events FROM pg_temp.events();
\set VERBOSITY terse

-- 4. The key is readable by nobody but its owner, even with USAGE on the
-- schema, and pg_dump leaves it out.
GRANT USAGE ON SCHEMA outbox TO regress_hostile_tenant;
SET ROLE regress_hostile_tenant;
SELECT count(*) FROM outbox._message_key;
RESET ROLE;
REVOKE USAGE ON SCHEMA outbox FROM regress_hostile_tenant;
SELECT has_table_privilege('pg_monitor', 'outbox._message_key', 'SELECT') AS monitor_reads_key;
SELECT 'outbox._message_key'::regclass = ANY (extconfig) AS key_dumped
  FROM pg_extension WHERE extname = 'outbox';
SELECT octet_length(key) AS key_bytes FROM outbox._message_key;

-- A new installation has a new key.
SELECT key AS old_key FROM outbox._message_key \gset
SELECT pg_drop_replication_slot('api_hostile');
SELECT outbox.uncapture('public.tenant_rows');
DROP EXTENSION outbox;
CREATE EXTENSION outbox;
SELECT key <> :'old_key'::bytea AS new_key FROM outbox._message_key;

DROP TABLE public.tenant_rows, public.tenant_log;
DROP CAST (public.tenant_mood AS json);
DROP FUNCTION public.tenant_mood_json(public.tenant_mood);
DROP TYPE public.tenant_mood;
REVOKE CREATE ON SCHEMA public FROM regress_hostile_tenant;
DROP ROLE regress_hostile_tenant;
DROP EXTENSION outbox;
