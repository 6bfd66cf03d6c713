/*
 * outbox @EXTVERSION@: the transactional outbox, streamed from the WAL.
 *
 * Every function schema-qualifies what it touches.  SQL and PL/pgSQL
 * functions pin search_path.  C functions that resolve no names under the
 * caller's search_path do not (enqueue() and the capture trigger run only
 * fully qualified statements with parameter types given as OIDs): a SET
 * clause makes every call save and restore the setting, which halves the
 * speed of the per-row validation trigger, of enqueue() and of emit().
 * Nothing but the side-effect-free outbox._check_topic() is executable by
 * PUBLIC: see docs/sql-api.md for the GRANTs an application role needs.
 */

\echo Use "CREATE EXTENSION outbox" to load this file. \quit

-- The schema belongs to the extension, so DROP EXTENSION removes it too.
CREATE SCHEMA outbox;

-- ---------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------

CREATE TABLE outbox.messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic           text NOT NULL,
    key             text,
    payload         jsonb,
    headers         jsonb,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    published_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    attempts        integer NOT NULL DEFAULT 1,
    confirmed_at    timestamptz,
    confirm_status  text,
    confirm_detail  text,
    CONSTRAINT messages_confirm_status_check
        CHECK (confirm_status IN ('confirmed', 'failed')),
    CONSTRAINT messages_attempts_check CHECK (attempts >= 1)
);

COMMENT ON TABLE outbox.messages IS
    'one row per event; the outbox output plugin decodes committed inserts';
COMMENT ON COLUMN outbox.messages.payload IS
    'event value; null is a Kafka tombstone';
COMMENT ON COLUMN outbox.messages.headers IS
    'object of string values, sent as Kafka record headers';
COMMENT ON COLUMN outbox.messages.published_at IS
    'when the event was last published (inserted or redelivered)';
COMMENT ON COLUMN outbox.messages.attempts IS
    'publications made: 1 at insert, plus one per redelivery';
COMMENT ON COLUMN outbox.messages.confirm_status IS
    'consumer verdict: confirmed, failed, or null while none was reported';

CREATE TABLE outbox.dead_letters (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id      bigint,
    topic           text NOT NULL,
    key             text,
    payload         jsonb,
    headers         jsonb,
    lsn             pg_lsn,
    xid             bigint,
    commit_time     timestamptz,
    error_code      text NOT NULL,
    error           text NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    redriven_at     timestamptz,
    redrives        integer NOT NULL DEFAULT 0
);

COMMENT ON TABLE outbox.dead_letters IS
    'events Kafka rejected permanently, with the error; see outbox.redrive()';
COMMENT ON COLUMN outbox.dead_letters.message_id IS
    'outbox.messages id, or null for an event written by outbox.emit()';

