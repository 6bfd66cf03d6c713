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
 ORDER BY 1;
DROP EXTENSION outbox;
SELECT count(*) AS leftover_schemas FROM pg_namespace WHERE nspname = 'outbox';
