-- outbox.adopt() / unadopt(): schema, privileges and errors (decoding is
-- covered by pg_regress test adopt, which can create slots).
BEGIN;
SELECT plan(24);

SELECT has_table('outbox', 'adopted', 'table outbox.adopted exists');
SELECT columns_are('outbox', 'adopted', ARRAY['relid', 'options', 'adopted_by', 'adopted_at']);
SELECT col_is_pk('outbox', 'adopted', 'relid', 'adopted.relid is the primary key');
SELECT col_type_is('outbox', 'adopted', 'relid', 'regclass', 'adopted.relid is regclass');
SELECT col_type_is('outbox', 'adopted', 'options', 'jsonb', 'adopted.options is jsonb');
SELECT ok((SELECT 'user_catalog_table=true' = ANY (reloptions) FROM pg_class
            WHERE oid = 'outbox.adopted'::regclass), 'adopted is a user catalog table');
SELECT has_function('outbox', 'adopt', ARRAY['regclass', 'jsonb']);
SELECT has_function('outbox', 'unadopt', ARRAY['regclass']);
SELECT isnt_definer('outbox', 'adopt', ARRAY['regclass', 'jsonb'], 'adopt() is not SECURITY DEFINER');
SELECT isnt_definer('outbox', 'unadopt', ARRAY['regclass'], 'unadopt() is not SECURITY DEFINER');
SELECT table_privs_are('outbox', 'adopted', 'public', '{}'::text[], 'PUBLIC has no privilege on outbox.adopted');
SELECT function_privs_are('outbox', 'adopt', ARRAY['regclass', 'jsonb'], 'public', '{}'::name[], 'PUBLIC cannot adopt');
SELECT function_privs_are('outbox', 'unadopt', ARRAY['regclass'], 'public', '{}'::name[], 'PUBLIC cannot unadopt');

CREATE TABLE pgtap_outboxevent (
    id uuid PRIMARY KEY, aggregatetype varchar(255) NOT NULL,
    aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload jsonb);
CREATE ROLE pgtap_adopt_owner;
CREATE ROLE pgtap_adopt_other;
ALTER TABLE pgtap_outboxevent OWNER TO pgtap_adopt_owner;
GRANT USAGE ON SCHEMA outbox TO pgtap_adopt_owner, pgtap_adopt_other;
GRANT EXECUTE ON FUNCTION outbox.adopt(regclass, jsonb), outbox.unadopt(regclass)
   TO pgtap_adopt_owner, pgtap_adopt_other;

SET LOCAL ROLE pgtap_adopt_other;
SELECT throws_ok($$SELECT outbox.adopt('pgtap_outboxevent')$$, '42501', NULL, 'a non-owner cannot adopt');
SELECT throws_ok($$INSERT INTO outbox.adopted (relid, options, adopted_by) VALUES ('pgtap_outboxevent', '{}', 'pgtap_adopt_other')$$,
                 '42501', NULL, 'a non-owner cannot write outbox.adopted');
RESET ROLE;
SET LOCAL ROLE pgtap_adopt_owner;
SELECT lives_ok($$SELECT outbox.adopt('pgtap_outboxevent')$$, 'the owner adopts');
SELECT throws_ok($$SELECT outbox.adopt('pgtap_outboxevent', '{"route.by.fields": "x"}')$$, '22023', NULL, 'unknown option');
SELECT throws_ok($$SELECT outbox.adopt('pgtap_outboxevent', '{"table.field.event.key": "nope"}')$$, '42703', NULL, 'missing column');
SELECT throws_ok($$SELECT outbox.adopt('pgtap_outboxevent', '{"table.field.event.payload": "id"}')$$, '42804', NULL, 'unsupported payload type');
SELECT throws_ok($$SELECT outbox.adopt('pgtap_outboxevent', '{"table.fields.additional.placement": "type:partition"}')$$, '0A000', NULL, 'partition placement');
SELECT throws_ok($$SELECT outbox.adopt('pgtap_outboxevent', '{"route.topic.regex": "(x"}')$$, '2201B', NULL, 'bad regex');
RESET ROLE;
SELECT is((SELECT options->>'route.topic.replacement' FROM outbox.adopted
            WHERE relid = 'pgtap_outboxevent'::regclass),
          'outbox.event.${routedByValue}', 'Debezium''s default replacement is stored');
SET LOCAL ROLE pgtap_adopt_owner;
SELECT lives_ok($$SELECT outbox.unadopt('pgtap_outboxevent')$$, 'the owner unadopts');
RESET ROLE;
SELECT is((SELECT count(*) FROM outbox.adopted), 0::bigint, 'no adoption left');

SELECT * FROM finish();
ROLLBACK;
