--
-- decoder_basic: what the outbox output plugin decodes, in JSON format.
--
\set VERBOSITY terse
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS outbox;
RESET client_min_messages;

-- The slot exists before the extension: the plugin finds outbox.messages
-- once CREATE EXTENSION is decoded.
SELECT 'init' FROM pg_create_logical_replication_slot('decoder_basic', 'outbox');
SELECT count(*) AS before_extension FROM pg_logical_slot_get_changes('decoder_basic', NULL, NULL);
-- (a change decoded before the extension exists, so that the plugin first
-- learns there is no outbox.messages, then sees it created)
CREATE TABLE early (v int);
INSERT INTO early VALUES (1);
CREATE EXTENSION outbox;

SELECT clock_timestamp() AS t0 \gset

-- A full event, a tombstone without key or headers, strings needing escapes.
BEGIN;
INSERT INTO outbox.messages (topic, key, payload, headers)
VALUES ('orders', 'k1',
        '{"b": [1, 2.50, "x\"y", -3e2], "a": {"n": null, "t": true, "f": false}}',
        '{"trace-id": "abc", "x": "y"}');
SELECT outbox.enqueue('orders', NULL, NULL) AS tombstone_id;
INSERT INTO outbox.messages (topic, key, payload)
VALUES ('Topic_1.x-y', E'quote" back\\ nl\n tab\t bell\x07', '"just a string"');
INSERT INTO outbox.messages (topic, key, payload) VALUES ('scalars', '', '42');
SELECT txid_current() AS xid1, pg_current_wal_insert_lsn() AS before1 \gset
COMMIT;
SELECT pg_current_wal_lsn() AS after1 \gset

-- Other tables are not events, not even one called messages elsewhere.
CREATE TABLE public.messages (id bigint, topic text, key text, payload jsonb,
                              headers jsonb, attempts integer);
INSERT INTO public.messages VALUES (1, 'orders', 'k', '{}', NULL, 1);
CREATE TABLE other (id int PRIMARY KEY, v text);
INSERT INTO other VALUES (1, 'a'), (2, 'b');

-- Confirmations, updates and deletes of messages are not events.
SELECT outbox.confirm(1);
UPDATE outbox.messages SET confirm_detail = 'seen' WHERE id = 2;
DELETE FROM outbox.messages WHERE id = 2;

-- Neither is TRUNCATE, of messages or anything else.
TRUNCATE other;

-- A second transaction with events, after all that.
BEGIN;
INSERT INTO other VALUES (3, 'c');
INSERT INTO outbox.messages (topic, key, payload, headers)
SELECT 'bulk', 'k' || i, jsonb_build_object('i', i), NULL
  FROM generate_series(1, 3) AS i;
SELECT txid_current() AS xid2, pg_current_wal_insert_lsn() AS before2 \gset
COMMIT;
SELECT pg_current_wal_lsn() AS after2 \gset

CREATE TEMP TABLE got AS
SELECT n, data::jsonb AS ev, data AS raw
  FROM pg_logical_slot_get_changes('decoder_basic', NULL, NULL)
       WITH ORDINALITY AS c(lsn, xid, data, n);

-- The events, without the fields that vary from run to run.
SELECT n, ev - 'lsn' - 'xid' - 'commit_time' AS event FROM got ORDER BY n;

-- The text itself: compact JSON, fields in this order.
SELECT n, regexp_replace(raw, ',"lsn":"[0-9A-F]+/[0-9A-F]+","xid":[0-9]+,"commit_time":"[^"]+"}$',
                         ',"lsn":...}') AS raw
  FROM got WHERE n <= 4 ORDER BY n;

-- Every event carries exactly these fields.
SELECT DISTINCT array(SELECT jsonb_object_keys(ev) ORDER BY 1) AS fields FROM got;

-- lsn is the commit LSN, xid the writing transaction's, commit_time sane.
SELECT ev->>'id' AS id,
       (ev->>'xid')::bigint = CASE WHEN n <= 4 THEN :xid1 ELSE :xid2 END AS xid_ok,
       (ev->>'lsn')::pg_lsn BETWEEN
           CASE WHEN n <= 4 THEN :'before1' ELSE :'before2' END::pg_lsn AND
           CASE WHEN n <= 4 THEN :'after1' ELSE :'after2' END::pg_lsn AS lsn_ok,
       (ev->>'commit_time')::timestamptz BETWEEN :'t0' AND clock_timestamp() AS time_ok,
       ev->>'commit_time' LIKE '____-__-__T__:__:__%+00:00' AS time_utc_iso
  FROM got ORDER BY n;
SELECT count(DISTINCT ev->>'lsn') AS commits,
       count(DISTINCT ev->>'commit_time') AS commit_times,
       min((ev->>'lsn')::pg_lsn) FILTER (WHERE n > 4) >
       max((ev->>'lsn')::pg_lsn) FILTER (WHERE n <= 4) AS lsn_increases
  FROM got;

-- The slot has moved past them: nothing more.
SELECT count(*) FROM pg_logical_slot_get_changes('decoder_basic', NULL, NULL);

-- DROP and CREATE EXTENSION give outbox.messages a new OID; followed.
SELECT 'outbox.messages'::regclass::oid AS old_oid \gset
DROP EXTENSION outbox;
CREATE EXTENSION outbox;
SELECT 'outbox.messages'::regclass::oid <> :old_oid AS new_oid;
SELECT outbox.enqueue('after-recreate', 'k', '{"again": true}');
SELECT data::jsonb - 'lsn' - 'xid' - 'commit_time' AS event
  FROM pg_logical_slot_get_changes('decoder_basic', NULL, NULL);

-- Created and written in one transaction.
BEGIN;
DROP EXTENSION outbox;
CREATE EXTENSION outbox;
SELECT outbox.enqueue('same-txn', NULL, '{}');
COMMIT;
SELECT data::jsonb - 'lsn' - 'xid' - 'commit_time' AS event
  FROM pg_logical_slot_get_changes('decoder_basic', NULL, NULL);

-- Without the extension, inserts elsewhere are still ignored.
DROP EXTENSION outbox;
INSERT INTO public.messages VALUES (2, 'orders', 'k', '{}', NULL, 1);
SELECT count(*) FROM pg_logical_slot_get_changes('decoder_basic', NULL, NULL);

SELECT pg_drop_replication_slot('decoder_basic');
DROP TABLE public.messages, other, early;
