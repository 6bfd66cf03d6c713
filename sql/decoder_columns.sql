-- decoder_columns: an event column of another type (or missing) makes rows
-- undecodable, reported with a WARNING; never a silent tombstone.
\set VERBOSITY terse
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS outbox;
RESET client_min_messages;
CREATE EXTENSION outbox;
SELECT 'init' FROM pg_create_logical_replication_slot('decoder_columns', 'outbox');

INSERT INTO outbox.messages (topic, key, payload) VALUES ('t', 'before', '{"a": 1}');

-- Bypass the guards, as a superuser could: the event trigger, and the
-- validation trigger whose column list pins the column's type.
ALTER EVENT TRIGGER outbox_guard_messages DISABLE;
DROP TRIGGER messages_check ON outbox.messages;
ALTER TABLE outbox.messages ALTER COLUMN payload TYPE json;
INSERT INTO outbox.messages (topic, key, payload) VALUES ('t', 'json-1', '{"a": 2}');
INSERT INTO outbox.messages (topic, key, payload) VALUES ('t', 'json-2', '{"a": 3}');
ALTER TABLE outbox.messages ALTER COLUMN payload TYPE jsonb;
CREATE TRIGGER messages_check
    BEFORE INSERT OR UPDATE OF topic, key, payload, headers ON outbox.messages
    FOR EACH ROW EXECUTE FUNCTION outbox.messages_check();
INSERT INTO outbox.messages (topic, key, payload) VALUES ('t', 'after', '{"a": 4}');
ALTER EVENT TRIGGER outbox_guard_messages ENABLE ALWAYS;

-- 'before' and 'after' are events; the two rows written while payload was
-- json are skipped with a WARNING each, after one WARNING for the table;
-- neither becomes a tombstone.
SELECT data::jsonb->>'key' AS key, data::jsonb->'payload' AS payload
  FROM pg_logical_slot_get_changes('decoder_columns', NULL, NULL);


-- Same for a column that PostgreSQL lets change type with the validation
-- trigger in place: attempts as bigint.
ALTER EVENT TRIGGER outbox_guard_messages DISABLE;
ALTER TABLE outbox.messages ALTER COLUMN attempts TYPE bigint;
INSERT INTO outbox.messages (topic, key, payload) VALUES ('t', 'bigint-attempts', '{}');
ALTER TABLE outbox.messages ALTER COLUMN attempts TYPE integer;
ALTER EVENT TRIGGER outbox_guard_messages ENABLE ALWAYS;
INSERT INTO outbox.messages (topic, key, payload) VALUES ('t', 'int-attempts', '{}');
SELECT data::jsonb->>'key' AS key
  FROM pg_logical_slot_get_changes('decoder_columns', NULL, NULL);

SELECT pg_drop_replication_slot('decoder_columns');
DROP EXTENSION outbox;