-- Let pg_dump keep the rows of both tables.
SELECT pg_catalog.pg_extension_config_dump('outbox.messages', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.messages_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.dead_letters_id_seq', '');

-- ---------------------------------------------------------------------------
-- Validation at insert time
-- ---------------------------------------------------------------------------

-- Runs for every row: no SET clause (see the top of this file).
CREATE FUNCTION outbox.messages_check() RETURNS trigger
    LANGUAGE C
    AS 'MODULE_PATHNAME', 'outbox_messages_check';

CREATE TRIGGER messages_check
    BEFORE INSERT OR UPDATE OF topic, key, payload, headers ON outbox.messages
    FOR EACH ROW EXECUTE FUNCTION outbox.messages_check();

-- Used by capture(), which runs with its caller's rights; granted to PUBLIC
-- below since it only validates its argument.
CREATE FUNCTION outbox._check_topic(topic text) RETURNS void
    LANGUAGE C IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'outbox_check_topic_sql';

-- ---------------------------------------------------------------------------
-- Message authentication
-- ---------------------------------------------------------------------------

-- The key of the HMAC that every logical message written by emit(),
-- redeliver() and redrive() carries (src/msgauth.h): the decoder skips
-- "outbox" messages without a valid code, so pg_logical_emit_message(),
-- which PUBLIC may call, cannot publish anything.  A user catalog table so
-- that the decoder may read it under its historic snapshot; replicated and
-- in base backups like any table; readable by its (superuser) owner only;
-- not dumped, so a restored database gets a key of its own.
CREATE TABLE outbox._message_key (
    key bytea NOT NULL CHECK (pg_catalog.octet_length(key) = 32)
) WITH (user_catalog_table = true);

COMMENT ON TABLE outbox._message_key IS
    'secret key authenticating the extension''s logical messages; never grant access';

-- The key itself is written by outbox._make_message_key(), below (0.5.0,
-- issue 23), so that it is never logically logged.

-- ---------------------------------------------------------------------------
-- Writing events
-- ---------------------------------------------------------------------------

-- C, with a plan prepared once per backend: an SQL function was parsed and
-- planned again in every statement calling it.  SECURITY DEFINER without a
-- SET clause: its one statement names only outbox.messages, qualified, with
-- parameter types given as OIDs, so the caller's search_path resolves
-- nothing (src/sql_api.c).  The messages_check trigger validates the row.
CREATE FUNCTION outbox.enqueue(topic text, key text, payload jsonb,
                               headers jsonb DEFAULT NULL)
    RETURNS bigint
    LANGUAGE C VOLATILE
    SECURITY DEFINER
    AS 'MODULE_PATHNAME', 'outbox_enqueue';

CREATE FUNCTION outbox.emit(topic text, key text, payload jsonb,
                            headers jsonb DEFAULT NULL)
    RETURNS pg_lsn
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'outbox_emit';

-- Re-publishes a stored event through the WAL with its id; internal.
CREATE FUNCTION outbox._emit_stored(id bigint, attempts integer, topic text,
                                    key text, payload jsonb, headers jsonb)
    RETURNS pg_lsn
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'outbox_emit_stored';

-- ---------------------------------------------------------------------------
-- Capture triggers
-- ---------------------------------------------------------------------------

-- Not SECURITY DEFINER: the row is turned into JSON (which can call the
-- table's own types' casts and output functions) with the rights of the
-- role writing the table.  Only the INSERT into outbox.messages runs as the
-- owner of outbox.messages, and it runs nothing but the extension's code.
CREATE FUNCTION outbox.capture_trigger() RETURNS trigger
    LANGUAGE C
    AS 'MODULE_PATHNAME', 'outbox_capture_trigger';

CREATE FUNCTION outbox.capture(rel regclass, topic text,
                               key_columns text[] DEFAULT NULL,
                               events text[] DEFAULT '{insert,update,delete}')
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    ev text;
    col text;
    kinds text[] := '{}';
    kind "char";
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'rel must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = 'capture() attaches a trigger to one table.',
                  HINT = 'Pass the table to capture, for example ''public.orders''.';
    END IF;
    IF topic IS NULL THEN
        RAISE EXCEPTION 'topic must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = 'Every captured row change is published to a Kafka topic.',
                  HINT = 'Pass a Kafka topic name as the second argument.';
    END IF;
    PERFORM outbox._check_topic(topic);

    IF events IS NULL OR pg_catalog.cardinality(events) = 0 THEN
        RAISE EXCEPTION 'events must name at least one of insert, update, delete'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = pg_catalog.format('events is %s.',
                                             COALESCE(events::text, 'null')),
                  HINT = 'Pass a non-empty subset of ''{insert,update,delete}'', or leave it out for all three.';
    END IF;
    FOREACH ev IN ARRAY events LOOP
        IF ev IS NULL OR pg_catalog.lower(ev) NOT IN ('insert', 'update', 'delete') THEN
            RAISE EXCEPTION 'invalid capture event "%"', ev
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'Capture events are insert, update and delete.',
                      HINT = 'Pass a subset of ''{insert,update,delete}''.';
        END IF;
        IF NOT pg_catalog.upper(ev) = ANY (kinds) THEN
            kinds := kinds || pg_catalog.upper(ev);
        END IF;
    END LOOP;

    SELECT c.relkind INTO kind FROM pg_catalog.pg_class c WHERE c.oid = rel;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', rel
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'Only tables and partitioned tables can be captured.',
                  HINT = CASE kind
                      WHEN 'v' THEN 'Capture the tables the view reads from.'
                      WHEN 'm' THEN 'Capture the tables the materialized view reads from.'
                      WHEN 'f' THEN 'Capture the table on the server the foreign table points to.'
                      WHEN 'S' THEN 'A sequence has no row changes to capture; capture the table that uses it.'
                      WHEN 'i' THEN 'Capture the table the index belongs to.'
                      WHEN 'I' THEN 'Capture the table the index belongs to.'
                      ELSE 'Capture a table or a partitioned table.'
                  END;
    END IF;
    IF rel IN ('outbox.messages'::regclass, 'outbox.dead_letters'::regclass)
       OR (SELECT c.relnamespace = 'outbox'::regnamespace
             FROM pg_catalog.pg_class c WHERE c.oid = rel) THEN
        RAISE EXCEPTION 'cannot capture the outbox''s own table %', rel
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The outbox writes these tables itself.',
                  HINT = 'Capture the tables your application writes.';
    END IF;

    IF key_columns IS NOT NULL THEN
        IF pg_catalog.cardinality(key_columns) = 0 THEN
            RAISE EXCEPTION 'key_columns must be null or name at least one column'
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'An empty array would give every event a null key.',
                      HINT = 'Name the key columns, or pass NULL to key events by the primary key.';
        END IF;
        FOREACH col IN ARRAY key_columns LOOP
            IF col IS NULL THEN
                RAISE EXCEPTION 'key_columns must not contain null'
                    USING ERRCODE = 'null_value_not_allowed',
                          DETAIL = pg_catalog.format('key_columns is %s.', key_columns),
                          HINT = 'Name each key column exactly as stored, without quotes.';
            END IF;
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                            WHERE a.attrelid = rel AND a.attname = col
                              AND a.attnum > 0 AND NOT a.attisdropped) THEN
                RAISE EXCEPTION 'column "%" of relation % does not exist', col, rel
                    USING ERRCODE = 'undefined_column',
                          HINT = 'key_columns takes column names exactly as stored, without quotes.';
            END IF;
        END LOOP;
    END IF;

    -- Without key columns the events have a null key: say so once, here.
    IF key_columns IS NULL AND NOT EXISTS (
            SELECT 1 FROM pg_catalog.pg_index i
             WHERE i.indrelid = rel AND i.indisprimary) THEN
        RAISE WARNING 'table % has no primary key: its events will have a null Kafka key', rel
            USING DETAIL = 'Events without a key are spread over the topic''s partitions, so Kafka keeps no per-key order for them.',
                  HINT = 'Pass key_columns to outbox.capture(), or add a primary key and call outbox.capture() again.';
    END IF;

    -- Replace an earlier capture: capture() is idempotent.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                WHERE t.tgrelid = rel AND t.tgname = 'outbox_capture') THEN
        EXECUTE pg_catalog.format('DROP TRIGGER outbox_capture ON %s', rel);
    END IF;
    EXECUTE pg_catalog.format(
        'CREATE TRIGGER outbox_capture AFTER %s ON %s FOR EACH ROW '
        'EXECUTE FUNCTION outbox.capture_trigger(%s)',
        pg_catalog.array_to_string(kinds, ' OR '), rel,
        pg_catalog.array_to_string(
            ARRAY(SELECT pg_catalog.quote_literal(a)
                    FROM pg_catalog.unnest(ARRAY[topic] || COALESCE(key_columns, '{}')) AS a),
            ', '));
