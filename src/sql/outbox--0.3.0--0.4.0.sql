/*
 * outbox 0.3.0 -> 0.4.0
 *
 * The consumer loop inside PostgreSQL (issue 10): reply topic, scheduled
 * redelivery and retention.  Every block added to src/sql/outbox.sql for
 * 0.4.0 is repeated here verbatim, so that an updated installation equals
 * a fresh one (sql/upgrade.sql checks it).
 */

\echo Use "ALTER EXTENSION outbox UPDATE TO '0.4.0'" to load this file. \quit

-- relay_status gains the consumer loop's counters and one row per relayed
-- database.
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
    OUT purged bigint)
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
           s.started_at
      FROM outbox._relay_status() s
      LEFT JOIN pg_catalog.pg_replication_slots r ON r.slot_name = s.slot_name
     ORDER BY s.database;

REVOKE ALL ON FUNCTION outbox._relay_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox._relay_status() TO pg_monitor;
GRANT SELECT ON outbox.relay_status TO pg_monitor;


-- ===========================================================================
-- 0.4.0 (issue 10): one relay per database.
-- This block is repeated verbatim in outbox--0.3.0--0.4.0.sql.
-- ===========================================================================

-- With outbox.databases = '*' (the default) the launcher relays every
-- database where the extension is installed.  It cannot read other
-- databases' catalogs, so installing (or updating) the extension tells it,
-- at commit, to start this database's relay.
CREATE FUNCTION outbox._register_database() RETURNS void
    LANGUAGE C
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'outbox_register_database_sql';
REVOKE ALL ON FUNCTION outbox._register_database() FROM PUBLIC;
SELECT outbox._register_database();

-- ===========================================================================
-- 0.4.0 (issue 10): the reply topic.
-- This block is repeated verbatim in outbox--0.3.0--0.4.0.sql.
-- ===========================================================================

-- Written only by the relay (src/reply.c): in each partition of the reply
-- topic (outbox.reply_topic), the offset of the first reply not yet
-- applied.  It is written in the same transaction that applies the
-- verdicts, so a reply is applied exactly once whatever crashes; the relay
-- assigns itself the partitions at these offsets.  Dumped: restored
-- verdicts and positions belong together.
CREATE TABLE outbox.reply_offsets (
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (topic, partition)
);

COMMENT ON TABLE outbox.reply_offsets IS
    'reply topic positions: the next offset to apply per partition, written with the verdicts';

-- Replies the relay could not apply: not JSON, wrong or missing fields, an
-- unknown message id, a database no relay of this cluster serves.  Kept
-- for inspection (key and value cut to 8 kB, bytes that are not text
-- shown as \x and hex); outbox.relay_status counts them.
CREATE TABLE outbox.rejected_replies (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    topic        text NOT NULL,
    partition    integer NOT NULL,
    kafka_offset bigint NOT NULL,
    key          text,
    value        text,
    value_length integer NOT NULL,
    reason       text NOT NULL
);

COMMENT ON TABLE outbox.rejected_replies IS
    'replies from outbox.reply_topic the relay could not apply, with the reason';
COMMENT ON COLUMN outbox.rejected_replies.value_length IS
    'length of the record value in bytes (value keeps at most 8 kB)';

SELECT pg_catalog.pg_extension_config_dump('outbox.reply_offsets', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.rejected_replies', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.rejected_replies_id_seq', '');

REVOKE ALL ON outbox.reply_offsets, outbox.rejected_replies FROM PUBLIC;
GRANT SELECT ON outbox.reply_offsets TO pg_monitor;
