-- Schema, tables, columns and function signatures of the outbox extension.
BEGIN;
SELECT plan(98);

SELECT has_extension('outbox', 'extension outbox is installed');
SELECT has_schema('outbox');

-- outbox.messages
SELECT has_table('outbox', 'messages', 'table outbox.messages exists');
SELECT columns_are('outbox', 'messages', ARRAY[
    'id', 'topic', 'key', 'payload', 'headers', 'created_at', 'published_at',
    'attempts', 'confirmed_at', 'confirm_status', 'confirm_detail', 'published_xid',
    'expired_at']);
SELECT col_type_is('outbox', 'messages', 'id', 'bigint', 'messages.id is bigint');
SELECT col_type_is('outbox', 'messages', 'published_xid', 'xid8', 'messages.published_xid is xid8');
SELECT col_default_is('outbox', 'messages', 'published_xid', 'pg_current_xact_id()', 'messages.published_xid is the inserting transaction by default');
SELECT col_type_is('outbox', 'messages', 'topic', 'text', 'messages.topic is text');
SELECT col_type_is('outbox', 'messages', 'key', 'text', 'messages.key is text');
SELECT col_type_is('outbox', 'messages', 'payload', 'jsonb', 'messages.payload is jsonb');
SELECT col_type_is('outbox', 'messages', 'headers', 'jsonb', 'messages.headers is jsonb');
SELECT col_type_is('outbox', 'messages', 'created_at', 'timestamp with time zone', 'messages.created_at is timestamp with time zone');
SELECT col_type_is('outbox', 'messages', 'published_at', 'timestamp with time zone', 'messages.published_at is timestamp with time zone');
SELECT col_type_is('outbox', 'messages', 'attempts', 'integer', 'messages.attempts is integer');
SELECT col_type_is('outbox', 'messages', 'confirmed_at', 'timestamp with time zone', 'messages.confirmed_at is timestamp with time zone');
SELECT col_type_is('outbox', 'messages', 'confirm_status', 'text', 'messages.confirm_status is text');
SELECT col_type_is('outbox', 'messages', 'confirm_detail', 'text', 'messages.confirm_detail is text');
SELECT col_is_pk('outbox', 'messages', 'id', 'messages.id is the primary key');
SELECT col_not_null('outbox', 'messages', 'topic', 'messages.topic is NOT NULL');
SELECT col_is_null('outbox', 'messages', 'key', 'messages.key allows null');
SELECT col_is_null('outbox', 'messages', 'payload', 'messages.payload allows null');
SELECT col_is_null('outbox', 'messages', 'headers', 'messages.headers allows null');
SELECT col_not_null('outbox', 'messages', 'created_at', 'messages.created_at is NOT NULL');
SELECT col_not_null('outbox', 'messages', 'published_at', 'messages.published_at is NOT NULL');
SELECT col_not_null('outbox', 'messages', 'attempts', 'messages.attempts is NOT NULL');
SELECT col_is_null('outbox', 'messages', 'confirmed_at', 'messages.confirmed_at allows null');
SELECT col_is_null('outbox', 'messages', 'confirm_status', 'messages.confirm_status allows null');
SELECT col_has_default('outbox', 'messages', 'created_at', 'messages.created_at has a default');
SELECT col_has_default('outbox', 'messages', 'published_at', 'messages.published_at has a default');
SELECT col_default_is('outbox', 'messages', 'attempts', '1'::text, 'messages.attempts defaults to 1');
SELECT is((SELECT attidentity::text FROM pg_attribute
            WHERE attrelid = 'outbox.messages'::regclass AND attname = 'id'),
          'a', 'messages.id is GENERATED ALWAYS AS IDENTITY');
SELECT col_has_check('outbox', 'messages', 'confirm_status', 'messages.confirm_status has a check constraint');
SELECT col_has_check('outbox', 'messages', 'attempts', 'messages.attempts has a check constraint');
SELECT has_trigger('outbox', 'messages', 'messages_check', 'messages has the validation trigger');
SELECT trigger_is('outbox', 'messages', 'messages_check', 'outbox', 'messages_check', 'the validation trigger calls outbox.messages_check()');

