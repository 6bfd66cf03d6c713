--
-- adopt_security: only a table's owner may adopt it; nothing is granted to
-- PUBLIC; outbox.adopted is written only through adopt() and unadopt().
--
\set VERBOSITY terse
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS outbox;
RESET client_min_messages;
CREATE EXTENSION outbox;
SELECT 'init' FROM pg_create_logical_replication_slot('adopt_security', 'outbox');

CREATE ROLE regress_adopt_owner;
CREATE ROLE regress_adopt_other;
CREATE ROLE regress_adopt_member IN ROLE regress_adopt_owner;
CREATE TABLE owned_outbox (
    id uuid PRIMARY KEY, aggregatetype text NOT NULL, aggregateid text,
    type text, payload jsonb);
ALTER TABLE owned_outbox OWNER TO regress_adopt_owner;
GRANT INSERT ON owned_outbox TO regress_adopt_other;

-- PUBLIC can neither call the functions nor read the adoptions.
SELECT p.oid::regprocedure AS function, p.prosecdef AS security_definer,
       p.proconfig AS settings,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute
  FROM pg_proc p
 WHERE p.pronamespace = 'outbox'::regnamespace
   AND p.proname IN ('adopt', 'unadopt', '_adopted_drop')
 ORDER BY 1;
SELECT has_table_privilege('public', 'outbox.adopted', 'SELECT') AS public_select,
       has_table_privilege('public', 'outbox.adopted', 'INSERT') AS public_insert;
SELECT reloptions FROM pg_class WHERE oid = 'outbox.adopted'::regclass;

GRANT USAGE ON SCHEMA outbox TO regress_adopt_owner, regress_adopt_other;
GRANT EXECUTE ON FUNCTION outbox.adopt(regclass, jsonb), outbox.unadopt(regclass)
   TO regress_adopt_owner, regress_adopt_other;

-- A role that does not own the table cannot adopt it, even with EXECUTE.
SET ROLE regress_adopt_other;
\set VERBOSITY default
SELECT outbox.adopt('owned_outbox');
\set VERBOSITY terse
-- Nor write outbox.adopted itself.
INSERT INTO outbox.adopted (relid, options, adopted_by)
VALUES ('owned_outbox', '{}', 'regress_adopt_other');
-- Its inserts are not events.
INSERT INTO owned_outbox VALUES (gen_random_uuid(), 'Order', '1', 't', '{}');
RESET ROLE;
SELECT count(*) AS events_before_adoption
  FROM pg_logical_slot_get_changes('adopt_security', NULL, NULL);

-- The owner may adopt (and so may a member of the owning role).
SET ROLE regress_adopt_owner;
SELECT outbox.adopt('owned_outbox');
RESET ROLE;
SELECT relid, adopted_by FROM outbox.adopted;
SET ROLE regress_adopt_member;
SELECT outbox.adopt('owned_outbox', '{"route.topic.replacement": "m.${routedByValue}"}');
RESET ROLE;
SELECT relid, adopted_by, options->>'route.topic.replacement' AS replacement
  FROM outbox.adopted;

-- Now another role's inserts into the adopted table are events.
SET ROLE regress_adopt_other;
INSERT INTO owned_outbox VALUES
    ('c0000000-0000-0000-0000-000000000001', 'Order', '1', 't', '{"n": 1}');
-- It cannot end the adoption.
SELECT outbox.unadopt('owned_outbox');
RESET ROLE;
SELECT data::jsonb->>'topic' AS topic, data::jsonb->'headers' AS headers
  FROM pg_logical_slot_get_changes('adopt_security', NULL, NULL);

-- The owner can.
SET ROLE regress_adopt_owner;
SELECT outbox.unadopt('owned_outbox');
RESET ROLE;
SELECT count(*) AS adoptions FROM outbox.adopted;

-- An adopted table keeps DROP EXTENSION possible; the adoption goes with it.
SELECT outbox.adopt('owned_outbox');
SELECT pg_drop_replication_slot('adopt_security');
DROP EXTENSION outbox;
DROP TABLE owned_outbox;
DROP ROLE regress_adopt_member, regress_adopt_other, regress_adopt_owner;
