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