END;
$$;

CREATE FUNCTION outbox.uncapture(rel regclass) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'rel must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = 'uncapture() removes the capture trigger of one table.',
                  HINT = 'Pass the captured table, for example ''public.orders''.';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                WHERE t.tgrelid = rel AND t.tgname = 'outbox_capture') THEN
        EXECUTE pg_catalog.format('DROP TRIGGER outbox_capture ON %s', rel);
    END IF;
END;
$$;

-- ---------------------------------------------------------------------------
-- Consumer verdicts, redelivery, housekeeping
-- ---------------------------------------------------------------------------

CREATE FUNCTION outbox.confirm(id bigint, status text DEFAULT 'confirmed',
                               detail text DEFAULT NULL)
    RETURNS boolean
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF status IS NULL OR status NOT IN ('confirmed', 'failed') THEN
        RAISE EXCEPTION 'invalid confirm status "%"', status
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A consumer reports either confirmed or failed.',
                  HINT = 'Use outbox.confirm(id) or outbox.confirm(id, ''failed'', detail).';
    END IF;
    UPDATE outbox.messages m
       SET confirmed_at = pg_catalog.now(),
           confirm_status = confirm.status,
           confirm_detail = confirm.detail
     WHERE m.id = confirm.id;
    RETURN FOUND;
END;
$$;

