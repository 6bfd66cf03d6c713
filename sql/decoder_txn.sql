--
-- decoder_txn: commit order, rollbacks, subtransactions, large transactions.
--
\set VERBOSITY terse
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS outbox;
CREATE EXTENSION IF NOT EXISTS dblink;
RESET client_min_messages;
CREATE EXTENSION outbox;

SELECT 'init' FROM pg_create_logical_replication_slot('decoder_txn', 'outbox');

CREATE FUNCTION pg_temp.events(OUT topic text, OUT key text, OUT xid bigint,
                               OUT lsn pg_lsn)
    RETURNS SETOF record LANGUAGE sql AS $$
    SELECT data::jsonb->>'topic', data::jsonb->>'key',
           (data::jsonb->>'xid')::bigint, (data::jsonb->>'lsn')::pg_lsn
      FROM pg_logical_slot_get_changes('decoder_txn', NULL, NULL)
$$;

-- A rolled-back transaction produces nothing.
BEGIN;
SELECT outbox.enqueue('rolled-back', 'a', '{}') IS NOT NULL AS enqueued;
ROLLBACK;
SELECT count(*) AS after_rollback FROM pg_temp.events();

-- Savepoints: a rolled-back subtransaction's events vanish, a released
-- one's stay, nested ones follow their parents; order is insert order.
BEGIN;
SELECT outbox.enqueue('sub', 'top-1', '{}') IS NOT NULL AS ok;
SAVEPOINT a;
SELECT outbox.enqueue('sub', 'a-released', '{}') IS NOT NULL AS ok;
SAVEPOINT b;
SELECT outbox.enqueue('sub', 'b-rolled-back', '{}') IS NOT NULL AS ok;
ROLLBACK TO SAVEPOINT b;
SELECT outbox.enqueue('sub', 'a-after-rollback', '{}') IS NOT NULL AS ok;
RELEASE SAVEPOINT a;
SAVEPOINT c;
SELECT outbox.enqueue('sub', 'c-rolled-back', '{}') IS NOT NULL AS ok;
SAVEPOINT d;
SELECT outbox.enqueue('sub', 'd-inside-c', '{}') IS NOT NULL AS ok;
RELEASE SAVEPOINT d;
ROLLBACK TO SAVEPOINT c;
SELECT outbox.enqueue('sub', 'top-2', '{}') IS NOT NULL AS ok;
SELECT txid_current() AS xid_sub \gset
COMMIT;
SELECT key, xid = :xid_sub AS top_level_xid FROM pg_temp.events();

-- An error inside a PL/pgSQL block rolls back that block's events.
DO $$
BEGIN
    PERFORM outbox.enqueue('plpgsql', 'kept', '{}');
    BEGIN
        PERFORM outbox.enqueue('plpgsql', 'lost', '{}');
        RAISE EXCEPTION 'boom';
    EXCEPTION WHEN raise_exception THEN
        NULL;
    END;
END
$$;
SELECT topic, key FROM pg_temp.events();

-- Interleaved sessions: events come out in commit order, not insert order.
SELECT dblink_connect('other', 'dbname=' || current_database());
BEGIN;
SELECT outbox.enqueue('interleaved', 'first-inserted-last-committed', '{}') AS id_a,
       txid_current() AS xid_a \gset
SELECT dblink_exec('other', 'BEGIN');
SELECT dblink_exec('other', $$INSERT INTO outbox.messages (topic, key) VALUES ('interleaved', 'second-inserted-first-committed')$$);
SELECT dblink_exec('other', 'COMMIT');
SELECT dblink_exec('other', $$INSERT INTO outbox.messages (topic, key) VALUES ('interleaved', 'third-autocommit')$$);
COMMIT;
SELECT dblink_exec('other', $$INSERT INTO outbox.messages (topic, key) VALUES ('interleaved', 'fourth')$$);
SELECT dblink_disconnect('other');
SELECT key, lsn > lag(lsn) OVER () AS after_previous,
       xid = :xid_a AS first_session_xid
  FROM pg_temp.events();
SELECT id, key FROM outbox.messages WHERE topic = 'interleaved' ORDER BY id;

-- A transaction without events produces nothing, even with other writes.
CREATE TABLE other (v int);
INSERT INTO other SELECT generate_series(1, 1000);
SELECT count(*) AS no_events FROM pg_temp.events();

-- A transaction far larger than logical_decoding_work_mem (spilled to
-- disk by the reorder buffer): every event, in order, once.
BEGIN;
INSERT INTO outbox.messages (topic, key, payload)
SELECT 'large', i::text, jsonb_build_object('i', i, 'pad', repeat('x', 100))
  FROM generate_series(1, 20000) AS i;
SELECT outbox.enqueue('large', 'last', NULL) IS NOT NULL AS ok;
COMMIT;
SELECT count(*) AS events,
       count(DISTINCT xid) AS transactions,
       bool_and(key = n::text OR (n = 20001 AND key = 'last')) AS in_order
  FROM pg_temp.events() WITH ORDINALITY AS e(topic, key, xid, lsn, n);

-- A large toasted payload arrives whole.
SELECT outbox.enqueue('toast', 'big',
                      jsonb_build_object('blob', string_agg(md5(i::text), '')))
       IS NOT NULL AS ok
  FROM generate_series(1, 20000) AS i;
SELECT topic, length(data::jsonb->'payload'->>'blob') AS blob_length,
       data::jsonb->'payload'->>'blob' = (SELECT string_agg(md5(i::text), '')
                                            FROM generate_series(1, 20000) AS i) AS same
  FROM pg_logical_slot_get_changes('decoder_txn', NULL, NULL),
       LATERAL (SELECT data::jsonb->>'topic' AS topic) t;

-- peek does not consume, get does.
SELECT outbox.enqueue('peek', 'p', '{}') IS NOT NULL AS ok;
SELECT count(*) AS peeked FROM pg_logical_slot_peek_changes('decoder_txn', NULL, NULL);
SELECT count(*) AS peeked_again FROM pg_logical_slot_peek_changes('decoder_txn', NULL, NULL);
SELECT count(*) AS got FROM pg_logical_slot_get_changes('decoder_txn', NULL, NULL);
SELECT count(*) AS got_again FROM pg_logical_slot_get_changes('decoder_txn', NULL, NULL);

-- upto_nchanges stops after the transaction that reaches the limit.
SELECT outbox.enqueue('limit', 'l' || i, '{}') FROM generate_series(1, 3) AS i \g /dev/null
SELECT outbox.enqueue('limit', 'l4', '{}') IS NOT NULL AS ok;
SELECT count(*) AS first_batch FROM pg_logical_slot_get_changes('decoder_txn', NULL, 1);
SELECT count(*) AS rest FROM pg_logical_slot_get_changes('decoder_txn', NULL, NULL);

SELECT pg_drop_replication_slot('decoder_txn');
DROP TABLE other;
DROP EXTENSION dblink;
DROP EXTENSION outbox;
