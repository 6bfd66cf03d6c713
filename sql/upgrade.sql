-- Install the oldest release and update along the chain to the newest.
\set VERBOSITY terse
CREATE EXTENSION outbox VERSION '0.1.0';
SELECT extversion FROM pg_extension WHERE extname = 'outbox';
ALTER EXTENSION outbox UPDATE;
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
DROP EXTENSION outbox;
-- The extension creates and owns schema outbox: nothing is left behind.
SELECT count(*) AS leftover_schemas FROM pg_namespace WHERE nspname = 'outbox';