CREATE FUNCTION outbox.redeliver(older_than interval DEFAULT '5 minutes',
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

CREATE FUNCTION outbox.purge(older_than interval) RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n bigint;
BEGIN
    IF older_than IS NULL OR older_than < '0'::interval THEN
        RAISE EXCEPTION 'older_than must be a non-negative interval'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = pg_catalog.format('older_than is %s.',
                                             COALESCE(older_than::text, 'null')),
                  HINT = 'Pass how long confirmed messages are kept, for example ''7 days''.';
    END IF;
    DELETE FROM outbox.messages m
     WHERE m.confirm_status = 'confirmed'
       AND m.confirmed_at <= pg_catalog.now() - older_than;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

CREATE FUNCTION outbox.redrive(id bigint) RETURNS boolean
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

-- ---------------------------------------------------------------------------
-- Relay status
-- ---------------------------------------------------------------------------

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

-- ---------------------------------------------------------------------------
-- Index for purge() (issue 6, point 13)
-- ---------------------------------------------------------------------------

-- purge() deletes confirmed rows by confirmed_at.  New rows have no verdict
-- and never enter this partial index, so writing events pays only the
-- evaluation of its predicate.  There is deliberately no index for
-- redeliver(): every new row would enter it (see docs/sql-api.md for the
-- measured cost and the statement to create one).
CREATE INDEX messages_confirmed_idx ON outbox.messages (confirmed_at)
    WHERE confirm_status = 'confirmed';

-- ---------------------------------------------------------------------------
-- Guard of the event columns (issue 6, point 15)
-- ---------------------------------------------------------------------------

-- The output plugin reads id, topic, key, payload, headers and attempts of
-- outbox.messages with fixed types; a row of a table where one of them is
-- missing or of another type cannot be decoded (and is skipped with a
-- WARNING).  This event trigger refuses such an ALTER TABLE, and renaming
-- or moving the table, instead.
CREATE FUNCTION outbox._guard_messages() RETURNS event_trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    touched boolean;
    msgs oid;
    problem text;
BEGIN
    -- Fires for every ALTER TABLE in the database, as the role running it:
    -- plain catalog reads only, no lookups that need USAGE on schema outbox.
    SELECT true INTO touched
      FROM pg_catalog.pg_event_trigger_ddl_commands() c
      JOIN pg_catalog.pg_depend d
        ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
       AND d.objid = c.objid AND d.objsubid = 0 AND d.deptype = 'e'
       AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
      JOIN pg_catalog.pg_extension e
        ON e.oid = d.refobjid AND e.extname = 'outbox'
     WHERE c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
     LIMIT 1;
    IF touched IS NULL THEN
        RETURN;                 -- not a table of the extension
    END IF;
    SELECT r.oid INTO msgs
      FROM pg_catalog.pg_class r
      JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
     WHERE n.nspname = 'outbox' AND r.relname = 'messages';
    IF msgs IS NULL THEN
        RAISE EXCEPTION 'cannot rename or move table outbox.messages'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'The outbox output plugin decodes inserts into the table outbox.messages only.',
                  HINT = 'Leave the tables of the outbox extension where they are.';
    END IF;
    SELECT pg_catalog.string_agg(
               CASE WHEN a.attname IS NULL
                    THEN pg_catalog.format('column "%s" %s is missing', w.name, w.type)
                    ELSE pg_catalog.format('column "%s" has type %s, not %s', w.name,
                                           pg_catalog.format_type(a.atttypid, NULL), w.type)
               END, '; ' ORDER BY w.ord)
      INTO problem
      FROM (VALUES (1, 'id', 'bigint'::pg_catalog.regtype),
                   (2, 'topic', 'text'::pg_catalog.regtype),
                   (3, 'key', 'text'::pg_catalog.regtype),
                   (4, 'payload', 'jsonb'::pg_catalog.regtype),
                   (5, 'headers', 'jsonb'::pg_catalog.regtype),
                   (6, 'attempts', 'integer'::pg_catalog.regtype)) AS w(ord, name, type)
      LEFT JOIN pg_catalog.pg_attribute a
        ON a.attrelid = msgs AND a.attname = w.name
       AND a.attnum > 0 AND NOT a.attisdropped
     WHERE a.atttypid IS DISTINCT FROM w.type;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'cannot change the event columns of outbox.messages'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = pg_catalog.format('After this command %s; the output plugin could not decode the table''s rows.', problem),
                  HINT = 'Keep id bigint, topic text, key text, payload jsonb, headers jsonb and attempts integer; other columns may be added.';
    END IF;
END;
$$;

CREATE EVENT TRIGGER outbox_guard_messages ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION outbox._guard_messages();
-- Also while session_replication_role = replica.
ALTER EVENT TRIGGER outbox_guard_messages ENABLE ALWAYS;

-- ---------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC; see docs/sql-api.md
-- ---------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA outbox FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA outbox FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox._check_topic(text) TO PUBLIC;
GRANT USAGE ON SCHEMA outbox TO pg_monitor;
GRANT SELECT ON outbox.relay_status TO pg_monitor;
GRANT EXECUTE ON FUNCTION outbox._relay_status() TO pg_monitor;

-- ===========================================================================
-- 0.2.0 (issue 13): installation identity, one dead letter per event.
-- This block is repeated verbatim in outbox--0.1.0--0.2.0.sql.
-- ===========================================================================

-- The installation's identity: a random uuid drawn by CREATE EXTENSION (and
-- by the update to 0.2.0).  The relay sends it with every record as header
-- outbox-source, so that (outbox-source, outbox-id) identifies an event
-- across DROP/CREATE EXTENSION, databases and clusters.  Deliberately not
-- registered with pg_extension_config_dump: a restore (which runs CREATE
-- EXTENSION) is a new source; pg_upgrade and physical replicas keep it.
-- A user catalog table, so that the relay can read it while decoding, under
-- the historic snapshot of the transaction it decodes.
CREATE TABLE outbox.installation (
    id          uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    one_row     boolean NOT NULL DEFAULT true,
    CONSTRAINT installation_pkey PRIMARY KEY (id),
    CONSTRAINT installation_one_row UNIQUE (one_row),
    CONSTRAINT installation_one_row_check CHECK (one_row)
) WITH (user_catalog_table = true);

