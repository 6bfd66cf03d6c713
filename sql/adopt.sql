--
-- adopt: outbox.adopt() turns committed INSERTs into an existing table of
-- Debezium's outbox shape into events, as Debezium's Outbox Event Router
-- shapes its records.
--
\set VERBOSITY terse
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS outbox;
RESET client_min_messages;
CREATE EXTENSION outbox;
SELECT 'init' FROM pg_create_logical_replication_slot('adopt', 'outbox');

-- Events up to their headers; lsn, xid and commit_time vary.
CREATE FUNCTION adopt_events() RETURNS SETOF text LANGUAGE sql AS $$
    SELECT regexp_replace(data, ',"lsn":"[^"]*","xid":[0-9]+,"commit_time":"[^"]*"}$', '}')
      FROM pg_logical_slot_get_changes('adopt', NULL, NULL)
$$;

-- Debezium's documented outbox table.
CREATE TABLE outboxevent (
    id            uuid NOT NULL PRIMARY KEY,
    aggregatetype varchar(255) NOT NULL,
    aggregateid   varchar(255) NOT NULL,
    type          varchar(255) NOT NULL,
    payload       jsonb
);
-- Rows written before the adoption are not events.
INSERT INTO outboxevent VALUES
    ('00000000-0000-0000-0000-000000000000', 'Order', '0', 'Old', '{}');
SELECT outbox.adopt('outboxevent');
SELECT relid, options, adopted_by = current_user::regrole AS by_me
  FROM outbox.adopted;

-- An insert-and-delete writer (the table stays empty) and an insert-only
-- writer; two aggregate types go to two topics, keyed by aggregateid, with
-- header id.
BEGIN;
INSERT INTO outboxevent VALUES
    ('4d47e190-0402-4048-bc2c-89dd54343cdc', 'Order', '1', 'OrderCreated',
     '{"id": 1, "lineItems": [{"item": "Debezium in Action", "quantity": 2}], "customerId": 123}');
DELETE FROM outboxevent WHERE id = '4d47e190-0402-4048-bc2c-89dd54343cdc';
COMMIT;
INSERT INTO outboxevent VALUES
    ('b3a07c7e-1a53-4c1a-9c3e-0b3cb0d4b7a1', 'Customer', '123', 'CustomerCreated',
     '{"name": "alice"}');
-- A rolled-back insert never appears.
BEGIN;
INSERT INTO outboxevent VALUES
    ('c0000000-0000-0000-0000-000000000001', 'Order', '2', 'OrderCreated', '{}');
ROLLBACK;
-- A rolled-back savepoint neither.
BEGIN;
SAVEPOINT s;
INSERT INTO outboxevent VALUES
    ('c0000000-0000-0000-0000-000000000002', 'Order', '3', 'OrderCreated', '{}');
ROLLBACK TO SAVEPOINT s;
INSERT INTO outboxevent VALUES
    ('c0000000-0000-0000-0000-000000000003', 'Order', '4', 'OrderCreated', null);
COMMIT;
SELECT * FROM adopt_events();

-- DELETEs are ignored; UPDATEs follow table.op.invalid.behavior: a WARNING,
-- never an ERROR inside the decoder.
DELETE FROM outboxevent WHERE aggregateid = '0';
UPDATE outboxevent SET type = 'Renamed' WHERE aggregateid = '123';
SELECT * FROM adopt_events();
SELECT outbox.adopt('outboxevent', '{"table.op.invalid.behavior": "fatal"}');
UPDATE outboxevent SET type = 'Again' WHERE aggregateid = '123';
SELECT * FROM adopt_events();
TRUNCATE outboxevent;

-- Events interleave with outbox.messages in commit order.
BEGIN;
SELECT outbox.enqueue('plain', 'k', '{"n": 1}');
INSERT INTO outboxevent VALUES
    ('c0000000-0000-0000-0000-000000000004', 'Order', '5', 'OrderPaid', '{"n": 2}');
SELECT outbox.enqueue('plain', 'k', '{"n": 3}');
COMMIT;
SELECT * FROM adopt_events();

-- A custom route.topic.replacement and a header placement (with and
-- without alias); adopt() again replaces the options.
SELECT outbox.adopt('outboxevent', '{
    "route.topic.replacement": "${routedByValue}.events",
    "table.fields.additional.placement": "type:header:eventType,aggregatetype:header"
}');
INSERT INTO outboxevent VALUES
    ('c0000000-0000-0000-0000-000000000005', 'Order', '6', 'OrderShipped', '{"n": 4}');
