-- outbox.capture(): row changes of a table become events in the same
-- transaction.
\set VERBOSITY terse
\pset null '(null)'
CREATE EXTENSION outbox;

-- The events written so far, and then forget them.
CREATE FUNCTION events(OUT id bigint, OUT topic text, OUT key text, OUT payload jsonb)
    RETURNS SETOF record LANGUAGE sql AS $$
    DELETE FROM outbox.messages m RETURNING m.id, m.topic, m.key, m.payload
$$;
CREATE VIEW captured AS SELECT * FROM events() ORDER BY id;

-- A plain table with a primary key: the key is the primary key's value.
CREATE TABLE orders (id int PRIMARY KEY, item text, qty int, note jsonb);
SELECT outbox.capture('orders', 'orders');
INSERT INTO orders VALUES (1, 'apple', 3, '{"gift": true}'), (2, 'pear', 1, NULL);
UPDATE orders SET qty = qty + 1 WHERE id = 1;
DELETE FROM orders WHERE id = 2;
SELECT * FROM captured;
-- A primary key change is keyed by the new key; a delete by the old one.
UPDATE orders SET id = 10 WHERE id = 1;
DELETE FROM orders;
SELECT id, key, payload->>'op' AS op, payload->'old'->'id' AS old_id,
       payload->'new'->'id' AS new_id
  FROM captured;

-- Events are written in the same transaction: rolled back with it.
BEGIN;
INSERT INTO orders VALUES (3, 'plum', 1, NULL);
ROLLBACK;
SELECT count(*) AS after_rollback FROM captured;

-- Rows become JSON as row_to_json() renders them: numbers, booleans, nulls,
-- arrays, nested JSON, timestamps, and special floats as strings.
CREATE TABLE types (
    id bigint PRIMARY KEY,
    n numeric, f float8, b boolean, t text, a int[], j json, jb jsonb,
    ts timestamptz, d date, u uuid, by bytea);
SET timezone = 'UTC';
SELECT outbox.capture('types', 'types');
INSERT INTO types VALUES (1, 12.50, 'NaN', true, E'quote " and \\ and \n',
    '{1,NULL,3}', '{"x": [1, 2]}', '{"y": null}', '2024-01-02 03:04:05+00',
    '2024-01-02', '00000000-0000-0000-0000-000000000001', '\x00ff');
INSERT INTO types (id) VALUES (2);
SELECT key, payload FROM captured;
RESET timezone;

