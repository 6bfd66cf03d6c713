--
-- decoder_emit: events written as transactional logical messages.
--
\set VERBOSITY terse
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS outbox;
RESET client_min_messages;
CREATE EXTENSION outbox;

SELECT 'init' FROM pg_create_logical_replication_slot('decoder_emit', 'outbox');

CREATE FUNCTION pg_temp.events(OUT event jsonb, OUT xid bigint)
    RETURNS SETOF record LANGUAGE sql AS $$
    SELECT data::jsonb - 'lsn' - 'xid' - 'commit_time',
           (data::jsonb->>'xid')::bigint
      FROM pg_logical_slot_get_changes('decoder_emit', NULL, NULL)
$$;

-- outbox.emit(): binary-encoded messages, no id; a tombstone; rows and
-- messages of one transaction interleave in write order.
BEGIN;
SELECT outbox.emit('emitted', 'k1', '{"a": [1, {"b": null}], "s": "x\ny"}',
                   '{"h": "v"}') IS NOT NULL AS ok;
SELECT outbox.enqueue('stored', 'k2', '{"row": true}') IS NOT NULL AS ok;
SELECT outbox.emit('emitted', NULL, NULL) IS NOT NULL AS ok;
SELECT txid_current() AS xid1 \gset
COMMIT;
SELECT event, xid = :xid1 AS xid_ok FROM pg_temp.events();

-- Rolled back with its transaction, and with its subtransaction.
BEGIN;
SELECT outbox.emit('emitted', 'rolled-back', '{}') IS NOT NULL AS ok;
ROLLBACK;
BEGIN;
SELECT outbox.emit('emitted', 'kept', '{}') IS NOT NULL AS ok;
SAVEPOINT s;
SELECT outbox.emit('emitted', 'rolled-back-sub', '{}') IS NOT NULL AS ok;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT event FROM pg_temp.events();

-- A republished stored event carries its id and attempt number (JSON shows
-- the id; the binary format's attempts is checked in decoder_options).
SELECT outbox._emit_stored(41, 3, 'stored', 'k41', '{"again": 1}', '{"h": "w"}')
       IS NOT NULL AS ok;
SELECT event FROM pg_temp.events();

-- Hand-written messages are not events, whatever they contain: only the
-- extension's own messages carry a valid authentication code (api_hostile
-- has the attacks).  A WARNING each, nothing decoded.
SELECT pg_logical_emit_message(true, 'outbox',
    '{"topic": "by-hand", "key": "k", "payload": {"n": 1.50}}') IS NOT NULL AS ok;
SELECT pg_logical_emit_message(true, 'outbox', '{"topic": "by-hand-minimal"}') IS NOT NULL AS ok;
SELECT count(*) AS hand_written_events FROM pg_temp.events();

-- Not events: other prefixes, and non-transactional messages (they are not
-- rolled back with their transaction, so they cannot be outbox events).
SELECT pg_logical_emit_message(true, 'outbox2', '{"topic": "t"}') IS NOT NULL AS ok;
SELECT pg_logical_emit_message(true, 'Outbox', '{"topic": "t"}') IS NOT NULL AS ok;
SELECT pg_logical_emit_message(true, 'other', 'hello') IS NOT NULL AS ok;
SELECT pg_logical_emit_message(false, 'outbox', '{"topic": "t"}') IS NOT NULL AS ok;
SELECT count(*) AS not_events FROM pg_temp.events();

-- Malformed content with a valid code (only a superuser, who can read the
-- key, can sign): a WARNING each, skipped, and decoding goes on.  An ERROR
-- here would stop at the same record on every retry.  pg_temp.signed()
-- appends the code outbox.emit() would: HMAC-SHA-256 over the full 64-bit
-- top-level transaction id (epoch and xid) and the content.
CREATE EXTENSION pgcrypto;
CREATE FUNCTION pg_temp.signed(content bytea) RETURNS bytea
    LANGUAGE sql AS $$
    SELECT content || hmac(int8send(txid_current()) || content,
                           (SELECT key FROM outbox._message_key), 'sha256')
$$;
BEGIN;
SELECT pg_logical_emit_message(true, 'outbox', pg_temp.signed('not json')) IS NOT NULL AS ok;
SELECT pg_logical_emit_message(true, 'outbox', pg_temp.signed('')) IS NOT NULL AS ok;
SELECT pg_logical_emit_message(true, 'outbox', pg_temp.signed('{"topic": "t"}')) IS NOT NULL AS ok;
-- binary encoding: unknown version, truncated, trailing bytes, corrupt
-- jsonb, a negative length, an invalid topic, a non-string header
SELECT pg_logical_emit_message(true, 'outbox', pg_temp.signed('\x4f01'::bytea)) IS NOT NULL AS ok;
SELECT pg_logical_emit_message(true, 'outbox', pg_temp.signed('\x4f02000000'::bytea)) IS NOT NULL AS ok;
SELECT pg_logical_emit_message(true, 'outbox', pg_temp.signed(
    '\x4f02'::bytea || int8send(0) || '\x00'::bytea || int4send(1) ||
    int4send(1) || 't'::bytea || int4send(-1) || int4send(-1) || int4send(-1) ||
    '\xff'::bytea)) IS NOT NULL AS ok;