COMMENT ON TABLE outbox.installation IS
    'identity of this installation, sent as Kafka header outbox-source';

INSERT INTO outbox.installation DEFAULT VALUES;

CREATE VIEW outbox.source AS
    SELECT i.id AS installation_id,
           c.system_identifier,
           pg_catalog.current_database()::text AS database,
           i.created_at
      FROM outbox.installation i,
           pg_catalog.pg_control_system() c;

COMMENT ON VIEW outbox.source IS
    'where this database''s events come from: outbox-source header value, cluster, database';

-- Dead letters: one per event.  failures counts Kafka's rejections of the
-- event (the first one and each failed redrive); redriven_xid is the
-- (32-bit) id of the transaction of the last redrive().
ALTER TABLE outbox.dead_letters
    ADD COLUMN failures integer NOT NULL DEFAULT 1,
    ADD COLUMN redriven_xid bigint;

COMMENT ON COLUMN outbox.dead_letters.failures IS
    'how often Kafka rejected the event: 1, plus one per failed redrive';

-- Dead letters written before 0.2.0 may repeat a message: keep the first
-- row of each message, with the count, the redrives and the latest error.
-- (Nothing to do in a new installation.)
WITH g AS (
    SELECT d.message_id, min(d.id) AS keep, count(*)::integer AS n,
           sum(d.redrives)::integer AS redrives, max(d.redriven_at) AS redriven_at,
           max(d.id) AS newest
      FROM outbox.dead_letters d
     WHERE d.message_id IS NOT NULL
     GROUP BY d.message_id
    HAVING count(*) > 1
)
UPDATE outbox.dead_letters k
   SET failures = g.n, redrives = g.redrives, redriven_at = g.redriven_at,
       lsn = l.lsn, xid = l.xid, commit_time = l.commit_time,
       error_code = l.error_code, error = l.error, failed_at = l.failed_at
  FROM g, outbox.dead_letters l
 WHERE k.id = g.keep AND l.id = g.newest;
DELETE FROM outbox.dead_letters d
 USING (SELECT x.message_id, min(x.id) AS keep FROM outbox.dead_letters x
         WHERE x.message_id IS NOT NULL GROUP BY x.message_id) g
 WHERE d.message_id = g.message_id AND d.id <> g.keep;

CREATE UNIQUE INDEX dead_letters_message_id_key
    ON outbox.dead_letters (message_id) WHERE message_id IS NOT NULL;

