-- Privileges: PUBLIC gets nothing (except the side-effect-free topic
-- check capture() needs); roles get exactly what docs/sql-api.md grants.
\set VERBOSITY terse
CREATE EXTENSION outbox;

-- What PUBLIC may do in schema outbox: only outbox._check_topic(text), and
-- not even that without USAGE on the schema, which PUBLIC lacks.
SELECT p.oid::regprocedure AS function
  FROM pg_proc p, aclexplode(p.proacl) a
 WHERE p.pronamespace = 'outbox'::regnamespace AND a.grantee = 0
 ORDER BY 1;
SELECT c.relname, a.privilege_type
  FROM pg_class c, aclexplode(c.relacl) a
 WHERE c.relnamespace = 'outbox'::regnamespace AND a.grantee = 0;
SELECT has_schema_privilege('public', 'outbox', 'USAGE') AS public_usage;
-- Functions that run as their owner, and those that do not.
SELECT p.oid::regprocedure AS function, p.prosecdef AS security_definer,
       p.proconfig AS settings
  FROM pg_proc p WHERE p.pronamespace = 'outbox'::regnamespace ORDER BY 1;
-- pg_monitor reads the relay status.
SELECT has_schema_privilege('pg_monitor', 'outbox', 'USAGE') AS usage,
       has_table_privilege('pg_monitor', 'outbox.relay_status', 'SELECT') AS relay_status,
       has_table_privilege('pg_monitor', 'outbox.messages', 'SELECT') AS messages;

CREATE ROLE regress_outbox_app;
CREATE ROLE regress_outbox_admin;
CREATE ROLE regress_outbox_writer;
CREATE ROLE regress_outbox_ops;
CREATE ROLE regress_outbox_monitor;

-- An application role: denied everything, then granted enqueue, emit and
-- confirm.
SET ROLE regress_outbox_app;
SELECT outbox.enqueue('t', NULL, '{}');
SELECT outbox.emit('t', NULL, '{}');
SELECT outbox.confirm(1);
RESET ROLE;
GRANT USAGE ON SCHEMA outbox TO regress_outbox_app;
SET ROLE regress_outbox_app;
SELECT outbox.enqueue('t', NULL, '{}');
SELECT outbox.emit('t', NULL, '{}');
SELECT outbox.confirm(1);
RESET ROLE;
GRANT EXECUTE ON FUNCTION outbox.enqueue(text, text, jsonb, jsonb),
                          outbox.emit(text, text, jsonb, jsonb),
                          outbox.confirm(bigint, text, text)
   TO regress_outbox_app;
SET ROLE regress_outbox_app;
SELECT outbox.enqueue('t', 'app', '{}');
SELECT outbox.emit('t', 'app', '{}') IS NOT NULL AS emitted;
SELECT outbox.confirm(3);
-- ... and nothing else: no direct table access, no internals, no
-- operations functions.
SELECT count(*) FROM outbox.messages;
INSERT INTO outbox.messages (topic) VALUES ('t');
SELECT outbox._emit_stored(1, 1, 't', NULL, NULL, NULL);
SELECT outbox.redeliver();
SELECT outbox.purge('1 day');
SELECT outbox.redrive(1);
SELECT outbox.capture('pg_class', 't');
SELECT count(*) FROM outbox.relay_status;
-- The rules still apply to granted roles.
SELECT outbox.enqueue('bad topic', NULL, '{}');
SELECT outbox.emit('t', NULL, '{}', '{"n": 1}');
RESET ROLE;
SELECT id, topic, key, confirm_status FROM outbox.messages ORDER BY id;

-- A capture admin who owns a table but is not a superuser: denied, then
-- granted capture, uncapture and capture_trigger (CREATE TRIGGER needs
-- EXECUTE on the trigger function).
CREATE TABLE accounts (id int PRIMARY KEY, owner_name text);
ALTER TABLE accounts OWNER TO regress_outbox_admin;
SET ROLE regress_outbox_admin;
SELECT outbox.capture('accounts', 'accounts');
RESET ROLE;
GRANT USAGE ON SCHEMA outbox TO regress_outbox_admin;
GRANT EXECUTE ON FUNCTION outbox.capture(regclass, text, text[], text[]),
                          outbox.uncapture(regclass)
   TO regress_outbox_admin;
SET ROLE regress_outbox_admin;
SELECT outbox.capture('accounts', 'accounts');
RESET ROLE;
GRANT EXECUTE ON FUNCTION outbox.capture_trigger() TO regress_outbox_admin;
SET ROLE regress_outbox_admin;
SELECT outbox.capture('accounts', 'accounts');
SELECT outbox.capture('accounts', 'accounts', '{owner_name}', '{insert,update}');
-- ... still only on tables it owns.
SELECT outbox.capture('pg_class', 't');
-- Its own table's writes go through without any outbox privilege: the
-- trigger runs as the extension's owner.
INSERT INTO accounts VALUES (1, 'ada');
RESET ROLE;
GRANT SELECT, INSERT, UPDATE, DELETE ON accounts TO regress_outbox_writer;
SET ROLE regress_outbox_writer;
INSERT INTO accounts VALUES (2, 'grace');
UPDATE accounts SET owner_name = 'grace h' WHERE id = 2;
-- The writer still cannot touch the outbox directly.
SELECT count(*) FROM outbox.messages;
RESET ROLE;
SELECT topic, key, payload->>'op' AS op FROM outbox.messages WHERE topic = 'accounts' ORDER BY id;
SET ROLE regress_outbox_admin;
SELECT outbox.uncapture('accounts');
SELECT outbox.uncapture('accounts');
RESET ROLE;

-- An operations role runs redeliver(), purge() and redrive().
SET ROLE regress_outbox_ops;
SELECT outbox.redeliver();
RESET ROLE;
GRANT USAGE ON SCHEMA outbox TO regress_outbox_ops;
GRANT EXECUTE ON FUNCTION outbox.redeliver(interval, integer),
                          outbox.purge(interval),
                          outbox.redrive(bigint)
   TO regress_outbox_ops;
SET ROLE regress_outbox_ops;
SELECT outbox.redeliver();
SELECT outbox.purge('1 day');
SELECT outbox.redrive(1);
RESET ROLE;

-- Monitoring: membership in pg_monitor is enough for relay_status; the
-- tables need an explicit SELECT grant.
SET ROLE regress_outbox_monitor;
SELECT count(*) FROM outbox.relay_status;
RESET ROLE;
GRANT pg_monitor TO regress_outbox_monitor;
SET ROLE regress_outbox_monitor;
SELECT count(*) >= 0 AS readable FROM outbox.relay_status;
SELECT count(*) FROM outbox.messages;
RESET ROLE;
GRANT SELECT ON outbox.messages, outbox.dead_letters TO regress_outbox_monitor;
SET ROLE regress_outbox_monitor;
SELECT count(*) > 0 AS readable FROM outbox.messages;
SELECT count(*) >= 0 AS readable FROM outbox.dead_letters;
RESET ROLE;

-- Clean up: privileges on the extension's objects, schema included, go
-- with them.
DROP TABLE accounts;
DROP EXTENSION outbox;
DROP ROLE regress_outbox_app, regress_outbox_admin, regress_outbox_writer,
          regress_outbox_ops, regress_outbox_monitor;
