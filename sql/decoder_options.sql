--
-- decoder_options: plugin options, and the binary format of decoder/wire.h.
--
\set VERBOSITY terse
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS outbox;
RESET client_min_messages;
CREATE EXTENSION outbox;

SELECT 'init' FROM pg_create_logical_replication_slot('decoder_options', 'outbox');

-- Unknown options and bad values are errors, not silently ignored.
SELECT data FROM pg_logical_slot_peek_changes('decoder_options', NULL, NULL, 'fromat', 'binary');
SELECT data FROM pg_logical_slot_peek_changes('decoder_options', NULL, NULL, 'include-xids', '1');
SELECT data FROM pg_logical_slot_peek_changes('decoder_options', NULL, NULL, 'format', 'xml');
SELECT data FROM pg_logical_slot_peek_changes('decoder_options', NULL, NULL, 'format', 'JSON');
SELECT data FROM pg_logical_slot_peek_changes('decoder_options', NULL, NULL, 'format', '');
\set VERBOSITY default
SELECT data FROM pg_logical_slot_peek_changes('decoder_options', NULL, NULL, 'format', 'text');
\set VERBOSITY terse

-- The binary format cannot be read as text...
SELECT data FROM pg_logical_slot_peek_changes('decoder_options', NULL, NULL, 'format', 'binary');
-- ...but JSON can be read through the binary functions, and 'json' is the
-- default; the last one given wins.
SELECT outbox.enqueue('opts', 'k', '{"a": 1}') AS id1 \gset
SELECT convert_from(data, 'UTF8')::jsonb - 'lsn' - 'xid' - 'commit_time' AS event
  FROM pg_logical_slot_peek_binary_changes('decoder_options', NULL, NULL, 'format', 'json');
SELECT data::jsonb - 'lsn' - 'xid' - 'commit_time' AS event
  FROM pg_logical_slot_peek_changes('decoder_options', NULL, NULL, 'format', 'binary', 'format', 'json');
SELECT count(*) FROM pg_logical_slot_get_changes('decoder_options', NULL, NULL);

-- Binary frames, read with a few helpers (big-endian integers).
CREATE FUNCTION pg_temp.u16(b bytea, off int) RETURNS int LANGUAGE sql AS
    $$ SELECT get_byte(b, off) * 256 + get_byte(b, off + 1) $$;
CREATE FUNCTION pg_temp.u32(b bytea, off int) RETURNS bigint LANGUAGE sql AS
    $$ SELECT ('x' || encode(substring(b FROM off + 1 FOR 4), 'hex'))::bit(32)::bigint $$;
CREATE FUNCTION pg_temp.i64(b bytea, off int) RETURNS bigint LANGUAGE sql AS
    $$ SELECT ('x' || encode(substring(b FROM off + 1 FOR 8), 'hex'))::bit(64)::bigint $$;
CREATE FUNCTION pg_temp.lsn(b bytea, off int) RETURNS pg_lsn LANGUAGE sql AS
    $$ SELECT '0/0'::pg_lsn + pg_temp.i64(b, off)::numeric $$;

SELECT clock_timestamp() AS t0 \gset
BEGIN;
SELECT outbox.enqueue('bin', 'k1', '{"b": [1, "x"], "a": null}',
                      '{"h1": "v1", "h2": ""}') AS id1 \gset
SELECT outbox.enqueue('bin', NULL, NULL) AS id2 \gset
SELECT outbox.emit('bin-emit', 'k3', '"str"') IS NOT NULL AS ok;
SELECT outbox._emit_stored(:id1, 2, 'bin', 'k1', '{}', NULL) IS NOT NULL AS ok;
SELECT txid_current() AS xid1 \gset
COMMIT;
-- a transaction without events: no frames at all
INSERT INTO outbox.dead_letters (topic, error_code, error) VALUES ('x', 'e', 'e');
BEGIN;
SELECT outbox.enqueue('bin', 'k5', '{}') IS NOT NULL AS ok;
SELECT txid_current() AS xid2 \gset
COMMIT;

CREATE TEMP TABLE frames AS
SELECT n, data FROM pg_logical_slot_get_binary_changes('decoder_options', NULL, NULL,
                                                       'format', 'binary')
       WITH ORDINALITY AS c(lsn, xid, data, n);

-- Frame type, version, flags, counts.
SELECT n, chr(get_byte(data, 0)) AS type, get_byte(data, 1) AS version,
       pg_temp.u16(data, 2) AS flags, length(data) AS bytes
  FROM frames ORDER BY n;

