-- Consumer verdicts (confirm), redelivery, purge and redrive.
-- Time is simulated by backdating published_at / confirmed_at.
\set VERBOSITY terse
\pset null '(null)'
CREATE EXTENSION outbox;
SELECT 'init' FROM pg_create_logical_replication_slot('regress_api_confirm', 'test_decoding');

-- Re-published events, from the slot: id, has_id and attempts of each
-- "outbox" message (see src/event.h), in WAL order.
CREATE FUNCTION republished(OUT id bigint, OUT has_id int, OUT attempts int, OUT topic text)
    RETURNS SETOF record LANGUAGE sql AS $$
    SELECT ('x' || encode(substring(c from 3 for 8), 'hex'))::bit(64)::bigint,
           get_byte(c, 10),
           ('x' || encode(substring(c from 12 for 4), 'hex'))::bit(32)::int,
           convert_from(substring(c from 20 for
               ('x' || encode(substring(c from 16 for 4), 'hex'))::bit(32)::int), 'UTF8')
      FROM pg_logical_slot_get_binary_changes('regress_api_confirm', NULL, NULL,
                                              'force-binary', '1',
                                              'include-xids', '0',
                                              'skip-empty-xacts', '1') AS g,
           LATERAL (SELECT position('\x20636f6e74656e743a'::bytea IN g.data) AS p) AS d,
           LATERAL (SELECT substring(g.data from d.p + 9) AS c) AS x
     WHERE substring(g.data for 8) = 'message:'::bytea
$$;
CREATE VIEW state AS
    SELECT id, key, attempts, confirm_status, confirm_detail,
           confirmed_at IS NOT NULL AS confirmed_at_set,
           published_at > now() - interval '1 minute' AS recently_published
      FROM outbox.messages ORDER BY id;

SELECT outbox.enqueue('orders', 'k' || i, pg_catalog.jsonb_build_object('i', i))
  FROM generate_series(1, 5) AS i;

-- confirm(): the default verdict is 'confirmed'; 'failed' takes a detail.
SELECT outbox.confirm(1);
SELECT outbox.confirm(2, 'failed', 'consumer could not parse it');
SELECT outbox.confirm(3, 'confirmed', 'stored as order 17');
-- An unknown id is not an error: false.
SELECT outbox.confirm(999);
SELECT outbox.confirm(NULL);
-- An unknown status is.
SELECT outbox.confirm(4, 'ok');
SELECT outbox.confirm(4, 'CONFIRMED');
SELECT outbox.confirm(4, NULL);
SELECT * FROM state;
-- A later verdict replaces an earlier one.
SELECT outbox.confirm(2, 'confirmed');
SELECT outbox.confirm(2, 'failed', 'changed its mind');
SELECT * FROM state WHERE id = 2;
-- confirm() publishes nothing: no "outbox" message was written.
SELECT count(*) AS decoded FROM republished();

-- redeliver(): nothing is due yet (default: after 5 minutes).
SELECT outbox.redeliver();
-- Ten minutes later, every event without a 'confirmed' verdict is due:
-- 2 (failed), 4 and 5 (no verdict).  They are re-published through the
-- WAL with their id and the next attempt number, in id order.
UPDATE outbox.messages SET published_at = published_at - interval '10 minutes';
SELECT outbox.redeliver();
SELECT * FROM state;
SELECT * FROM republished();
-- Redelivered just now: not due again.
SELECT outbox.redeliver();
-- older_than chooses what is due.
UPDATE outbox.messages SET published_at = published_at - interval '2 minutes' WHERE id = 4;
SELECT outbox.redeliver('1 minute');
SELECT * FROM republished();
-- max_attempts bounds the publications: 4 has had 3, 5 has had 2.
UPDATE outbox.messages SET published_at = published_at - interval '1 hour';
SELECT outbox.redeliver('5 minutes', 3);
SELECT * FROM republished();
UPDATE outbox.messages SET published_at = published_at - interval '1 hour';
SELECT outbox.redeliver('5 minutes', 3);
SELECT id, attempts FROM outbox.messages ORDER BY id;
-- A redelivery in a rolled-back transaction is undone, WAL message included.
UPDATE outbox.messages SET published_at = published_at - interval '1 hour';
BEGIN;
SELECT outbox.redeliver('5 minutes', 100);
ROLLBACK;
SELECT id, attempts FROM outbox.messages ORDER BY id;
SELECT count(*) AS decoded FROM republished();
-- Bad arguments.
SELECT outbox.redeliver(NULL);
SELECT outbox.redeliver('-1 minute');
SELECT outbox.redeliver('1 minute', 0);
SELECT outbox.redeliver('1 minute', NULL);

-- purge(): deletes confirmed events whose verdict is older than older_than;
-- failed and unconfirmed events stay.
SELECT outbox.purge('1 day');
UPDATE outbox.messages SET confirmed_at = confirmed_at - interval '2 days';
SELECT outbox.confirm(5);
SELECT outbox.purge('1 day');
SELECT id, confirm_status FROM outbox.messages ORDER BY id;
SELECT outbox.purge('0');
SELECT id, confirm_status FROM outbox.messages ORDER BY id;
SELECT outbox.purge(NULL);
SELECT outbox.purge('-1 day');

-- redrive(): re-publish a dead letter.  One that came from a table row
-- carries its id and bumps the row's attempts (clearing its verdict);
-- one from emit() has no id.
INSERT INTO outbox.dead_letters (message_id, topic, key, payload, error_code, error)
VALUES (2, 'orders', 'k2', '{"i": 2}', 'MSG_SIZE_TOO_LARGE', 'Message size too large'),
       (NULL, 'emitted', NULL, NULL, 'UNKNOWN_TOPIC_OR_PART', 'Unknown topic');
SELECT outbox.redrive(1);
SELECT outbox.redrive(2);
SELECT outbox.redrive(2);
SELECT outbox.redrive(999);
SELECT id, message_id, redrives, redriven_at IS NOT NULL AS redriven FROM outbox.dead_letters ORDER BY id;
SELECT * FROM state;
SELECT * FROM republished();
-- A dead letter whose row was purged is re-published with its id, as a
-- first attempt.
DELETE FROM outbox.messages WHERE id = 2;
SELECT outbox.redrive(1);
SELECT * FROM republished();

SELECT pg_drop_replication_slot('regress_api_confirm');
DROP VIEW state;
DROP FUNCTION republished();
DROP EXTENSION outbox;