SELECT * FROM adopt_events();

-- Regex groups: named and numbered, Java syntax; a value the regex does not
-- match keeps its own name as topic (Kafka Connect's RegexRouter).
SELECT outbox.adopt('outboxevent', $${
    "route.topic.regex": "(?<domain>[a-z]+)\\.(?<kind>.*)",
    "route.topic.replacement": "evt.${kind}.$1"
}$$);
INSERT INTO outboxevent VALUES
    ('c0000000-0000-0000-0000-000000000006', 'shop.orders', '7', 'X', '{}'),
    ('c0000000-0000-0000-0000-000000000007', 'NoDot', '8', 'X', '{}');
SELECT * FROM adopt_events();

-- Adopting and inserting in one transaction; unadopt() ends it for the
-- inserts after it.
SELECT outbox.unadopt('outboxevent');
INSERT INTO outboxevent VALUES
    ('c0000000-0000-0000-0000-000000000008', 'Order', '9', 'X', '{}');
BEGIN;
SELECT outbox.adopt('outboxevent', '{"route.topic.replacement": "tx.${routedByValue}"}');
INSERT INTO outboxevent VALUES
    ('c0000000-0000-0000-0000-000000000009', 'Order', '10', 'X', '{}');
SELECT outbox.unadopt('outboxevent');
INSERT INTO outboxevent VALUES
    ('c0000000-0000-0000-0000-00000000000a', 'Order', '11', 'X', '{}');
COMMIT;
SELECT outbox.unadopt('outboxevent');  -- idempotent
SELECT * FROM adopt_events();

-- bigint ids, other column names, a json payload (sent as compact JSON on
-- one line, white space inside strings kept).
CREATE TABLE events_json (
    event_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       text NOT NULL,
    entity     bigint,
    body       json,
    created    timestamptz NOT NULL DEFAULT now()
);
SELECT outbox.adopt('events_json', '{
    "table.field.event.id": "event_id",
    "table.field.event.key": "entity",
    "table.field.event.payload": "body",
    "route.by.field": "kind",
    "table.field.event.timestamp": "created"
}');
INSERT INTO events_json (kind, entity, body) VALUES
    ('invoice', 42, E'{ "spaced" : [1, 2],\n  "kept": "a  b\\n" }'),
    ('invoice', NULL, NULL);
SELECT * FROM adopt_events();

-- A text payload: JSON text is sent as compact JSON; other text as a JSON
-- string;
-- with route.tombstone.on.empty.payload, blank text is a tombstone.
CREATE TABLE events_text (
    id            bigint PRIMARY KEY,
    aggregatetype text NOT NULL,
    aggregateid   text,
    payload       text
);
SELECT outbox.adopt('events_text', '{"route.tombstone.on.empty.payload": "true"}');
INSERT INTO events_text VALUES
    (1, 'note', 'a', '{"ok": true}'),
    (2, 'note', 'b', 'plain "words"'),
    (3, 'note', 'c', '   '),
    (4, 'note', 'd', '[1, 2'),
    (5, 'note', 'e', '"a JSON string"');
SELECT * FROM adopt_events();
SELECT outbox.adopt('events_text', '{"route.tombstone.on.empty.payload": false}');
INSERT INTO events_text VALUES (6, 'note', 'f', '');
SELECT * FROM adopt_events();

-- Large (toasted) payloads, keys and headers are read whole.
ALTER TABLE events_text ALTER COLUMN payload SET STORAGE EXTERNAL,
                        ALTER COLUMN aggregateid SET STORAGE EXTERNAL;
INSERT INTO events_text
SELECT 100 + n, 'note', repeat('k', 3000), '{"big": "' || repeat(md5(n::text), 300) || '"}'
  FROM generate_series(1, 2) n;
SELECT length(data::jsonb->>'key') AS key_length,
       length(data::jsonb->'payload'->>'big') AS payload_length,
       data::jsonb->'headers'->>'id' AS id
  FROM pg_logical_slot_get_changes('adopt', NULL, NULL);

-- Envelope placement: the value becomes {"payload": ..., alias: value}.
SELECT outbox.adopt('events_text', '{
    "table.fields.additional.placement": "id:envelope:eventId,aggregateid:envelope,aggregatetype:header:t"
}');
INSERT INTO events_text VALUES (7, 'note', 'g', '{"x": 1}'), (8, 'note', NULL, NULL);
SELECT * FROM adopt_events();

-- Rows the adoption cannot turn into a record are skipped with a WARNING,
-- never an ERROR: the decoder would stop at them for good.
ALTER TABLE events_text ALTER COLUMN aggregatetype DROP NOT NULL;
INSERT INTO events_text VALUES (10, NULL, 'i', '{}');
ALTER TABLE events_text DROP COLUMN aggregateid;
INSERT INTO events_text VALUES (11, 'note', '{}');
\set VERBOSITY default
SELECT * FROM adopt_events();
\set VERBOSITY terse
SELECT outbox.adopt('events_text', '{"table.field.event.key": ""}');

-- The binary format carries the same event (flags 0x4: a payload, no key).
INSERT INTO events_text VALUES (12, 'note', '{"x": 2}');
SELECT chr(get_byte(data, 0)) AS frame, get_byte(data, 1) AS version,
       (get_byte(data, 2) << 8) + get_byte(data, 3) AS flags
  FROM pg_logical_slot_get_binary_changes('adopt', NULL, NULL, 'format', 'binary');

-- Invalid options, missing columns, unsupported types: errors at adopt()
-- time, naming the option or column.
\set VERBOSITY default
SELECT outbox.adopt('outboxevent', '{"route.by.fields": "x"}');
SELECT outbox.adopt('outboxevent', '{"route.by.field": 1}');
SELECT outbox.adopt('outboxevent', '{"route.tombstone.on.empty.payload": "yes"}');
SELECT outbox.adopt('outboxevent', '{"table.op.invalid.behavior": "ignore"}');
SELECT outbox.adopt('outboxevent', '[]');
SELECT outbox.adopt('outboxevent', '{"table.field.event.key": "aggregate_id"}');
SELECT outbox.adopt('outboxevent', '{"table.fields.additional.placement": "eventType:header"}');
SELECT outbox.adopt('outboxevent', '{"table.fields.additional.placement": "type"}');
SELECT outbox.adopt('outboxevent', '{"table.fields.additional.placement": "type:partition"}');
SELECT outbox.adopt('outboxevent', '{"table.fields.additional.placement": "type:body"}');
SELECT outbox.adopt('outboxevent', '{"table.fields.additional.placement": "type:header:outbox-id"}');
SELECT outbox.adopt('outboxevent', '{"route.topic.regex": "(unclosed"}');
SELECT outbox.adopt('outboxevent', '{"route.topic.regex": "(?<1x>.*)"}');
SELECT outbox.adopt('outboxevent', '{"route.topic.replacement": "t.${nope}"}');
SELECT outbox.adopt('outboxevent', '{"route.topic.replacement": "t.$2"}');
SELECT outbox.adopt('outboxevent', '{"route.topic.replacement": "t.$"}');
SELECT outbox.adopt('outboxevent', '{"table.field.event.payload": "id"}');
SELECT outbox.adopt('events_json', '{"route.by.field": "entity"}');
SELECT outbox.adopt('events_json', '{"route.by.field": "entity", "table.field.event.id": "event_id", "table.field.event.payload": "body"}');
SELECT outbox.adopt('events_json', '{"route.by.field": "kind", "table.field.event.id": "event_id", "table.field.event.payload": "body", "table.field.event.key": "created"}');
CREATE VIEW outboxview AS SELECT * FROM outboxevent;
SELECT outbox.adopt('outboxview');
SELECT outbox.adopt('outbox.messages');
CREATE TEMP TABLE tmp_outbox (LIKE outboxevent);
SELECT outbox.adopt('tmp_outbox');
SELECT outbox.adopt(NULL);
SELECT outbox.adopt('no_such_table');
\set VERBOSITY terse
-- Nothing was adopted by the failed calls.
SELECT relid FROM outbox.adopted ORDER BY relid::text;

-- A dropped table's adoption goes with it.
DROP TABLE events_json;
SELECT relid FROM outbox.adopted ORDER BY relid::text;

SELECT count(*) AS leftover FROM adopt_events();
SELECT pg_drop_replication_slot('adopt');
DROP FUNCTION adopt_events();
DROP VIEW outboxview;
DROP TABLE outboxevent, events_text;
DROP EXTENSION outbox;