-- Event frames, field by field.
CREATE TEMP TABLE events AS
SELECT n, data,
       pg_temp.u16(data, 2) AS flags,
       pg_temp.i64(data, 4) AS id,
       pg_temp.lsn(data, 12) AS commit_lsn,
       pg_temp.lsn(data, 20) AS end_lsn,
       pg_temp.u32(data, 28) AS xid,
       '2000-01-01 00:00:00+00'::timestamptz
           + pg_temp.i64(data, 32) * interval '1 microsecond' AS commit_time,
       pg_temp.u32(data, 40)::int AS attempts,
       pg_temp.u32(data, 44)::int AS topic_len
  FROM frames WHERE get_byte(data, 0) = ascii('E');
ALTER TABLE events ADD topic text, ADD key_len int, ADD key text,
    ADD payload_len int, ADD payload text, ADD nheaders int, ADD rest bytea;
UPDATE events SET topic = convert_from(substring(data FROM 49 FOR topic_len), 'UTF8'),
                  key_len = pg_temp.u32(data, 48 + topic_len);
UPDATE events SET key = CASE WHEN flags & 2 <> 0 THEN
                        convert_from(substring(data FROM 53 + topic_len FOR key_len), 'UTF8') END,
                  payload_len = pg_temp.u32(data, 52 + topic_len + key_len);
UPDATE events SET payload = CASE WHEN flags & 4 <> 0 THEN
                            convert_from(substring(data FROM 57 + topic_len + key_len
                                                   FOR payload_len), 'UTF8') END,
                  nheaders = pg_temp.u32(data, 56 + topic_len + key_len + payload_len),
                  rest = substring(data FROM 61 + topic_len + key_len + payload_len);
SELECT n, flags, CASE WHEN flags & 1 <> 0 THEN id = :id1 END AS id_is_id1,
       id = 0 AS id_zero, attempts, topic, key, key_len, payload, payload_len,
       nheaders, encode(rest, 'escape') AS headers
  FROM events ORDER BY n;
SELECT n, xid = CASE WHEN n <= 4 THEN :xid1 ELSE :xid2 END AS xid_ok,
       end_lsn > commit_lsn AS end_after_commit,
       commit_time BETWEEN :'t0' AND clock_timestamp() AS time_ok
  FROM events ORDER BY n;
-- the id of the second event, a row
SELECT id = :id2 AS id2_ok FROM events WHERE n = 2;

-- Commit frames: same transaction fields, the event count, 36 bytes.
SELECT c.n, pg_temp.u32(c.data, 32) AS nevents,
       pg_temp.lsn(c.data, 4) = e.commit_lsn AS same_commit_lsn,
       pg_temp.lsn(c.data, 12) = e.end_lsn AS same_end_lsn,
       pg_temp.u32(c.data, 20) = e.xid AS same_xid,
       pg_temp.i64(c.data, 24) = pg_temp.i64(e.data, 32) AS same_commit_time
  FROM frames c
  JOIN events e ON e.n = c.n - 1
 WHERE get_byte(c.data, 0) = ascii('C')
 ORDER BY c.n;
SELECT count(*) FILTER (WHERE get_byte(data, 0) = ascii('E')) AS event_frames,
       count(*) FILTER (WHERE get_byte(data, 0) = ascii('C')) AS commit_frames
  FROM frames;

-- Headers are checked when written; should a non-string value get past
-- that (here: the validation trigger disabled), the binary format skips it
-- with a WARNING rather than trust it.  JSON shows the headers as stored.
ALTER TABLE outbox.messages DISABLE TRIGGER messages_check;
INSERT INTO outbox.messages (topic, key, headers)
VALUES ('bad-headers', 'k', '{"good": "g", "num": 1, "obj": {"a": "b"}}');
ALTER TABLE outbox.messages ENABLE TRIGGER messages_check;
SELECT data::jsonb->'headers' AS headers
  FROM pg_logical_slot_peek_changes('decoder_options', NULL, NULL);
SELECT pg_temp.u32(data, 56 + 11 + 1) AS nheaders,
       encode(substring(data FROM 61 + 11 + 1), 'escape') AS headers
  FROM pg_logical_slot_get_binary_changes('decoder_options', NULL, NULL,
                                          'format', 'binary')
 WHERE get_byte(data, 0) = ascii('E');

-- JSON and binary agree on the commit LSN.
SELECT outbox.enqueue('agree', 'k', '{}') IS NOT NULL AS ok;
SELECT (SELECT (data::jsonb->>'lsn')::pg_lsn
          FROM pg_logical_slot_peek_changes('decoder_options', NULL, NULL)) =
       (SELECT pg_temp.lsn(data, 12)
          FROM pg_logical_slot_peek_binary_changes('decoder_options', NULL, NULL,
                                                   'format', 'binary')
         LIMIT 1) AS same_lsn;

SELECT pg_drop_replication_slot('decoder_options');
DROP EXTENSION outbox;
