-- capture(): odd names, composite keys, key_columns, events, idempotency.
BEGIN;
SELECT plan(20);

CREATE FUNCTION pg_temp.take() RETURNS TABLE (topic text, key text, payload jsonb)
    LANGUAGE sql AS $$
    DELETE FROM outbox.messages m RETURNING m.topic, m.key, m.payload
$$;

-- Odd names everywhere.
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Tab ""with"" quotes" (
    "Id" int, "ключ" text, "col umn" text, PRIMARY KEY ("Id", "ключ"));
SELECT lives_ok($$SELECT outbox.capture('"Odd Schema"."Tab ""with"" quotes"', 'odd')$$,
                'capture a table with quotes, spaces and mixed case in its names');
INSERT INTO "Odd Schema"."Tab ""with"" quotes" VALUES (7, 'ж', 'a b');
SELECT results_eq(
    $$SELECT topic, key, payload FROM pg_temp.take()$$,
    $$VALUES ('odd'::text, '["7","ж"]'::text,
              '{"op": "insert", "schema": "Odd Schema", "table": "Tab \"with\" quotes",
                "new": {"Id": 7, "ключ": "ж", "col umn": "a b"}, "old": null}'::jsonb)$$,
    'the event names the schema and table as they are; composite key as JSON array');

SELECT lives_ok($$SELECT outbox.capture('"Odd Schema"."Tab ""with"" quotes"', 'odd', '{col umn}')$$,
                'key_columns with a space');
UPDATE "Odd Schema"."Tab ""with"" quotes" SET "col umn" = 'c d';
SELECT results_eq(
    $$SELECT key, payload->'old'->>'col umn', payload->'new'->>'col umn', payload->>'op' FROM pg_temp.take()$$,
    $$VALUES ('c d'::text, 'a b'::text, 'c d'::text, 'update'::text)$$,
    'a single key column is the plain value; update carries old and new');
DELETE FROM "Odd Schema"."Tab ""with"" quotes";
SELECT results_eq(
    $$SELECT key, payload->'new', payload->'old'->>'Id' FROM pg_temp.take()$$,
    $$VALUES ('c d'::text, 'null'::jsonb, '7'::text)$$,
    'delete: key from the old row, new is null');

-- Composite keys with nulls and several key columns.
CREATE TABLE pgtap_c (a int, b text, c text, PRIMARY KEY (b, a));
SELECT lives_ok($$SELECT outbox.capture('pgtap_c', 'c')$$, 'capture with a composite primary key');
INSERT INTO pgtap_c VALUES (1, 'x y', NULL);
SELECT is((SELECT key FROM pg_temp.take()), '["x y","1"]', 'composite key in index order, values as text');
SELECT lives_ok($$SELECT outbox.capture('pgtap_c', 'c', ARRAY['c', 'a'])$$, 'explicit key columns');
INSERT INTO pgtap_c VALUES (2, 'z', NULL);
SELECT is((SELECT key FROM pg_temp.take()), '[null,"2"]', 'a null key value is JSON null in the array');
SELECT lives_ok($$SELECT outbox.capture('pgtap_c', 'c', ARRAY['c'])$$, 'a single nullable key column');
INSERT INTO pgtap_c VALUES (3, 'w', NULL);
SELECT is((SELECT key FROM pg_temp.take()), NULL, 'a null single key value is a null key');

-- Events subset and idempotency.
SELECT lives_ok($$SELECT outbox.capture('pgtap_c', 'c', NULL, '{delete}')$$, 'capture deletes only');
SELECT lives_ok($$SELECT outbox.capture('pgtap_c', 'c', NULL, '{delete}')$$, 'capture again: idempotent');
SELECT is((SELECT count(*)::int FROM pg_trigger WHERE tgrelid = 'pgtap_c'::regclass), 1, 'one trigger only');
INSERT INTO pgtap_c VALUES (4, 'v', NULL);
UPDATE pgtap_c SET c = 'u';
DELETE FROM pgtap_c WHERE a = 4;
SELECT results_eq($$SELECT payload->>'op' FROM pg_temp.take()$$, $$VALUES ('delete')$$,
                  'only the captured event kinds');
SELECT lives_ok($$SELECT outbox.uncapture('pgtap_c')$$, 'uncapture');
SELECT lives_ok($$SELECT outbox.uncapture('pgtap_c')$$, 'uncapture again: idempotent');
DELETE FROM pgtap_c;
SELECT is((SELECT count(*)::int FROM pg_temp.take()), 0, 'no events after uncapture');

-- Partitioned table: events name the partition.
CREATE TABLE pgtap_p (id int PRIMARY KEY) PARTITION BY LIST (id);
CREATE TABLE pgtap_p1 PARTITION OF pgtap_p FOR VALUES IN (1);
SELECT lives_ok($$SELECT outbox.capture('pgtap_p', 'p')$$, 'capture a partitioned table');
INSERT INTO pgtap_p VALUES (1);
SELECT results_eq($$SELECT key, payload->>'table' FROM pg_temp.take()$$,
                  $$VALUES ('1'::text, 'pgtap_p1'::text)$$,
                  'a partition''s event names the partition');

SELECT * FROM finish();
ROLLBACK;
