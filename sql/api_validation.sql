-- Invalid events are rejected at write time, with a specific SQLSTATE,
-- whether written by enqueue(), a plain INSERT or UPDATE, or emit().
\set VERBOSITY terse
CREATE EXTENSION outbox;

-- try(sql) runs a statement and reports its SQLSTATE, message, detail and
-- hint, so that the expected output pins all four.
CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text; det text; hnt text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                            det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg || E'\n  detail: ' || coalesce(det, '(none)')
              || E'\n  hint: ' || coalesce(hnt, '(none)');
END;
$$;

-- Topic names.
SELECT try($$SELECT outbox.enqueue('', NULL, '{}')$$);
SELECT try($$SELECT outbox.enqueue('.', NULL, '{}')$$);
SELECT try($$SELECT outbox.enqueue('..', NULL, '{}')$$);
SELECT try($$SELECT outbox.enqueue('...', NULL, '{}')$$);  -- legal
SELECT try($$SELECT outbox.enqueue(repeat('x', 250), NULL, '{}')$$);
SELECT try($$SELECT outbox.enqueue('with space', NULL, '{}')$$);
SELECT try($$SELECT outbox.enqueue('slash/topic', NULL, '{}')$$);
SELECT try($$SELECT outbox.enqueue('colon:topic', NULL, '{}')$$);
SELECT try($$SELECT outbox.enqueue('ümlaut', NULL, '{}')$$);
SELECT try($$SELECT outbox.enqueue(E'tab\tbed', NULL, '{}')$$);
-- enqueue() reports a null topic as emit() does, before an id is drawn.
SELECT outbox.enqueue('ids', NULL, NULL) AS id_before \gset
SELECT try($$SELECT outbox.enqueue(NULL, NULL, '{}')$$);
SELECT try($$SELECT outbox.emit(NULL, NULL, '{}')$$);
SELECT outbox.enqueue('ids', NULL, NULL) - :id_before AS ids_drawn;
-- A plain INSERT of a null topic violates the NOT NULL constraint (its
-- detail shows the row, timestamps included, so only the SQLSTATE is shown).
SELECT try($$INSERT INTO outbox.messages (topic) VALUES (NULL)$$) LIKE '23502: %' AS not_null_violation;

-- Headers.
SELECT try($$SELECT outbox.enqueue('t', NULL, '{}', '["a", "b"]')$$);
SELECT try($$SELECT outbox.enqueue('t', NULL, '{}', '"scalar"')$$);
SELECT try($$SELECT outbox.enqueue('t', NULL, '{}', 'null')$$);
SELECT try($$SELECT outbox.enqueue('t', NULL, '{}', '{"n": 1}')$$);
SELECT try($$SELECT outbox.enqueue('t', NULL, '{}', '{"b": true}')$$);
SELECT try($$SELECT outbox.enqueue('t', NULL, '{}', '{"z": null}')$$);
SELECT try($$SELECT outbox.enqueue('t', NULL, '{}', '{"o": {"x": "y"}}')$$);
SELECT try($$SELECT outbox.enqueue('t', NULL, '{}', '{"a": ["y"]}')$$);
SELECT try($$SELECT outbox.enqueue('t', NULL, '{}', '{"": "empty name"}')$$);
SELECT try($$SELECT outbox.enqueue('t', NULL, '{}', '{"outbox-id": "1"}')$$);
SELECT try($$SELECT outbox.enqueue('t', NULL, '{}', '{"OUTBOX-LSN": "1"}')$$);
SELECT try($$SELECT outbox.enqueue('t', NULL, '{}', '{"outbox": "ok", "outboxy": "ok"}')$$);  -- legal

