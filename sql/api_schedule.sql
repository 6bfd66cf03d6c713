-- The relay's scheduled work, through the SQL it runs: redelivery batches
-- and expiry (outbox._redeliver_batch(), shared with redeliver()) and
-- retention batches (outbox._retention_batch()).  Time is simulated by
-- backdating published_at / created_at; the delivery watermark by writing
-- outbox.relay_watermark as the relay would.
\set VERBOSITY terse
\pset null '(null)'
CREATE EXTENSION outbox;
SELECT 'init' FROM pg_create_logical_replication_slot('regress_api_schedule', 'test_decoding');

-- The ids and attempts of the "outbox" messages written (see api_confirm).
CREATE FUNCTION republished(OUT id bigint, OUT attempts int)
    RETURNS SETOF record LANGUAGE sql AS $$
    SELECT ('x' || encode(substring(c from 3 for 8), 'hex'))::bit(64)::bigint,
           ('x' || encode(substring(c from 12 for 4), 'hex'))::bit(32)::int
      FROM pg_logical_slot_get_binary_changes('regress_api_schedule', NULL, NULL,
                                              'force-binary', '1',
                                              'include-xids', '0',
                                              'skip-empty-xacts', '1') AS g,
           LATERAL (SELECT position('\x20636f6e74656e743a'::bytea IN g.data) AS p) AS d,
           LATERAL (SELECT substring(g.data from d.p + 9) AS c) AS x
     WHERE substring(g.data for 8) = 'message:'::bytea
$$;
CREATE VIEW state AS
    SELECT id, attempts, confirm_status, expired_at IS NOT NULL AS expired
      FROM outbox.messages ORDER BY id;

SELECT outbox.enqueue('orders', 'k' || i, pg_catalog.jsonb_build_object('i', i))
  FROM generate_series(1, 8) AS i;
SELECT count(*) AS inserts_decoded FROM pg_logical_slot_get_changes('regress_api_schedule', NULL, NULL);
SELECT outbox.confirm(1);
SELECT outbox.confirm(2, 'failed', 'out of stock');
INSERT INTO outbox.dead_letters (message_id, topic, key, payload, error_code, error)
VALUES (3, 'orders', 'k3', '{"i": 3}', 'MSG_SIZE_TOO_LARGE', 'Message size too large');
UPDATE outbox.messages SET published_at = published_at - interval '10 minutes';

-- The schedule's batches: unanswered rows only (a failed verdict is final
-- for the schedule), no dead letters, at most max_rows, in id order, going
-- on above last_id.  4..8 are due.
SELECT * FROM outbox._redeliver_batch('5 minutes', 3, false, NULL, 2);
SELECT * FROM republished();
SELECT * FROM outbox._redeliver_batch('5 minutes', 3, false, 5, 2);
SELECT * FROM outbox._redeliver_batch('5 minutes', 3, false, 7, 2);
SELECT * FROM republished();
-- Nothing is due again before redeliver_after.
SELECT * FROM outbox._redeliver_batch('5 minutes', 3, false, NULL, 100);
SELECT * FROM state;
-- Third publication of 4..8; then they have had max_attempts.
UPDATE outbox.messages SET published_at = published_at - interval '10 minutes';
SELECT * FROM outbox._redeliver_batch('5 minutes', 3, false, NULL, 100);
SELECT outbox.confirm(6);
-- redeliver_after after the last publication, without a verdict: expired,
-- and nothing is published.  6 has a verdict: not expired.
SELECT * FROM outbox._redeliver_batch('5 minutes', 3, false, NULL, 100);
UPDATE outbox.messages SET published_at = published_at - interval '10 minutes';
SELECT * FROM outbox._redeliver_batch('5 minutes', 3, false, NULL, 100);
SELECT count(*) AS published FROM republished();
SELECT * FROM state;
-- Expired once: a later pass leaves them alone.
SELECT * FROM outbox._redeliver_batch('5 minutes', 3, false, NULL, 100);
-- A late verdict still applies; the row stays marked expired.
SELECT outbox.confirm(7, 'failed', 'too late');
SELECT * FROM state WHERE id = 7;
-- redeliver() with more attempts revives 4, 5 and 8 (and re-publishes
-- failed 2 and 7, as it always did); redeliver() expires as well.
SELECT outbox.redeliver('5 minutes', 4);
SELECT * FROM republished();
SELECT * FROM state;
UPDATE outbox.messages SET published_at = published_at - interval '10 minutes';
SELECT outbox.redeliver('5 minutes', 4);
SELECT * FROM state;
-- redrive() publishes again and clears the expiry too.
UPDATE outbox.messages SET attempts = 4, expired_at = now() WHERE id = 3;
SELECT outbox.redrive(1);
SELECT * FROM state WHERE id = 3;
SELECT * FROM republished();

