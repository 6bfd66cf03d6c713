/*
 * outbox 0.1.0 -> 0.2.0
 *
 * Security: capture triggers no longer run with the installer's rights, and
 * the extension's logical messages are authenticated (src/msgauth.h).
 * Emitted messages of 0.1.0 carry no authentication code: let the relay
 * deliver every event (relay_status.in_flight = 0 and lag_seconds = 0)
 * before updating, or they are skipped as unauthenticated.
 */

\echo Use "ALTER EXTENSION outbox UPDATE TO '0.2.0'" to load this file. \quit

ALTER FUNCTION outbox.capture_trigger() SECURITY INVOKER;
ALTER FUNCTION outbox.capture_trigger() RESET search_path;

CREATE TABLE outbox._message_key (
    key bytea NOT NULL CHECK (pg_catalog.octet_length(key) = 32)
) WITH (user_catalog_table = true);

COMMENT ON TABLE outbox._message_key IS
    'secret key authenticating the extension''s logical messages; never grant access';

INSERT INTO outbox._message_key (key)
SELECT pg_catalog.decode(pg_catalog.replace(
           pg_catalog.gen_random_uuid()::text OPERATOR(pg_catalog.||)
           pg_catalog.gen_random_uuid()::text, '-', ''), 'hex');

REVOKE ALL ON outbox._message_key FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Write path (issue 6, point 18): enqueue() in C with a plan kept per
-- backend, SECURITY DEFINER without a SET clause (see outbox.sql).
-- ---------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION outbox.enqueue(topic text, key text, payload jsonb,
                                          headers jsonb DEFAULT NULL)
    RETURNS bigint
    LANGUAGE C VOLATILE
    SECURITY DEFINER
    AS 'MODULE_PATHNAME', 'outbox_enqueue';

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

REVOKE ALL ON FUNCTION outbox._guard_messages() FROM PUBLIC;
