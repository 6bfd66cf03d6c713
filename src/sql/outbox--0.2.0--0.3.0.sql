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

-- The transaction that last published a row: its INSERT, or the
-- redeliver() / redrive() that published it again.  Recovery decides by it,
-- not by xmin, which any later UPDATE (a verdict, a column of your own, a
-- table rewrite) changes.  Rows written before 0.3.0 have none; for them
-- xmin is used.
ALTER TABLE outbox.messages ADD COLUMN published_xid pg_catalog.xid8;
ALTER TABLE outbox.messages
    ALTER COLUMN published_xid SET DEFAULT pg_catalog.pg_current_xact_id();

-- redeliver() and redrive() record the publishing transaction.
CREATE OR REPLACE FUNCTION outbox.redeliver(older_than interval DEFAULT '5 minutes',
                                 max_attempts integer DEFAULT 10)
    RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    m record;
    n bigint := 0;
BEGIN
    IF older_than IS NULL OR older_than < '0'::interval THEN
        RAISE EXCEPTION 'older_than must be a non-negative interval'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = pg_catalog.format('older_than is %s.',
                                             COALESCE(older_than::text, 'null')),
                  HINT = 'Pass how long a message stays unconfirmed before it is re-published, for example ''5 minutes''.';
    END IF;
    IF max_attempts IS NULL OR max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = pg_catalog.format('max_attempts is %s; it counts publications, the first being 1.',
                                             COALESCE(max_attempts::text, 'null')),
                  HINT = 'Pass the most publications a message may have, for example 10.';
    END IF;
    -- Rows another session holds are skipped (a concurrent confirm() or
    -- redeliver() is deciding about them); the rest go out in id order.
    FOR m IN
        WITH due AS (
            SELECT s.id FROM outbox.messages s
             WHERE s.confirm_status IS DISTINCT FROM 'confirmed'
               AND s.published_at <= pg_catalog.now() - older_than
               AND s.attempts < max_attempts
               -- a dead-lettered message is left to redrive()
               AND NOT EXISTS (SELECT 1 FROM outbox.dead_letters d
                                WHERE d.message_id = s.id)
               FOR UPDATE SKIP LOCKED
        ), done AS (
            UPDATE outbox.messages u
               SET attempts = u.attempts + 1,
                   published_at = pg_catalog.now(),
                   published_xid = pg_catalog.pg_current_xact_id(),
                   confirmed_at = NULL,
                   confirm_status = NULL,
                   confirm_detail = NULL
              FROM due
             WHERE u.id = due.id
            RETURNING u.id, u.attempts, u.topic, u.key, u.payload, u.headers
        )
        SELECT * FROM done ORDER BY done.id
    LOOP
        PERFORM outbox._emit_stored(m.id, m.attempts, m.topic, m.key,
                                    m.payload, m.headers);
        n := n + 1;
    END LOOP;
    RETURN n;
END;
$$;

CREATE OR REPLACE FUNCTION outbox.redrive(id bigint) RETURNS boolean
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    d record;
    attempt integer := 1;
BEGIN
    -- redriven_xid lets a renewed failure of an emitted event (which has no
    -- message id) find this dead letter: see outbox._dead_letters_merge().
    UPDATE outbox.dead_letters x
       SET redriven_at = pg_catalog.now(), redrives = x.redrives + 1,
           redriven_xid = pg_catalog.txid_current() % 4294967296
     WHERE x.id = redrive.id
    RETURNING x.message_id, x.topic, x.key, x.payload, x.headers INTO d;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF d.message_id IS NOT NULL THEN
        UPDATE outbox.messages m
           SET attempts = m.attempts + 1,
               published_at = pg_catalog.now(),
               published_xid = pg_catalog.pg_current_xact_id(),
               confirmed_at = NULL,
               confirm_status = NULL,
               confirm_detail = NULL
         WHERE m.id = d.message_id
        RETURNING m.attempts INTO attempt;
        attempt := COALESCE(attempt, 1);  -- the row may have been purged
    END IF;
    PERFORM outbox._emit_stored(d.message_id, attempt,
                                d.topic, d.key, d.payload, d.headers);
    RETURN true;
END;
$$;