-- BEFORE INSERT trigger of outbox.dead_letters: a renewed failure of an
-- event that already has a dead letter updates that row (failures + 1, the
-- new error and position) instead of adding one.  The same event is
-- recognised by its message id, or, for an emitted event (no id), by its
-- content together with its commit position or with the transaction that
-- redrove it.  Writers keep writing plain INSERTs.
CREATE FUNCTION outbox._dead_letters_merge() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    found_id bigint;
BEGIN
    IF NEW.message_id IS NOT NULL THEN
        SELECT d.id INTO found_id FROM outbox.dead_letters d
         WHERE d.message_id = NEW.message_id
           FOR UPDATE;
    ELSE
        SELECT d.id INTO found_id FROM outbox.dead_letters d
         WHERE d.message_id IS NULL
           AND d.topic = NEW.topic
           AND d.key IS NOT DISTINCT FROM NEW.key
           AND d.payload IS NOT DISTINCT FROM NEW.payload
           AND d.headers IS NOT DISTINCT FROM NEW.headers
           AND ((d.lsn = NEW.lsn AND d.xid = NEW.xid)
                OR (d.redriven_xid = NEW.xid AND d.redriven_at >= d.failed_at))
         ORDER BY d.id
         LIMIT 1
           FOR UPDATE;
    END IF;
    IF found_id IS NULL THEN
        RETURN NEW;
    END IF;
    UPDATE outbox.dead_letters d
       SET failures = d.failures + 1,
           lsn = NEW.lsn,
           xid = NEW.xid,
           commit_time = NEW.commit_time,
           error_code = NEW.error_code,
           error = NEW.error,
           failed_at = COALESCE(NEW.failed_at, pg_catalog.now())
     WHERE d.id = found_id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER dead_letters_merge
    BEFORE INSERT ON outbox.dead_letters
    FOR EACH ROW EXECUTE FUNCTION outbox._dead_letters_merge();

REVOKE ALL ON outbox.installation, outbox.source FROM PUBLIC;
REVOKE ALL ON FUNCTION outbox._dead_letters_merge() FROM PUBLIC;
GRANT SELECT ON outbox.installation, outbox.source TO pg_monitor;

-- ===========================================================================
-- 0.2.0 (issue 12): adopt an existing outbox table (Debezium Outbox Event
-- Router compatibility).  This block is repeated verbatim in
-- outbox--0.1.0--0.2.0.sql.  See docs/adopt.md.
-- ===========================================================================

-- One row per adopted table: the output plugin turns committed INSERTs into
-- it into events, shaped by options (Debezium's EventRouter option names,
-- every option with its effective value).  A user catalog table, so that
-- the plugin may read it under the historic snapshot of each change; only
-- its owner (the superuser who installed the extension) writes it, through
-- adopt() and unadopt(), which check that the caller owns the table.
CREATE TABLE outbox.adopted (
    relid       regclass NOT NULL,
    options     jsonb NOT NULL,
    adopted_by  regrole NOT NULL,
    adopted_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT adopted_pkey PRIMARY KEY (relid)
) WITH (user_catalog_table = true);

COMMENT ON TABLE outbox.adopted IS
    'tables whose committed inserts the outbox output plugin decodes as events; see outbox.adopt()';

SELECT pg_catalog.pg_extension_config_dump('outbox.adopted', '');

-- Not SECURITY DEFINER: the C functions check that the caller owns the table
-- and switch to the owner of outbox.adopted only to write it.
CREATE FUNCTION outbox.adopt(rel regclass, options jsonb DEFAULT '{}')
    RETURNS void
    LANGUAGE C
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'outbox_adopt';

CREATE FUNCTION outbox.unadopt(rel regclass) RETURNS void
    LANGUAGE C
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'outbox_unadopt';

-- A dropped table's adoption goes with it, so that a new table that happens
-- to get the same OID is never adopted by accident.  Runs as the owner of
-- outbox.adopted and nothing but this DELETE.
CREATE FUNCTION outbox._adopted_drop() RETURNS event_trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    DELETE FROM outbox.adopted a
     USING pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
       AND d.objsubid OPERATOR(pg_catalog.=) 0
       AND a.relid::pg_catalog.oid OPERATOR(pg_catalog.=) d.objid;
END;
$$;

CREATE EVENT TRIGGER outbox_adopted_drop ON sql_drop
    EXECUTE FUNCTION outbox._adopted_drop();

REVOKE ALL ON outbox.adopted FROM PUBLIC;
REVOKE ALL ON FUNCTION outbox.adopt(regclass, jsonb),
                       outbox.unadopt(regclass),
                       outbox._adopted_drop() FROM PUBLIC;

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