-- Retention.  Nothing is deleted without a delivery watermark.
TRUNCATE outbox.messages, outbox.dead_letters RESTART IDENTITY;
SELECT outbox.enqueue('orders', 'k' || i, pg_catalog.jsonb_build_object('i', i))
  FROM generate_series(1, 10) AS i \g /dev/null
UPDATE outbox.messages SET created_at = created_at - interval '2 hours';
SELECT * FROM outbox._retention_batch('1 hour', false, NULL, 100);
-- The relay's watermark: every transaction committed so far was
-- acknowledged.  Rows written later are not.
INSERT INTO outbox.relay_watermark (system_identifier, slot_name, snapshot, lsn)
SELECT system_identifier, 'regress', pg_current_snapshot(), pg_current_wal_lsn()
  FROM pg_control_system();
SELECT outbox.enqueue('orders', 'late', '{}');
UPDATE outbox.messages SET created_at = created_at - interval '2 hours' WHERE key = 'late';
-- Kept: failed (2), dead-lettered (3), expired (4), unacknowledged (11);
-- confirmed (1) and unanswered (5..10) rows go, when unanswered rows are
-- not kept for redelivery.  A verdict (an UPDATE) does not change what
-- Kafka acknowledged: published_xid decides.
SELECT outbox.confirm(1), outbox.confirm(2, 'failed'), outbox.confirm(11);
INSERT INTO outbox.dead_letters (message_id, topic, key, payload, error_code, error)
VALUES (3, 'orders', 'k3', '{"i": 3}', 'MSG_SIZE_TOO_LARGE', 'Message size too large');
UPDATE outbox.messages SET expired_at = now() WHERE id = 4;
-- A young row ends the pass: 9 is newer than older_than.
UPDATE outbox.messages SET created_at = now() WHERE id = 9;
-- In batches of max_rows examined rows, going on above last_id.
SELECT * FROM outbox._retention_batch('1 hour', true, NULL, 3);
SELECT id FROM outbox.messages ORDER BY id;
SELECT * FROM outbox._retention_batch('1 hour', true, 3, 3);
SELECT * FROM outbox._retention_batch('1 hour', true, 6, 3);
SELECT id FROM outbox.messages ORDER BY id;
SELECT * FROM outbox._retention_batch('1 hour', false, NULL, 100);
SELECT id, confirm_status FROM outbox.messages ORDER BY id;
-- Once 9 is old enough, the pass goes on to the end; 11 stays.
UPDATE outbox.messages SET created_at = created_at - interval '2 hours' WHERE id = 9;
SELECT * FROM outbox._retention_batch('1 hour', false, 8, 100);
SELECT id FROM outbox.messages ORDER BY id;
-- A watermark of another system covers nothing.
UPDATE outbox.relay_watermark SET system_identifier = system_identifier + 1,
       snapshot = pg_current_snapshot();
SELECT outbox.confirm(2);
SELECT * FROM outbox._retention_batch('1 hour', false, NULL, 100);
-- This system's again, and newer: 11 is acknowledged now, 2 confirmed.
UPDATE outbox.relay_watermark SET system_identifier = system_identifier - 1;
SELECT * FROM outbox._retention_batch('1 hour', false, NULL, 100);
SELECT id FROM outbox.messages ORDER BY id;
-- An expired row goes once it has a confirmed verdict.
SELECT outbox.confirm(4);
SELECT * FROM outbox._retention_batch('1 hour', true, NULL, 100);
SELECT id, expired_at IS NOT NULL AS expired FROM outbox.messages ORDER BY id;
SELECT * FROM outbox._retention_batch(NULL, false, NULL, 100);
SELECT * FROM outbox._retention_batch('1 hour', false, NULL, 0);

SELECT pg_drop_replication_slot('regress_api_schedule');
DROP VIEW state;
DROP FUNCTION republished();
DROP EXTENSION outbox;
