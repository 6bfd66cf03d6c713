-- Privileges: PUBLIC gets nothing but the side-effect-free _check_topic();
-- the GRANTs in docs/sql-api.md give each role exactly its functions.
BEGIN;
SELECT plan(43);

CREATE ROLE pgtap_outbox_app;
CREATE ROLE pgtap_outbox_admin;

-- PUBLIC
SELECT schema_privs_are('outbox', 'public', '{}'::name[], 'PUBLIC has no USAGE on schema outbox');
SELECT table_privs_are('outbox', 'messages', 'public', '{}'::name[], 'PUBLIC has no privilege on outbox.messages');
SELECT table_privs_are('outbox', 'dead_letters', 'public', '{}'::name[], 'PUBLIC has no privilege on outbox.dead_letters');
SELECT table_privs_are('outbox', 'relay_status', 'public', '{}'::name[], 'PUBLIC has no privilege on outbox.relay_status');
SELECT function_privs_are('outbox', 'enqueue', ARRAY['text', 'text', 'jsonb', 'jsonb'], 'public', '{}'::name[], 'PUBLIC cannot enqueue');
SELECT function_privs_are('outbox', 'emit', ARRAY['text', 'text', 'jsonb', 'jsonb'], 'public', '{}'::name[], 'PUBLIC cannot emit');
SELECT function_privs_are('outbox', 'confirm', ARRAY['bigint', 'text', 'text'], 'public', '{}'::name[], 'PUBLIC cannot confirm');
SELECT function_privs_are('outbox', 'redeliver', ARRAY['interval', 'integer'], 'public', '{}'::name[], 'PUBLIC cannot redeliver');
SELECT function_privs_are('outbox', 'purge', ARRAY['interval'], 'public', '{}'::name[], 'PUBLIC cannot purge');
SELECT function_privs_are('outbox', 'redrive', ARRAY['bigint'], 'public', '{}'::name[], 'PUBLIC cannot redrive');
SELECT function_privs_are('outbox', 'capture', ARRAY['regclass', 'text', 'text[]', 'text[]'], 'public', '{}'::name[], 'PUBLIC cannot capture');
SELECT function_privs_are('outbox', 'uncapture', ARRAY['regclass'], 'public', '{}'::name[], 'PUBLIC cannot uncapture');
SELECT function_privs_are('outbox', 'capture_trigger', '{}'::name[], 'public', '{}'::name[], 'PUBLIC cannot attach capture_trigger');
SELECT function_privs_are('outbox', '_emit_stored', ARRAY['bigint', 'integer', 'text', 'text', 'jsonb', 'jsonb'], 'public', '{}'::name[], 'PUBLIC cannot call _emit_stored');
SELECT function_privs_are('outbox', '_relay_status', '{}'::name[], 'public', '{}'::name[], 'PUBLIC cannot call _relay_status');
SELECT function_privs_are('outbox', '_check_topic', ARRAY['text'], 'public', ARRAY['EXECUTE'], 'PUBLIC may call the side-effect-free _check_topic');
SELECT function_privs_are('outbox', 'messages_check', '{}'::name[], 'public', '{}'::name[], 'PUBLIC cannot attach messages_check');

-- pg_monitor reads relay_status, nothing else.
SELECT schema_privs_are('outbox', 'pg_monitor', ARRAY['USAGE'], 'pg_monitor has USAGE on schema outbox');
SELECT table_privs_are('outbox', 'relay_status', 'pg_monitor', ARRAY['SELECT'], 'pg_monitor reads relay_status');
-- The delivery watermark: written by the relay only, read by pg_monitor.
SELECT table_privs_are('outbox', 'relay_watermark', 'public', '{}'::name[], 'PUBLIC has no privilege on outbox.relay_watermark');
SELECT table_privs_are('outbox', 'relay_watermark', 'pg_monitor', ARRAY['SELECT'], 'pg_monitor only reads outbox.relay_watermark');
SELECT is((SELECT count(*)::int FROM pg_extension e, unnest(e.extconfig) c
            WHERE e.extname = 'outbox' AND c = 'outbox.relay_watermark'::regclass), 0,
          'outbox.relay_watermark is not dumped (its transaction ids mean nothing elsewhere)');
SELECT throws_ok($$INSERT INTO outbox.relay_watermark (one_row, system_identifier, slot_name) VALUES (false, 1, 's')$$,
                 '23514', NULL, 'outbox.relay_watermark holds one row at most');
