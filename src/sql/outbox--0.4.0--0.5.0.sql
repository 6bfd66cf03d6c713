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

-- 0.5.0 (issue 23): relay_status shows the librdkafka version the relay
-- runs with (point 9) and a slot of the relay's plugin and database that it
-- does not use, retaining WAL (point 10).  (src/sql/outbox.sql defines the
-- new function and view in place.)
DROP VIEW outbox.relay_status;
DROP FUNCTION outbox._relay_status();

CREATE FUNCTION outbox._relay_status(
    OUT pid integer,
    OUT state text,
    OUT slot_name text,
    OUT database text,
    OUT confirmed_lsn pg_lsn,
    OUT decoded_lsn pg_lsn,
    OUT delivered bigint,
    OUT in_flight bigint,
    OUT replay_left bigint,
    OUT dead_lettered bigint,
    OUT errors bigint,
    OUT last_error text,
    OUT last_error_at timestamptz,
    OUT last_delivered_commit_time timestamptz,
    OUT oldest_in_flight_commit_time timestamptz,
    OUT started_at timestamptz,
    OUT replies_applied bigint,
    OUT replies_rejected bigint,
    OUT redelivered bigint,
    OUT expired bigint,
    OUT purged bigint,
    OUT librdkafka_version text,
    OUT unused_slot text)
    RETURNS SETOF record
    LANGUAGE C
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'outbox_relay_status';

CREATE VIEW outbox.relay_status AS
    SELECT s.pid,
           s.state,
           s.slot_name,
           s.database,
           s.confirmed_lsn,
           s.decoded_lsn,
           -- on a standby (a synchronised failover slot) from the WAL replayed
           CASE WHEN r.restart_lsn IS NOT NULL
                THEN pg_catalog.pg_wal_lsn_diff(
                         CASE WHEN pg_catalog.pg_is_in_recovery()
                              THEN pg_catalog.pg_last_wal_replay_lsn()
                              ELSE pg_catalog.pg_current_wal_lsn() END,
                         r.restart_lsn)::bigint
           END AS wal_retained_bytes,
           s.delivered,
           s.last_delivered_commit_time,
           CASE WHEN s.oldest_in_flight_commit_time IS NOT NULL
                THEN pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()
                                           - s.oldest_in_flight_commit_time)
                ELSE 0
           END::double precision AS lag_seconds,
           s.in_flight,
           s.replay_left,
           s.dead_lettered,
           s.replies_applied,
           s.replies_rejected,
           s.redelivered,
           s.expired,
           s.purged,
           s.errors,
           s.last_error,
           s.last_error_at,
           s.started_at,
           s.librdkafka_version,
           s.unused_slot
      FROM outbox._relay_status() s
      LEFT JOIN pg_catalog.pg_replication_slots r ON r.slot_name = s.slot_name
     ORDER BY s.database;

REVOKE ALL ON FUNCTION outbox._relay_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox._relay_status() TO pg_monitor;
GRANT SELECT ON outbox.relay_status TO pg_monitor;

-- ===========================================================================
-- 0.5.0 (issue 23): progress records and event identity bound to this
-- history; the relay's own topics reserved.
-- This block is repeated verbatim in outbox--0.4.0--0.5.0.sql.
-- ===========================================================================

-- The incarnation of this data directory's history ($PGDATA/pg_outbox/
-- incarnation, drawn again in a copy, after a promotion or a point-in-time
-- restore): what exactly-once progress records and the installation row
-- are bound to.  Superuser only.
CREATE FUNCTION outbox._incarnation() RETURNS text
    LANGUAGE C VOLATILE STRICT
    AS 'MODULE_PATHNAME', 'outbox_incarnation_sql';
REVOKE ALL ON FUNCTION outbox._incarnation() FROM PUBLIC;

-- The installation row is bound to the system, database and incarnation it
-- was drawn for; the relay re-draws a row bound elsewhere (a template clone,
-- a copied data directory, a promoted standby) before it sends the id.  The
-- id is drawn again here: an installation cloned before 0.5.0 shared it.
ALTER TABLE outbox.installation
    ADD COLUMN system_identifier bigint,
    ADD COLUMN database_oid oid,
    ADD COLUMN incarnation text;

COMMENT ON COLUMN outbox.installation.system_identifier IS
    'system identifier of the cluster the id was drawn in';
COMMENT ON COLUMN outbox.installation.database_oid IS
    'OID of the database the id was drawn in';
COMMENT ON COLUMN outbox.installation.incarnation IS
    'incarnation of the data directory the id was drawn in (pg_outbox/incarnation)';

UPDATE outbox.installation
   SET id = pg_catalog.gen_random_uuid(),
       system_identifier = (SELECT c.system_identifier
                              FROM pg_catalog.pg_control_system() c),
       database_oid = (SELECT d.oid FROM pg_catalog.pg_database d
                        WHERE d.datname = pg_catalog.current_database()),
       incarnation = outbox._incarnation();

-- capture() checks its topic with outbox._check_topic(), which now also
-- refuses outbox.progress_topic and outbox.reply_topic: it reads settings.
ALTER FUNCTION outbox._check_topic(text) STABLE;
