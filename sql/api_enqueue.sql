-- outbox.enqueue(): one row per event, in the caller's transaction.
\set VERBOSITY terse
CREATE EXTENSION outbox;

-- Returns the new row's id; ids increase.
SELECT outbox.enqueue('orders', 'order-1', '{"total": 42}');
SELECT outbox.enqueue('orders', 'order-2', '{"total": 7}', '{"trace-id": "abc"}');
-- A null key is allowed.
SELECT outbox.enqueue('orders', NULL, '{"total": 1}');
-- A null payload is a Kafka tombstone and is accepted.
SELECT outbox.enqueue('orders', 'order-1', NULL);
-- Null headers are the default.
SELECT outbox.enqueue('orders.v2', 'k', '[1, 2, 3]', NULL);
-- Topic names at the limits: 1 and 249 characters, all legal characters.
SELECT outbox.enqueue('a', NULL, '{}');
SELECT outbox.enqueue(repeat('x', 249), NULL, '{}');
SELECT outbox.enqueue('AZaz09._-', NULL, '"scalar"');
-- An empty headers object is fine.
SELECT outbox.enqueue('orders', NULL, '{}', '{}');

SELECT id, length(topic) AS topic_len, left(topic, 12) AS topic, key,
       payload, headers, attempts,
       created_at IS NOT NULL AS has_created_at,
       published_at = created_at AS published_at_created,
       confirmed_at, confirm_status, confirm_detail
  FROM outbox.messages ORDER BY id;

-- Written in the caller's transaction: rolled back with it.
BEGIN;
SELECT outbox.enqueue('orders', 'rolled-back', '{}');
ROLLBACK;
SELECT count(*) AS rolled_back_rows FROM outbox.messages WHERE key = 'rolled-back';

-- ... and with a savepoint.
BEGIN;
SELECT outbox.enqueue('orders', 'kept', '{}');
SAVEPOINT s;
SELECT outbox.enqueue('orders', 'undone', '{}');
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT key FROM outbox.messages WHERE key IN ('kept', 'undone') ORDER BY key;

-- Several events in one statement.
SELECT count(outbox.enqueue('bulk', i::text, pg_catalog.jsonb_build_object('i', i)))
  FROM generate_series(1, 100) AS i;
SELECT count(*), min(key::int), max(key::int) FROM outbox.messages WHERE topic = 'bulk';

-- Plain INSERTs go through the same validation and defaults.
INSERT INTO outbox.messages (topic, key, payload) VALUES ('direct', 'd', '{"x": true}')
RETURNING id, topic, key, payload, attempts;
-- The id is an identity column: it cannot be chosen.
INSERT INTO outbox.messages (id, topic) VALUES (1000, 'direct');
-- attempts starts at 1 and cannot go below.
INSERT INTO outbox.messages (topic, attempts) VALUES ('direct', 0);
-- Only the two verdicts are allowed.
INSERT INTO outbox.messages (topic, confirm_status) VALUES ('direct', 'maybe');

-- Large payloads below the limit are accepted and kept intact (toasted).
SELECT outbox.enqueue('big', 'b', pg_catalog.jsonb_build_object('s', repeat('x', 500000))) AS big_id;
SELECT length(payload->>'s') FROM outbox.messages WHERE topic = 'big';
-- Copying a toasted payload from another row checks its size without fuss.
INSERT INTO outbox.messages (topic, payload)
     SELECT 'big-copy', payload FROM outbox.messages WHERE topic = 'big'
  RETURNING length(payload->>'s');

DROP EXTENSION outbox;