SELECT table_privs_are('outbox', 'messages', 'pg_monitor', '{}'::name[], 'pg_monitor does not read messages');

-- An application role before and after its GRANTs.
SET LOCAL ROLE pgtap_outbox_app;
SELECT throws_ok($$SELECT outbox.enqueue('t', NULL, '{}')$$, '42501', NULL, 'app without GRANTs: enqueue denied');
SELECT throws_ok($$SELECT outbox.emit('t', NULL, '{}')$$, '42501', NULL, 'app without GRANTs: emit denied');
SELECT throws_ok($$SELECT outbox.confirm(1)$$, '42501', NULL, 'app without GRANTs: confirm denied');
RESET ROLE;
GRANT USAGE ON SCHEMA outbox TO pgtap_outbox_app;
GRANT EXECUTE ON FUNCTION outbox.enqueue(text, text, jsonb, jsonb),
                          outbox.emit(text, text, jsonb, jsonb),
                          outbox.confirm(bigint, text, text)
   TO pgtap_outbox_app;
SELECT function_privs_are('outbox', 'enqueue', ARRAY['text', 'text', 'jsonb', 'jsonb'], 'pgtap_outbox_app', ARRAY['EXECUTE'], 'app may enqueue');
SELECT function_privs_are('outbox', 'emit', ARRAY['text', 'text', 'jsonb', 'jsonb'], 'pgtap_outbox_app', ARRAY['EXECUTE'], 'app may emit');
SELECT function_privs_are('outbox', 'confirm', ARRAY['bigint', 'text', 'text'], 'pgtap_outbox_app', ARRAY['EXECUTE'], 'app may confirm');
SELECT function_privs_are('outbox', 'redeliver', ARRAY['interval', 'integer'], 'pgtap_outbox_app', '{}'::name[], 'app may not redeliver');
SELECT table_privs_are('outbox', 'messages', 'pgtap_outbox_app', '{}'::name[], 'app has no table privileges on messages');
SET LOCAL ROLE pgtap_outbox_app;
SELECT lives_ok($$SELECT outbox.enqueue('t', NULL, '{}')$$, 'app with GRANTs: enqueue works');
SELECT lives_ok($$SELECT outbox.emit('t', NULL, '{}')$$, 'app with GRANTs: emit works');
SELECT lives_ok($$SELECT outbox.confirm(1)$$, 'app with GRANTs: confirm works');
SELECT throws_ok($$SELECT count(*) FROM outbox.messages$$, '42501', NULL, 'app cannot read messages directly');
SELECT throws_ok($$SELECT outbox._emit_stored(1, 1, 't', NULL, NULL, NULL)$$, '42501', NULL, 'app cannot call _emit_stored');
RESET ROLE;

-- A capture admin (table owner, not superuser) before and after its GRANTs.
CREATE TABLE pgtap_owned (id int PRIMARY KEY, v text);
ALTER TABLE pgtap_owned OWNER TO pgtap_outbox_admin;
SET LOCAL ROLE pgtap_outbox_admin;
SELECT throws_ok($$SELECT outbox.capture('pgtap_owned', 'owned')$$, '42501', NULL, 'admin without GRANTs: capture denied');
RESET ROLE;
GRANT USAGE ON SCHEMA outbox TO pgtap_outbox_admin;
GRANT EXECUTE ON FUNCTION outbox.capture(regclass, text, text[], text[]),
                          outbox.uncapture(regclass),
                          outbox.capture_trigger()
   TO pgtap_outbox_admin;
SET LOCAL ROLE pgtap_outbox_admin;
SELECT lives_ok($$SELECT outbox.capture('pgtap_owned', 'owned')$$, 'admin with GRANTs: capture works');
SELECT lives_ok($$INSERT INTO pgtap_owned VALUES (1, 'x')$$, 'the owner writes the captured table without outbox privileges');
SELECT throws_ok($$SELECT outbox.capture('outbox.messages', 'x')$$, '22023', NULL, 'admin cannot capture outbox.messages');
SELECT lives_ok($$SELECT outbox.uncapture('pgtap_owned')$$, 'admin with GRANTs: uncapture works');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE topic = 'owned'), 1, 'the captured row became one event');

SELECT * FROM finish();
ROLLBACK;