-- outbox.dead_letters
SELECT has_table('outbox', 'dead_letters', 'table outbox.dead_letters exists');

-- outbox._message_key: one 32-byte key, a user catalog table, private.
SELECT has_table('outbox', '_message_key', 'table outbox._message_key exists');
SELECT is((SELECT count(*) FROM outbox._message_key), 1::bigint, 'one message key');
SELECT ok((SELECT 'user_catalog_table=true' = ANY (reloptions) FROM pg_class
            WHERE oid = 'outbox._message_key'::regclass), 'the key is a user catalog table');
SELECT table_privs_are('outbox', '_message_key', 'public', '{}'::text[], 'PUBLIC cannot read the key');
SELECT ok((SELECT relrowsecurity AND NOT relforcerowsecurity FROM pg_class
            WHERE oid = 'outbox._message_key'::regclass),
          'row-level security hides the key from all but its owner (0.5.0)');
SELECT is((SELECT count(*) FROM pg_policy WHERE polrelid = 'outbox._message_key'::regclass),
          0::bigint, 'no policy on the key table');
SELECT is((SELECT xid_bits FROM outbox._message_key), 64::smallint,
          'the key signs the full 64-bit transaction id');
SELECT columns_are('outbox', 'dead_letters', ARRAY[
    'id', 'message_id', 'topic', 'key', 'payload', 'headers', 'lsn', 'xid',
    'commit_time', 'error_code', 'error', 'failed_at', 'redriven_at', 'redrives',
    'failures', 'redriven_xid']);
SELECT col_is_pk('outbox', 'dead_letters', 'id', 'dead_letters.id is the primary key');
SELECT col_type_is('outbox', 'dead_letters', 'message_id', 'bigint', 'dead_letters.message_id is bigint');
SELECT col_type_is('outbox', 'dead_letters', 'topic', 'text', 'dead_letters.topic is text');
SELECT col_type_is('outbox', 'dead_letters', 'payload', 'jsonb', 'dead_letters.payload is jsonb');
SELECT col_type_is('outbox', 'dead_letters', 'headers', 'jsonb', 'dead_letters.headers is jsonb');
SELECT col_type_is('outbox', 'dead_letters', 'lsn', 'pg_lsn', 'dead_letters.lsn is pg_lsn');
SELECT col_type_is('outbox', 'dead_letters', 'error', 'text', 'dead_letters.error is text');
SELECT col_type_is('outbox', 'dead_letters', 'failed_at', 'timestamp with time zone', 'dead_letters.failed_at is timestamp with time zone');
SELECT col_not_null('outbox', 'dead_letters', 'topic', 'dead_letters.topic is NOT NULL');
SELECT col_not_null('outbox', 'dead_letters', 'error_code', 'dead_letters.error_code is NOT NULL');
SELECT col_not_null('outbox', 'dead_letters', 'error', 'dead_letters.error is NOT NULL');
SELECT col_not_null('outbox', 'dead_letters', 'failed_at', 'dead_letters.failed_at is NOT NULL');
SELECT col_is_null('outbox', 'dead_letters', 'message_id', 'dead_letters.message_id allows null');

-- outbox.relay_status
SELECT has_view('outbox', 'relay_status', 'view outbox.relay_status exists');
SELECT has_column('outbox', 'relay_status', 'state', 'relay_status has column state');
SELECT has_column('outbox', 'relay_status', 'slot_name', 'relay_status has column slot_name');
SELECT has_column('outbox', 'relay_status', 'librdkafka_version', 'relay_status has column librdkafka_version (0.5.0)');
SELECT has_column('outbox', 'relay_status', 'unused_slot', 'relay_status has column unused_slot (0.5.0)');
SELECT has_column('outbox', 'relay_status', 'confirmed_lsn', 'relay_status has column confirmed_lsn');
SELECT has_column('outbox', 'relay_status', 'wal_retained_bytes', 'relay_status has column wal_retained_bytes');
SELECT has_column('outbox', 'relay_status', 'delivered', 'relay_status has column delivered');
SELECT has_column('outbox', 'relay_status', 'last_delivered_commit_time', 'relay_status has column last_delivered_commit_time');
SELECT has_column('outbox', 'relay_status', 'lag_seconds', 'relay_status has column lag_seconds');
SELECT has_column('outbox', 'relay_status', 'errors', 'relay_status has column errors');
SELECT has_column('outbox', 'relay_status', 'last_error', 'relay_status has column last_error');

