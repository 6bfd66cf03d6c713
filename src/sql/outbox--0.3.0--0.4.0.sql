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
-- 0.4.0 (issue 10): scheduled redelivery and expiry, retention.
-- This block is repeated verbatim in outbox--0.3.0--0.4.0.sql.  See
-- docs/relay.md, "Scheduled redelivery" and "Retention".
-- ===========================================================================

-- A message that had max_attempts publications, has no verdict, and was
-- last published at least older_than ago is expired: redelivery gives up on
-- it and says so here (and in outbox.relay_status.expired).  Set once; a
-- later verdict still applies (the column then records that it came late);
-- a redeliver() with a larger max_attempts, or a redrive(), publishes the
-- message again and clears it.  Retention keeps expired rows until they
-- get a confirmed verdict.
ALTER TABLE outbox.messages ADD COLUMN expired_at timestamptz;

COMMENT ON COLUMN outbox.messages.expired_at IS
    'when redelivery gave up on the message: max_attempts publications and no verdict';

-- One pass of redelivery over the rows with ids above after_id (all rows
-- when null), at most max_rows of them (all when null), in id order: rows
-- due are published again (attempts < max_attempts) or expired (no verdict,
-- attempts >= max_attempts, not yet expired).  Due means: no verdict (or a
-- failed one, with include_failed), last published at least older_than ago,
-- and no dead letter (those are for redrive()).  Rows another session holds
-- are skipped.  last_id is the largest id handled (after_id when none), for
-- the next batch.  Shared by redeliver() (one unbounded batch, failed
-- verdicts included) and the relay's schedule (bounded batches, one
-- transaction each, unanswered rows only).  Not SECURITY DEFINER: only the
-- extension's owner (the relay, redeliver()) may call it.
CREATE FUNCTION outbox._redeliver_batch(older_than interval, max_attempts integer,
                                        include_failed boolean,
                                        after_id bigint, max_rows integer,
                                        OUT redelivered bigint,
                                        OUT expired bigint,
                                        OUT last_id bigint)
    RETURNS record
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    m record;
BEGIN
    redelivered := 0;
    expired := 0;
    last_id := after_id;
    FOR m IN
        WITH due AS (
            SELECT s.id, s.attempts < max_attempts AS publish
              FROM outbox.messages s
             WHERE (s.confirm_status IS NULL
                    OR (include_failed AND s.confirm_status = 'failed'))
               AND s.published_at <= pg_catalog.now() - older_than
               AND (after_id IS NULL OR s.id > after_id)
               AND (s.attempts < max_attempts
                    OR (s.confirm_status IS NULL AND s.expired_at IS NULL))
               AND NOT EXISTS (SELECT 1 FROM outbox.dead_letters d
                                WHERE d.message_id = s.id)
             ORDER BY s.id
             LIMIT max_rows
               FOR UPDATE OF s SKIP LOCKED
        ), done AS (
            UPDATE outbox.messages u
               SET attempts = CASE WHEN due.publish THEN u.attempts + 1
                                   ELSE u.attempts END,
                   published_at = CASE WHEN due.publish THEN pg_catalog.now()
                                       ELSE u.published_at END,
                   published_xid = CASE WHEN due.publish
                                        THEN pg_catalog.pg_current_xact_id()
                                        ELSE u.published_xid END,
                   confirmed_at = CASE WHEN due.publish THEN NULL
                                       ELSE u.confirmed_at END,
                   confirm_status = CASE WHEN due.publish THEN NULL
                                         ELSE u.confirm_status END,
                   confirm_detail = CASE WHEN due.publish THEN NULL
                                         ELSE u.confirm_detail END,
                   expired_at = CASE WHEN due.publish THEN NULL
                                     ELSE pg_catalog.now() END
              FROM due
             WHERE u.id = due.id
            RETURNING u.id, due.publish, u.attempts, u.topic, u.key, u.payload,
                      u.headers
        )
        SELECT * FROM done ORDER BY done.id
    LOOP
        IF m.publish THEN
            PERFORM outbox._emit_stored(m.id, m.attempts, m.topic, m.key,
                                        m.payload, m.headers);
            redelivered := redelivered + 1;
        ELSE
            expired := expired + 1;
        END IF;
        last_id := m.id;
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION outbox.redeliver(older_than interval DEFAULT '5 minutes',
                                            max_attempts integer DEFAULT 10)
    RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
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
    RETURN (SELECT b.redelivered
              FROM outbox._redeliver_batch(older_than, max_attempts, true,
                                           NULL, NULL) AS b);
END;
$$;

-- redrive() also clears expired_at: the message is published again.
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
               confirm_detail = NULL,
               expired_at = NULL
         WHERE m.id = d.message_id
        RETURNING m.attempts INTO attempt;
        attempt := COALESCE(attempt, 1);  -- the row may have been purged
    END IF;
    PERFORM outbox._emit_stored(d.message_id, attempt,
                                d.topic, d.key, d.payload, d.headers);
    RETURN true;
END;
$$;

-- One batch of retention, as the relay runs it (src/schedule.c): deletes,
-- among the rows with ids above after_id (in id order, at most max_rows
-- examined), those created at least older_than ago that Kafka acknowledged
-- (the delivery watermark covers their last publication) and that have a
-- confirmed verdict, or no verdict (and no expiry) when keep_unanswered is
-- false; rows with a failed verdict or a dead letter stay.  Stops at the first
-- row younger than older_than.  last_id is the last id examined; done is
-- true when the pass reached young rows or the end of the table.  For tests
-- and inspection; only the extension's owner may call it.
CREATE FUNCTION outbox._retention_batch(older_than interval,
                                        keep_unanswered boolean,
                                        after_id bigint, max_rows integer,
                                        OUT deleted bigint, OUT last_id bigint,
                                        OUT done boolean)
    RETURNS record
    LANGUAGE C
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'outbox_retention_batch_sql';

REVOKE ALL ON FUNCTION outbox._redeliver_batch(interval, integer, boolean, bigint, integer),
                       outbox._retention_batch(interval, boolean, bigint, integer)
    FROM PUBLIC;

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