-- Composite primary key: a JSON array of the values as text, in the key's
-- column order (not the table's), with null for a null value.
CREATE TABLE lines (a text, n int, b text, PRIMARY KEY (n, a));
SELECT outbox.capture('lines', 'lines');
INSERT INTO lines VALUES ('a b', 42, 'x'), ('quote"d', 7, NULL);
SELECT key FROM captured;

-- Explicit key columns override the primary key; a null single key value
-- is a null key; several columns give an array with JSON nulls.
SELECT outbox.capture('lines', 'lines', '{b}');
INSERT INTO lines VALUES ('c', 1, 'bee'), ('d', 2, NULL);
SELECT outbox.capture('lines', 'lines', '{b,a}');
INSERT INTO lines VALUES ('e', 3, NULL);
SELECT key FROM captured;

-- No primary key and no key columns: null key.
CREATE TABLE nokey (v text);
SELECT outbox.capture('nokey', 'nokey');
INSERT INTO nokey VALUES ('x');
SELECT key, payload->'new' AS new FROM captured;

-- Odd names: quotes, spaces, mixed case, unicode, a schema with a space.
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."we""ird tab" (
    "Id" int, "col with space" text, "ключ" text, "x'y" int,
    PRIMARY KEY ("ключ", "Id"));
SELECT outbox.capture('"My Schema"."we""ird tab"', 'weird', '{x''y,col with space}');
INSERT INTO "My Schema"."we""ird tab" VALUES (1, 'a b', 'ж', 5);
SELECT key, payload FROM captured;
SELECT outbox.capture('"My Schema"."we""ird tab"', 'weird');
UPDATE "My Schema"."we""ird tab" SET "x'y" = 6;
SELECT key, payload->'old'->'x''y' AS old, payload->'new'->'x''y' AS new FROM captured;
SELECT tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t
 WHERE tgrelid = '"My Schema"."we""ird tab"'::regclass;

-- Dropped and generated columns, and large (toasted) values.
CREATE TABLE gen (id int PRIMARY KEY, drop_me text, price int,
                  doubled int GENERATED ALWAYS AS (price * 2) STORED, big text);
ALTER TABLE gen DROP COLUMN drop_me;
SELECT outbox.capture('gen', 'gen');
INSERT INTO gen (id, price) VALUES (1, 21);
UPDATE gen SET big = repeat('x', 100000);
UPDATE gen SET price = 5;
DELETE FROM gen;
SELECT key, payload->>'op' AS op, payload->'new'->'doubled' AS new_doubled,
       length(payload->'new'->>'big') AS new_big,
       length(payload->'old'->>'big') AS old_big,
       payload->'new' ? 'drop_me' AS has_dropped
  FROM captured;

-- A subset of events, and idempotency: calling capture() again replaces the
-- trigger; there is only ever one.
SELECT outbox.capture('orders', 'orders', NULL, '{insert}');
SELECT outbox.capture('orders', 'orders', NULL, '{INSERT,Delete,insert}');
SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t WHERE tgrelid = 'orders'::regclass;
INSERT INTO orders VALUES (5, 'kiwi', 1, NULL);
UPDATE orders SET qty = 2;
DELETE FROM orders;
SELECT key, payload->>'op' AS op FROM captured;
SELECT outbox.capture('orders', 'orders-v2', NULL, '{update}');
INSERT INTO orders VALUES (6, 'fig', 1, NULL);
UPDATE orders SET qty = 3;
SELECT topic, key, payload->>'op' AS op FROM captured;

-- uncapture() removes the trigger, and is idempotent too.
SELECT outbox.uncapture('orders');
SELECT outbox.uncapture('orders');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'orders'::regclass;
INSERT INTO orders VALUES (7, 'lime', 1, NULL);
SELECT count(*) AS after_uncapture FROM captured;

-- Partitioned tables: the trigger is cloned to every partition, present
-- and future, and events name the partition the row is stored in.
CREATE TABLE parted (id int, region text, PRIMARY KEY (id)) PARTITION BY RANGE (id);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
CREATE TABLE parted_2 (region text, extra int, id int NOT NULL);
ALTER TABLE parted_2 DROP COLUMN extra;
ALTER TABLE parted ATTACH PARTITION parted_2 FOR VALUES FROM (100) TO (200);
SELECT outbox.capture('parted', 'parted');
CREATE TABLE parted_3 PARTITION OF parted FOR VALUES FROM (200) TO (300);
INSERT INTO parted VALUES (1, 'eu'), (150, 'us'), (250, 'ap');
-- Moving a row to another partition is a delete and an insert.
UPDATE parted SET id = 101 WHERE id = 1;
SELECT key, payload FROM captured;
-- The clones cannot be removed on their own; uncapture() the parent.
SELECT outbox.uncapture('parted_1');
SELECT outbox.uncapture('parted');
SELECT count(*) AS clones FROM pg_trigger
 WHERE tgrelid IN ('parted'::regclass, 'parted_1'::regclass,
                   'parted_2'::regclass, 'parted_3'::regclass);

-- Captured events are validated like any other.
SET outbox.max_message_size = 100;
CREATE TABLE wide (id int PRIMARY KEY, t text);
SELECT outbox.capture('wide', 'wide');
INSERT INTO wide VALUES (1, repeat('x', 200));
RESET outbox.max_message_size;

-- Errors.
SELECT outbox.capture(NULL, 't');
SELECT outbox.capture('orders', NULL);
SELECT outbox.capture('nosuch', 't');
SELECT outbox.capture('orders', 'bad topic');
SELECT outbox.capture('orders', '');
CREATE VIEW orders_view AS SELECT * FROM orders;
SELECT outbox.capture('orders_view', 't');
CREATE SEQUENCE seq;
SELECT outbox.capture('seq', 't');
SELECT outbox.capture('outbox.messages', 't');
SELECT outbox.capture('outbox.dead_letters', 't');
SELECT outbox.capture('orders', 't', '{nosuch}');
SELECT outbox.capture('orders', 't', '{ID}');
SELECT outbox.capture('orders', 't', '{ctid}');
SELECT outbox.capture('orders', 't', '{}');
SELECT outbox.capture('orders', 't', '{id,NULL}');
SELECT outbox.capture('orders', 't', NULL, '{insert,truncate}');
SELECT outbox.capture('orders', 't', NULL, '{insert,NULL}');
SELECT outbox.capture('orders', 't', NULL, '{}');
SELECT outbox.capture('orders', 't', NULL, NULL);
SELECT outbox.uncapture(NULL);
-- None of them left a trigger behind.
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'orders'::regclass;

-- A key column renamed after capture() is reported when a row is written.
SELECT outbox.capture('lines', 'lines', '{b}');
ALTER TABLE lines RENAME COLUMN b TO c;
INSERT INTO lines VALUES ('z', 99, 'zz');

DROP SCHEMA "My Schema" CASCADE;
DROP VIEW captured;
DROP FUNCTION events();
DROP TABLE orders, types, lines, nokey, gen, parted, wide CASCADE;
DROP SEQUENCE seq;
-- DROP EXTENSION ... CASCADE would also drop remaining capture triggers.
DROP EXTENSION outbox;
