/*
 * outbox 0.2.0 -> 0.3.0
 *
 * Slot-loss recovery (issue 9): the delivery watermark the relay keeps in
 * outbox.relay_watermark, and relay_status.replay_left, the rows the relay
 * still has to publish while it recovers.  The updated relay writes its
 * first watermark once it has delivered an event; until then a lost slot
 * makes it publish every unanswered row of outbox.messages again.
 */

\echo Use "ALTER EXTENSION outbox UPDATE TO '0.3.0'" to load this file. \quit

-- relay_status gains replay_left.
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
    OUT started_at timestamptz)
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
           s.errors,
           s.last_error,
           s.last_error_at,
           s.started_at
      FROM outbox._relay_status() s
      LEFT JOIN pg_catalog.pg_replication_slots r ON r.slot_name = s.slot_name;

REVOKE ALL ON FUNCTION outbox._relay_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox._relay_status() TO pg_monitor;
GRANT SELECT ON outbox.relay_status TO pg_monitor;

-- ===========================================================================
-- 0.3.0 (issue 9): the delivery watermark, for recovery after slot loss.
-- This block is repeated verbatim in outbox--0.2.0--0.3.0.sql.
-- ===========================================================================

-- Written only by the relay, at most once a second while it delivers: every
-- row of outbox.messages whose inserting (or last updating) transaction is
-- visible in `snapshot` has been acknowledged by Kafka.  The snapshot was
-- taken when the WAL ended at `lsn`, and the slot had confirmed past `lsn`
-- when the row was written.  When the relay creates a slot (the first one,
-- or after the last was dropped, invalidated or left behind by a failover)
-- it records the slot's initial snapshot in `replay_snapshot`: the rows
-- visible there and not in `snapshot` are published again before the relay
-- streams from the new slot (docs/relay.md, "Slot loss").  Not dumped:
-- transaction ids mean nothing in another cluster, and a watermark of
-- another system (system_identifier) is ignored.
CREATE TABLE outbox.relay_watermark (
    one_row boolean PRIMARY KEY DEFAULT true CHECK (one_row),
    system_identifier bigint NOT NULL,
    slot_name name NOT NULL,
    snapshot pg_catalog.pg_snapshot,
    lsn pg_catalog.pg_lsn,
    replay_snapshot pg_catalog.pg_snapshot,
    replay_lsn pg_catalog.pg_lsn,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

REVOKE ALL ON outbox.relay_watermark FROM PUBLIC;
GRANT SELECT ON outbox.relay_watermark TO pg_monitor;
