--
-- reserved_topics: no event may be routed to outbox.progress_topic or
-- outbox.reply_topic (issue 23, point 2): the relay's progress records and
-- the verdicts it applies could otherwise be forged by any role that may
-- write events.  test/regress.conf sets outbox.reply_topic.
--
\set VERBOSITY terse
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS outbox;
RESET client_min_messages;
CREATE EXTENSION outbox;
SHOW outbox.progress_topic;
SHOW outbox.reply_topic;

CREATE ROLE regress_reserved_app;
GRANT USAGE ON SCHEMA outbox TO regress_reserved_app;
GRANT EXECUTE ON FUNCTION outbox.enqueue(text, text, jsonb, jsonb),
                          outbox.emit(text, text, jsonb, jsonb)
   TO regress_reserved_app;

SET ROLE regress_reserved_app;
-- The forged progress record of the issue: refused.
\set VERBOSITY default
SELECT outbox.enqueue('outbox_progress',
  format('outbox:%s:%s:outbox_%s', s.system_identifier, d.oid, d.oid),
  jsonb_build_object('version',1,'commit_lsn',(pg_current_wal_lsn()+40000000)::text,
    'replay_boundary',null,'replay_last_id',null,
    'zzzzzzzzzzzzzzzzzzzzzz',jsonb_build_object('end_lsn',null)))
FROM pg_control_system() s, pg_database d WHERE d.datname=current_database();
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY terse
SELECT outbox.enqueue('regress_replies', 'k', '{"verdict": "confirmed"}');
\echo :LAST_ERROR_SQLSTATE
SELECT outbox.emit('outbox_progress', 'k', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT outbox.emit('regress_replies', 'k', '{}');
\echo :LAST_ERROR_SQLSTATE
-- Names that only resemble them are ordinary topics.
SELECT outbox.enqueue('outbox_progress2', 'k', '{}') > 0 AS enqueued;
SELECT outbox.emit('Outbox_progress', 'k', '{}') IS NOT NULL AS emitted;
RESET ROLE;

-- Nor can a row be written or moved there directly.
INSERT INTO outbox.messages (topic, key, payload) VALUES ('outbox_progress', 'k', '{}');
\echo :LAST_ERROR_SQLSTATE
UPDATE outbox.messages SET topic = 'regress_replies' WHERE topic = 'outbox_progress2';
\echo :LAST_ERROR_SQLSTATE
SELECT topic FROM outbox.messages ORDER BY id;

-- capture(): refused when attached, and a trigger naming the topic anyway
-- refuses every row.
CREATE TABLE reserved_orders (id int PRIMARY KEY, total numeric);
SELECT outbox.capture('reserved_orders', 'outbox_progress');
\echo :LAST_ERROR_SQLSTATE
SELECT outbox.capture('reserved_orders', 'regress_replies');
\echo :LAST_ERROR_SQLSTATE
CREATE TRIGGER reserved_capture AFTER INSERT ON reserved_orders
    FOR EACH ROW EXECUTE FUNCTION outbox.capture_trigger('outbox_progress', 'id');
INSERT INTO reserved_orders VALUES (1, 10);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS orders FROM reserved_orders;
DROP TRIGGER reserved_capture ON reserved_orders;
SELECT outbox.capture('reserved_orders', 'orders');
INSERT INTO reserved_orders VALUES (2, 20);
SELECT topic, key FROM outbox.messages ORDER BY id;

-- A row written before its topic was reserved (here: with the triggers
-- off) is published again by redeliver() without an error: the relay
-- dead-letters it (e2e 174); refusing it would stop every redelivery.
SET session_replication_role = replica;
INSERT INTO outbox.messages (topic, key, payload) VALUES ('outbox_progress', 'old', '{}');
RESET session_replication_role;
SELECT outbox.redeliver('0 seconds') AS redelivered;

-- _check_topic() reads the settings now: not immutable.
SELECT provolatile FROM pg_proc WHERE oid = 'outbox._check_topic(text)'::regprocedure;

DROP TABLE reserved_orders;
DROP OWNED BY regress_reserved_app;
DROP ROLE regress_reserved_app;
