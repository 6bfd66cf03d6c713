-- outbox.emit(): the event goes only to the WAL, as a transactional
-- logical message with prefix "outbox", decoded only if its transaction
-- commits.  Checked here through a test_decoding slot.
\set VERBOSITY terse
CREATE EXTENSION outbox;
SELECT 'init' FROM pg_create_logical_replication_slot('regress_api_emit', 'test_decoding');

-- The messages decoded since the last call: test_decoding's line up to the
-- content, then the fixed fields of the content (see src/event.h): magic,
-- version, id, has_id, attempts, and the topic.
CREATE FUNCTION decoded(OUT message text, OUT magic text, OUT version int,
                        OUT id bigint, OUT has_id int, OUT attempts int,
                        OUT topic text)
    RETURNS SETOF record LANGUAGE sql AS $$
    SELECT convert_from(substring(d.data for d.p - 1), 'UTF8'),
           chr(get_byte(c, 0)), get_byte(c, 1),
           ('x' || encode(substring(c from 3 for 8), 'hex'))::bit(64)::bigint,
           get_byte(c, 10),
           ('x' || encode(substring(c from 12 for 4), 'hex'))::bit(32)::int,
           convert_from(substring(c from 20 for
               ('x' || encode(substring(c from 16 for 4), 'hex'))::bit(32)::int), 'UTF8')
      FROM pg_logical_slot_get_binary_changes('regress_api_emit', NULL, NULL,
                                              'force-binary', '1',
                                              'include-xids', '0',
                                              'skip-empty-xacts', '1') AS g,
           LATERAL (SELECT g.data, position('\x20636f6e74656e743a'::bytea IN g.data) AS p) AS d,
           LATERAL (SELECT substring(d.data from d.p + 9) AS c) AS x
     WHERE d.p > 0
$$;

-- Returns the message's LSN (not shown: it varies).
SELECT outbox.emit('orders', 'order-1', '{"total": 42}') IS NOT NULL AS has_lsn;
SELECT pg_typeof(outbox.emit('orders', 'order-1', '{"total": 42}'));
-- Exactly one message per call, committed.
SELECT * FROM decoded();

-- Kept on commit, in order, with the rest of the transaction.
BEGIN;
SELECT outbox.emit('orders', 'k', '{"n": 1}', '{"trace-id": "abc"}') IS NOT NULL AS has_lsn;
SELECT outbox.emit('orders', NULL, NULL) IS NOT NULL AS tombstone;
COMMIT;
SELECT * FROM decoded();

-- Rolled back with its transaction: nothing is decoded.
BEGIN;
SELECT outbox.emit('orders', 'rolled-back', '{}') IS NOT NULL AS has_lsn;
ROLLBACK;
SELECT count(*) AS decoded_after_rollback FROM decoded();

-- ... and with a rolled-back savepoint: only the kept message remains.
BEGIN;
SELECT outbox.emit('orders', 'kept', '{}') IS NOT NULL AS has_lsn;
SAVEPOINT s;
SELECT outbox.emit('orders', 'undone', '{"longer": "payload"}') IS NOT NULL AS has_lsn;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT * FROM decoded();

-- The LSNs of successive messages increase.
BEGIN;
SELECT outbox.emit('t', NULL, '{}') AS lsn1 \gset
SELECT outbox.emit('t', NULL, '{}') AS lsn2 \gset
COMMIT;
SELECT :'lsn1'::pg_lsn < :'lsn2'::pg_lsn AS increasing;
SELECT count(*) AS two_messages FROM decoded();

-- emit() writes no table rows.
SELECT count(*) AS rows_in_messages FROM outbox.messages;

-- Same rules as the table; a failed emit() leaves nothing in the WAL.
SELECT outbox.emit(NULL, 'k', '{}');
SELECT outbox.emit('', 'k', '{}');
SELECT outbox.emit('bad topic', 'k', '{}');
SELECT outbox.emit('t', 'k', '{}', '["not", "an", "object"]');
SELECT outbox.emit('t', 'k', '{}', '{"n": 1}');
SELECT outbox.emit('t', 'k', '{}', '{"outbox-id": "1"}');
SET outbox.max_message_size = 10;
SELECT outbox.emit('t', 'k', '{"too": "large"}');
RESET outbox.max_message_size;
SELECT count(*) AS decoded_after_errors FROM decoded();

-- _emit_stored(): the same message carrying a row id and attempt number.
SELECT outbox._emit_stored(7, 2, 'orders', 'k', '{}', NULL) IS NOT NULL AS has_lsn;
SELECT outbox._emit_stored(NULL, 1, 'orders', 'k', '{}', NULL) IS NOT NULL AS without_id;
SELECT * FROM decoded();
SELECT outbox._emit_stored(7, NULL, 'orders', 'k', '{}', NULL);
SELECT outbox._emit_stored(7, 0, 'orders', 'k', '{}', NULL);
SELECT outbox._emit_stored(7, 1, NULL, 'k', '{}', NULL);
SELECT outbox._emit_stored(7, 1, 'bad topic', 'k', '{}', NULL);
SELECT count(*) AS decoded_after_errors FROM decoded();

SELECT pg_drop_replication_slot('regress_api_emit');
DROP FUNCTION decoded();
DROP EXTENSION outbox;