-- Functions: signatures and return types.
SELECT has_function('outbox', 'enqueue', ARRAY['text', 'text', 'jsonb', 'jsonb']);
SELECT function_returns('outbox', 'enqueue', ARRAY['text', 'text', 'jsonb', 'jsonb'], 'bigint');
SELECT has_function('outbox', 'emit', ARRAY['text', 'text', 'jsonb', 'jsonb']);
SELECT function_returns('outbox', 'emit', ARRAY['text', 'text', 'jsonb', 'jsonb'], 'pg_lsn');
SELECT has_function('outbox', 'capture', ARRAY['regclass', 'text', 'text[]', 'text[]']);
SELECT function_returns('outbox', 'capture', ARRAY['regclass', 'text', 'text[]', 'text[]'], 'void');
SELECT has_function('outbox', 'uncapture', ARRAY['regclass']);
SELECT function_returns('outbox', 'uncapture', ARRAY['regclass'], 'void');
SELECT has_function('outbox', 'confirm', ARRAY['bigint', 'text', 'text']);
SELECT function_returns('outbox', 'confirm', ARRAY['bigint', 'text', 'text'], 'boolean');
SELECT has_function('outbox', 'redeliver', ARRAY['interval', 'integer']);
SELECT function_returns('outbox', 'redeliver', ARRAY['interval', 'integer'], 'bigint');
SELECT has_function('outbox', 'purge', ARRAY['interval']);
SELECT function_returns('outbox', 'purge', ARRAY['interval'], 'bigint');
SELECT has_function('outbox', 'redrive', ARRAY['bigint']);
SELECT function_returns('outbox', 'redrive', ARRAY['bigint'], 'boolean');
SELECT has_function('outbox', 'capture_trigger', '{}'::name[]);
SELECT function_returns('outbox', 'capture_trigger', '{}'::name[], 'trigger');
SELECT has_function('outbox', '_emit_stored',
                    ARRAY['bigint', 'integer', 'text', 'text', 'jsonb', 'jsonb']);
SELECT has_function('outbox', '_check_topic', ARRAY['text']);

-- Defaults of the optional arguments.
SELECT is(pg_get_function_arguments('outbox.enqueue(text,text,jsonb,jsonb)'::regprocedure),
          'topic text, key text, payload jsonb, headers jsonb DEFAULT NULL::jsonb',
          'enqueue: headers defaults to null');
SELECT is(pg_get_function_arguments('outbox.capture(regclass,text,text[],text[])'::regprocedure),
          'rel regclass, topic text, key_columns text[] DEFAULT NULL::text[], events text[] DEFAULT ''{insert,update,delete}''::text[]',
          'capture: key_columns and events default');
SELECT is(pg_get_function_arguments('outbox.confirm(bigint,text,text)'::regprocedure),
          'id bigint, status text DEFAULT ''confirmed''::text, detail text DEFAULT NULL::text',
          'confirm: status defaults to confirmed');
SELECT is(pg_get_function_arguments('outbox.redeliver(interval,integer)'::regprocedure),
          'older_than interval DEFAULT ''00:05:00''::interval, max_attempts integer DEFAULT 10',
          'redeliver: 5 minutes, 10 attempts');

-- Who runs as whom.
SELECT is_definer('outbox', 'enqueue', ARRAY['text', 'text', 'jsonb', 'jsonb']);
SELECT isnt_definer('outbox', 'emit', ARRAY['text', 'text', 'jsonb', 'jsonb']);
-- capture_trigger runs as the writer; it switches to the owner of
-- outbox.messages for its INSERT only (src/capture.c).
SELECT isnt_definer('outbox', 'capture_trigger', '{}'::name[]);
SELECT isnt_definer('outbox', 'capture', ARRAY['regclass', 'text', 'text[]', 'text[]']);
SELECT is_definer('outbox', 'confirm', ARRAY['bigint', 'text', 'text']);

SELECT * FROM finish();
ROLLBACK;
