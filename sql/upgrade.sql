-- Install the oldest release and update along the chain to the newest.
\set VERBOSITY terse
CREATE EXTENSION outbox VERSION '0.1.0';
SELECT extversion FROM pg_extension WHERE extname = 'outbox';
-- 0.1.0 could write several dead letters for one message (a redrive that
-- failed again); the update to 0.2.0 keeps one per message.
INSERT INTO outbox.dead_letters (message_id, topic, error_code, error, redrives)
VALUES (7, 't', 'E1', 'first', 1), (7, 't', 'E2', 'second', 0),
       (NULL, 't', 'E3', 'emitted', 0), (8, 't', 'E4', 'other', 0);
ALTER EXTENSION outbox UPDATE;
SELECT message_id, error_code, error, failures, redrives
  FROM outbox.dead_letters ORDER BY id;
-- The installation got its identity.
SELECT count(*) AS installations FROM outbox.installation;
SELECT extversion = (SELECT default_version FROM pg_available_extensions
                      WHERE name = 'outbox') AS at_default_version
  FROM pg_extension WHERE extname = 'outbox';
-- Every object the extension owns lives in schema outbox.
SELECT pg_describe_object(classid, objid, 0) AS object
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'outbox')
   AND deptype = 'e'
   -- 17 and later also list each table's and view's row type and its array
   -- type; leave them out so the list is the same on every server.
   AND NOT EXISTS (SELECT FROM pg_type t
                    WHERE classid = 'pg_type'::regclass AND t.oid = objid
                      AND (t.typrelid <> 0 OR t.typelem IN
                           (SELECT oid FROM pg_type WHERE typrelid <> 0)))
 ORDER BY 1;
-- Rows of both tables and their identity sequences are kept by pg_dump.
SELECT unnest(extconfig)::regclass AS dumped FROM pg_extension
 WHERE extname = 'outbox' ORDER BY 1;
-- The updated extension works.
SELECT outbox.enqueue('upgrade', 'k', '{}');
SELECT outbox.emit('upgrade', 'k', '{}') IS NOT NULL AS emitted;
-- The updated schema is the one a new installation gets: functions,
-- columns, constraints, indexes, triggers, views, table options, grants.
CREATE FUNCTION outbox_schema() RETURNS text LANGUAGE sql AS $$
SELECT string_agg(d, E'\n' ORDER BY d) FROM (
    SELECT pg_get_functiondef(p.oid) || coalesce(p.proacl::text, '') AS d
      FROM pg_proc p WHERE p.pronamespace = 'outbox'::regnamespace
    UNION ALL
    SELECT c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || ' ' || a.attnotnull::text || ' ' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), '')
      FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
     WHERE c.relnamespace = 'outbox'::regnamespace
    UNION ALL
    SELECT c.relname || ' ' || c.relkind::text || ' ' || coalesce(c.reloptions::text, '')
           || ' ' || coalesce(c.relacl::text, '')
           || coalesce(' ' || pg_get_viewdef(c.oid), '')
      FROM pg_class c WHERE c.relnamespace = 'outbox'::regnamespace AND c.relkind <> 'i'
    UNION ALL
    SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
      JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'outbox'::regnamespace
    UNION ALL
    SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
     WHERE connamespace = 'outbox'::regnamespace
    UNION ALL
    SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t
      JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace = 'outbox'::regnamespace
) AS x
$$;
SELECT outbox_schema() AS upgraded \gset
DROP EXTENSION outbox;
CREATE EXTENSION outbox;
SELECT outbox_schema() = :'upgraded' AS same_as_new_installation;
DROP FUNCTION outbox_schema();
DROP EXTENSION outbox;
-- The extension creates and owns schema outbox: nothing is left behind.
SELECT count(*) AS leftover_schemas FROM pg_namespace WHERE nspname = 'outbox';
