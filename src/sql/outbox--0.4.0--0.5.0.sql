/*
 * outbox 0.4.0 -> 0.5.0
 *
 * Exactly-once and the verdict loop hardened (issue 23).  Every block added
 * to src/sql/outbox.sql for 0.5.0 is repeated here verbatim, so that an
 * updated installation equals a fresh one (sql/upgrade.sql checks it).
 */

\echo Use "ALTER EXTENSION outbox UPDATE TO '0.5.0'" to load this file. \quit

-- 0.5.0 (issue 23): the message key out of reach.  Row-level security
-- without a policy hides the key row from every role but the owner,
-- superusers and BYPASSRLS roles (pg_read_all_data does not bypass it); the
-- extension's C code reads the table with systable scans, which RLS does not
-- affect.  Column xid_bits = 64 says that the authentication code binds the
-- full 64-bit transaction id, epoch included, so a captured message cannot
-- be replayed after xid wraparound (a key table without it, from 0.4.0 or
-- before, binds the 32-bit xid: src/msgauth.c).  A new key is written by C
-- code that leaves it out of logical decoding (HEAP_INSERT_NO_LOGICAL);
-- messages written before an update are still checked, by the decoder,
-- with the key and form their own transaction saw.
ALTER TABLE outbox._message_key
    ADD COLUMN xid_bits smallint NOT NULL DEFAULT 64 CHECK (xid_bits = 64);
ALTER TABLE outbox._message_key ENABLE ROW LEVEL SECURITY;

CREATE FUNCTION outbox._make_message_key() RETURNS void
    LANGUAGE C VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'outbox_make_message_key';
REVOKE ALL ON FUNCTION outbox._make_message_key() FROM PUBLIC;

DELETE FROM outbox._message_key;
SELECT outbox._make_message_key();