SELECT pg_logical_emit_message(true, 'outbox', pg_temp.signed(
    '\x4f02'::bytea || int8send(0) || '\x00'::bytea || int4send(1) ||
    int4send(1) || 't'::bytea || int4send(-1) || int4send(4) || '\xffffffff'::bytea ||
    int4send(-1))) IS NOT NULL AS ok;
SELECT pg_logical_emit_message(true, 'outbox', pg_temp.signed(
    '\x4f02'::bytea || int8send(0) || '\x00'::bytea || int4send(1) ||
    int4send(1) || 't'::bytea || int4send(-1) || int4send(4) || '\x20000020'::bytea ||
    int4send(-1))) IS NOT NULL AS ok;
SELECT pg_logical_emit_message(true, 'outbox', pg_temp.signed(
    '\x4f02'::bytea || int8send(0) || '\x00'::bytea || int4send(1) ||
    int4send(1) || 't'::bytea || int4send(-2) || int4send(-1) || int4send(-1)))
    IS NOT NULL AS ok;
SELECT pg_logical_emit_message(true, 'outbox', pg_temp.signed(
    '\x4f02'::bytea || int8send(0) || '\x00'::bytea || int4send(1) ||
    int4send(2) || '..'::bytea || int4send(-1) || int4send(-1) || int4send(-1)))
    IS NOT NULL AS ok;
-- the same bytes without the corruption, signed: a valid event, with a
-- null payload and headers
SELECT pg_logical_emit_message(true, 'outbox', pg_temp.signed(
    '\x4f02'::bytea || int8send(7) || '\x01'::bytea || int4send(2) ||
    int4send(1) || 't'::bytea || int4send(-1) || int4send(-1) || int4send(-1)))
    IS NOT NULL AS ok;
-- ... but not with a code made for another transaction
SELECT pg_logical_emit_message(true, 'outbox',
    '\x4f02'::bytea || int8send(8) || '\x01'::bytea || int4send(2) ||
    int4send(1) || 't'::bytea || int4send(-1) || int4send(-1) || int4send(-1) ||
    hmac(int8send(txid_current() + 1) ||
         '\x4f02'::bytea || int8send(8) || '\x01'::bytea || int4send(2) ||
         int4send(1) || 't'::bytea || int4send(-1) || int4send(-1) || int4send(-1),
         (SELECT key FROM outbox._message_key), 'sha256'))
    IS NOT NULL AS ok;
-- ... nor with one made for this xid in the next epoch (a message captured
-- now and replayed after xid wraparound), nor with the 32-bit form of
-- releases before 0.5.0
SELECT pg_logical_emit_message(true, 'outbox',
    '\x4f02'::bytea || int8send(9) || '\x01'::bytea || int4send(2) ||
    int4send(1) || 't'::bytea || int4send(-1) || int4send(-1) || int4send(-1) ||
    hmac(int8send(txid_current() + 4294967296) ||
         '\x4f02'::bytea || int8send(9) || '\x01'::bytea || int4send(2) ||
         int4send(1) || 't'::bytea || int4send(-1) || int4send(-1) || int4send(-1),
         (SELECT key FROM outbox._message_key), 'sha256'))
    IS NOT NULL AS ok;
SELECT pg_logical_emit_message(true, 'outbox',
    '\x4f02'::bytea || int8send(10) || '\x01'::bytea || int4send(2) ||
    int4send(1) || 't'::bytea || int4send(-1) || int4send(-1) || int4send(-1) ||
    hmac(substring(int8send(txid_current() % 4294967296) FROM 5) ||
         '\x4f02'::bytea || int8send(10) || '\x01'::bytea || int4send(2) ||
         int4send(1) || 't'::bytea || int4send(-1) || int4send(-1) || int4send(-1),
         (SELECT key FROM outbox._message_key), 'sha256'))
    IS NOT NULL AS ok;
SELECT outbox.enqueue('after-the-bad-ones', NULL, '{}') IS NOT NULL AS ok;
COMMIT;
-- Each WARNING says why, in its DETAIL.
\set VERBOSITY default
SELECT event FROM pg_temp.events();
\set VERBOSITY terse

SELECT pg_drop_replication_slot('decoder_emit');
DROP EXTENSION pgcrypto;
DROP EXTENSION outbox;
