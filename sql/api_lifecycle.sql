-- The installation identity (outbox.installation, outbox.source) and the
-- extension's life cycle: DROP EXTENSION with captured tables.
\set VERBOSITY terse
CREATE EXTENSION outbox;

-- One installation row, a uuid, drawn by CREATE EXTENSION.
SELECT count(*) AS installations,
       bool_and(id::text ~ '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$') AS random_uuid
  FROM outbox.installation;
-- outbox.source names it with the cluster and the database.
SELECT s.installation_id = i.id AS same_id,
       s.system_identifier = (SELECT system_identifier FROM pg_control_system()) AS this_cluster,
       s.database = current_database() AS this_database
  FROM outbox.source s, outbox.installation i;
-- It stays one row.
INSERT INTO outbox.installation DEFAULT VALUES;
-- It is not dumped: a restored database is a new source.
SELECT count(*) AS dumped FROM pg_extension, unnest(extconfig) AS c
 WHERE extname = 'outbox' AND c = 'outbox.installation'::regclass;
-- A user catalog table, so that the relay may read it while decoding.
SELECT reloptions FROM pg_class WHERE oid = 'outbox.installation'::regclass;

-- DROP EXTENSION and CREATE EXTENSION again: message ids restart, the
-- installation id does not repeat.
SELECT outbox.enqueue('t', NULL, NULL) AS first_id;
SELECT id AS first_installation FROM outbox.installation \gset
DROP EXTENSION outbox;
CREATE EXTENSION outbox;
SELECT outbox.enqueue('t', NULL, NULL) AS first_id_again;
SELECT id <> :'first_installation' AS new_installation FROM outbox.installation;

-- Another database has another installation id.
SELECT id AS this_installation FROM outbox.installation \gset
SELECT current_database() AS home_db \gset
CREATE DATABASE outbox_regress_other;
\c outbox_regress_other
CREATE EXTENSION outbox;
SELECT id <> :'this_installation' AS other_database_other_installation
  FROM outbox.installation;
DROP EXTENSION outbox;
\c :home_db
DROP DATABASE outbox_regress_other;

-- Once a table is captured, its trigger depends on the extension: DROP
-- EXTENSION needs CASCADE, which drops the trigger and keeps the table.
CREATE TABLE orders (id int PRIMARY KEY, total numeric);
SELECT outbox.capture('orders', 'orders');
DROP EXTENSION outbox;
DROP EXTENSION outbox CASCADE;
SELECT count(*) AS capture_triggers FROM pg_trigger WHERE tgrelid = 'orders'::regclass;
INSERT INTO orders VALUES (1, 2);
SELECT count(*) AS orders FROM orders;
DROP TABLE orders;
