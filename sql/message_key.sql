--
-- message_key: the key of the messages' authentication code is out of reach
-- of pg_read_all_data and of every logical decoding client; what
-- pg_read_server_files can still do; messages written before the update to
-- 0.5.0 are still checked, with the key and form their transaction saw.
--
\set VERBOSITY terse
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS outbox;
RESET client_min_messages;

-- A decoding client that was there before the extension was created.
SELECT 'init' FROM pg_create_logical_replication_slot('message_key_td', 'test_decoding');
CREATE EXTENSION outbox;
SELECT encode(key, 'hex') AS key1 FROM outbox._message_key \gset
SELECT 'init' FROM pg_create_logical_replication_slot('message_key', 'outbox');

-- It sees no change of outbox._message_key, so not the key.
CREATE TABLE pg_temp.decoded AS
  SELECT data FROM pg_logical_slot_get_changes('message_key_td', NULL, NULL);
SELECT count(*) > 0 AS decoded_the_installation FROM pg_temp.decoded;
SELECT data FROM pg_temp.decoded WHERE data LIKE '%_message_key%';
SELECT count(*) AS key_seen FROM pg_temp.decoded WHERE data LIKE '%' || :'key1' || '%';

-- Nor after a rotation (delete the key, write a new one; emit() uses it).
DELETE FROM outbox._message_key;
SELECT outbox._make_message_key();
SELECT encode(key, 'hex') AS key2 FROM outbox._message_key \gset
SELECT :'key1' <> :'key2' AS rotated, xid_bits FROM outbox._message_key;
SELECT data FROM pg_logical_slot_get_changes('message_key_td', NULL, NULL)
 WHERE data LIKE '%' || :'key2' || '%';
SELECT outbox.emit('rotated', 'k', '{}') IS NOT NULL AS ok;
SELECT data::jsonb->>'topic' AS topic
  FROM pg_logical_slot_get_changes('message_key', NULL, NULL);
-- Only the owner makes a key, and only when there is none.
SELECT outbox._make_message_key();

-- pg_read_all_data may SELECT the table, but row-level security hides the
-- row; BYPASSRLS with pg_read_all_data sees it, as a superuser does.
CREATE ROLE regress_mk_reader IN ROLE pg_read_all_data;
CREATE ROLE regress_mk_bypass BYPASSRLS IN ROLE pg_read_all_data;
SET ROLE regress_mk_reader;
SELECT count(*) AS rows_read_all_data_sees FROM outbox._message_key;
SELECT outbox._make_message_key();
RESET ROLE;
SET ROLE regress_mk_bypass;
SELECT count(*) AS rows_bypassrls_sees FROM outbox._message_key;
RESET ROLE;

-- pg_read_server_files cannot SELECT it, but reads every file the server
-- can (here with the EXECUTE on pg_read_binary_file() that it is usually
-- given with), the table's data file included: like a superuser, it can
-- read the key (documented in docs/sql-api.md).
CREATE ROLE regress_mk_files IN ROLE pg_read_server_files;
GRANT USAGE ON SCHEMA outbox TO regress_mk_files;
GRANT EXECUTE ON FUNCTION pg_read_binary_file(text) TO regress_mk_files;
SELECT pg_relation_filepath('outbox._message_key') AS key_file \gset
CHECKPOINT;
SET ROLE regress_mk_files;
SELECT count(*) FROM outbox._message_key;
SELECT position(decode(:'key2', 'hex') IN pg_read_binary_file(:'key_file')) > 0
       AS files_role_reads_raw_file;
RESET ROLE;
REVOKE USAGE ON SCHEMA outbox FROM regress_mk_files;
REVOKE EXECUTE ON FUNCTION pg_read_binary_file(text) FROM regress_mk_files;
DROP ROLE regress_mk_reader, regress_mk_bypass, regress_mk_files;

SELECT pg_drop_replication_slot('message_key');
DROP EXTENSION outbox;

-- The update from 0.4.0 writes a new key, of the 64-bit form; a message
-- emitted before it, still in the WAL, is checked with the old key and the
-- 32-bit form; one forged after it with the old key is refused.
CREATE EXTENSION outbox VERSION '0.4.0';
CREATE EXTENSION pgcrypto;
SELECT 'init' FROM pg_create_logical_replication_slot('message_key', 'outbox');
SELECT key AS old_key FROM outbox._message_key \gset
SELECT outbox.emit('before-update', 'k', '{}') IS NOT NULL AS ok;
ALTER EXTENSION outbox UPDATE TO '0.5.0';
SELECT key <> :'old_key'::bytea AS new_key, xid_bits FROM outbox._message_key;
SELECT outbox.emit('after-update', 'k', '{}') IS NOT NULL AS ok;
SELECT pg_logical_emit_message(true, 'outbox',
    '\x4f02'::bytea || int8send(0) || '\x00'::bytea || int4send(1) ||
    int4send(6) || 'forged'::bytea || int4send(-1) || int4send(-1) || int4send(-1) ||
    hmac(substring(int8send(txid_current() % 4294967296) FROM 5) ||
         '\x4f02'::bytea || int8send(0) || '\x00'::bytea || int4send(1) ||
         int4send(6) || 'forged'::bytea || int4send(-1) || int4send(-1) || int4send(-1),
         :'old_key'::bytea, 'sha256'))
    IS NOT NULL AS ok;
SELECT data::jsonb->>'topic' AS topic
  FROM pg_logical_slot_get_changes('message_key', NULL, NULL);

SELECT pg_drop_replication_slot('message_key');
SELECT pg_drop_replication_slot('message_key_td');
DROP EXTENSION pgcrypto;
DROP EXTENSION outbox;
