/*
 * outbox 0.4.0 -> 0.5.0
 *
 * Exactly-once and the verdict loop hardened (issue 23).  Every block added
 * to src/sql/outbox.sql for 0.5.0 is repeated here verbatim, so that an
 * updated installation equals a fresh one (sql/upgrade.sql checks it).
 */

\echo Use "ALTER EXTENSION outbox UPDATE TO '0.5.0'" to load this file. \quit

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