-- Size: topic + key + payload + headers as stored, against
-- outbox.max_message_size (1000000 bytes by default).
SHOW outbox.max_message_size;
SET outbox.max_message_size = 100;
SELECT try($$SELECT outbox.enqueue('t', repeat('k', 99), NULL)$$);  -- 100 bytes: ok
SELECT try($$SELECT outbox.enqueue('t', repeat('k', 100), NULL)$$);
SELECT try($$SELECT outbox.enqueue('t', NULL, pg_catalog.jsonb_build_object('s', repeat('x', 200)))$$);
SELECT try($$SELECT outbox.enqueue('t', NULL, NULL, pg_catalog.jsonb_build_object('h', repeat('x', 200)))$$);
SELECT try($$SELECT outbox.emit('t', repeat('k', 100), NULL)$$);
-- A large compressed payload copied from another table is measured
-- without being expanded, and still rejected when too large.
CREATE TABLE src (j jsonb);
INSERT INTO src SELECT pg_catalog.jsonb_build_object('s', repeat('abc', 100000));
SELECT pg_column_size(j) < 100000 AS stored_compressed FROM src;
SELECT try($$INSERT INTO outbox.messages (topic, payload) SELECT 't', j FROM src$$);
RESET outbox.max_message_size;
SELECT try($$INSERT INTO outbox.messages (topic, payload) SELECT 't', j FROM src$$);
-- Ordinary users cannot raise the limit for themselves (PGC_SUSET).
SELECT context FROM pg_settings WHERE name = 'outbox.max_message_size';

-- UPDATEs of the event columns are validated too.
SELECT outbox.enqueue('valid', 'k', '{}') AS id \gset
SELECT try($$UPDATE outbox.messages SET topic = 'in valid' WHERE topic = 'valid'$$);
SELECT try($$UPDATE outbox.messages SET headers = '{"n": 2}' WHERE topic = 'valid'$$);
SELECT try($$UPDATE outbox.messages SET topic = 'still-valid' WHERE topic = 'valid'$$);
SELECT id = :id AS same_row, topic FROM outbox.messages WHERE topic = 'still-valid';

-- Only the accepted events were stored.
SELECT topic, key, headers FROM outbox.messages ORDER BY id;

-- The trigger function only works as the BEFORE trigger it is.
SELECT try($$SELECT outbox.messages_check()$$);
SELECT try($$SELECT outbox.capture_trigger()$$);

-- Header errors name the header at fault, in emit() as in enqueue().
SELECT try($$SELECT outbox.emit('t', NULL, '{}', '{"ok": "1", "retries": 3}')$$);
SELECT try($$SELECT outbox.emit('t', NULL, '{}', '{"Outbox-Source": "x"}')$$);

-- Argument errors of the other functions carry a detail and a hint too.
CREATE TABLE keyed (id int PRIMARY KEY, v text);
CREATE TABLE unkeyed (v text);
CREATE SEQUENCE a_sequence;
CREATE VIEW a_view AS SELECT * FROM keyed;
SELECT try($$SELECT outbox.redeliver('-1 minute')$$);
SELECT try($$SELECT outbox.redeliver(NULL)$$);
SELECT try($$SELECT outbox.redeliver('5 minutes', 0)$$);
SELECT try($$SELECT outbox.redeliver('5 minutes', NULL)$$);
SELECT try($$SELECT outbox.purge('-1 day')$$);
SELECT try($$SELECT outbox.purge(NULL)$$);
SELECT try($$SELECT outbox.capture(NULL, 't')$$);
SELECT try($$SELECT outbox.capture('keyed', NULL)$$);
SELECT try($$SELECT outbox.capture('keyed', 't', '{}')$$);
SELECT try($$SELECT outbox.capture('keyed', 't', '{id,NULL}')$$);
SELECT try($$SELECT outbox.capture('keyed', 't', NULL, '{}')$$);
SELECT try($$SELECT outbox.capture('keyed', 't', NULL, NULL)$$);
SELECT try($$SELECT outbox.uncapture(NULL)$$);
-- The hint fits the kind of relation: a sequence is not a view.
SELECT try($$SELECT outbox.capture('a_sequence', 't')$$);
SELECT try($$SELECT outbox.capture('a_view', 't')$$);
SELECT try($$SELECT outbox.capture('outbox.installation', 't')$$);

-- A table without a primary key, captured without key_columns: a warning,
-- with its detail and hint, and events with a null key.
\set VERBOSITY default
SELECT outbox.capture('unkeyed', 'unkeyed');
\set VERBOSITY terse
INSERT INTO unkeyed VALUES ('x');
SELECT topic, key IS NULL AS null_key FROM outbox.messages WHERE topic = 'unkeyed';
-- No warning with key_columns, nor for a table with a primary key.
SELECT outbox.capture('unkeyed', 'unkeyed', '{v}');
SELECT outbox.capture('keyed', 'keyed');

DROP VIEW a_view;
DROP TABLE src, keyed, unkeyed;
DROP SEQUENCE a_sequence;
DROP FUNCTION try(text);
DROP EXTENSION outbox;
