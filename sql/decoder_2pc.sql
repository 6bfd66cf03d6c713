--
-- decoder_2pc: prepared transactions are decoded once, at COMMIT PREPARED.
--
-- The plugin registers no two-phase callbacks, so PostgreSQL decodes a
-- prepared transaction as an ordinary one when COMMIT PREPARED is decoded,
-- and never when ROLLBACK PREPARED is.  That holds for a slot created with
-- two_phase = true as well: two-phase decoding needs the plugin's prepare
-- callbacks, and without them the slot's flag has no effect.
--
\set VERBOSITY terse
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS outbox;
RESET client_min_messages;
CREATE EXTENSION outbox;

SELECT 'init' FROM pg_create_logical_replication_slot('decoder_2pc', 'outbox');
SELECT 'init' FROM pg_create_logical_replication_slot('decoder_2pc_tp', 'outbox',
                                                      false, true);
SELECT slot_name, plugin, two_phase FROM pg_replication_slots
 WHERE slot_name LIKE 'decoder_2pc%' ORDER BY 1;

CREATE FUNCTION pg_temp.events(slot name, OUT key text, OUT xid bigint,
                               OUT lsn pg_lsn)
    RETURNS SETOF record LANGUAGE sql AS $$
    SELECT data::jsonb->>'key', (data::jsonb->>'xid')::bigint,
           (data::jsonb->>'lsn')::pg_lsn
      FROM pg_logical_slot_get_changes(slot, NULL, NULL)
$$;

-- Prepared: nothing yet, on either slot.
BEGIN;
SELECT outbox.enqueue('twophase', 'prepared-then-committed', '{}') IS NOT NULL AS ok;
SELECT txid_current() AS xid_p \gset
PREPARE TRANSACTION 'decoder_2pc_a';
SELECT count(*) AS while_prepared FROM pg_temp.events('decoder_2pc');
SELECT count(*) AS while_prepared FROM pg_temp.events('decoder_2pc_tp');

-- Committed while the prepared one waits: decoded first, in commit order.
SELECT outbox.enqueue('twophase', 'committed-meanwhile', '{}') IS NOT NULL AS ok;
SELECT key FROM pg_temp.events('decoder_2pc');

SELECT pg_current_wal_insert_lsn() AS before_cp \gset
COMMIT PREPARED 'decoder_2pc_a';
SELECT key, xid = :xid_p AS prepared_xid, lsn >= :'before_cp' AS commit_prepared_lsn
  FROM pg_temp.events('decoder_2pc');
-- The two_phase slot, not read meanwhile, has both, in commit order.
SELECT key, xid = :xid_p AS prepared_xid, lsn >= :'before_cp' AS commit_prepared_lsn
  FROM pg_temp.events('decoder_2pc_tp');

-- Decoded once: nothing left.
SELECT count(*) AS left_over FROM pg_temp.events('decoder_2pc');
SELECT count(*) AS left_over FROM pg_temp.events('decoder_2pc_tp');

-- Rolled back prepared transaction: never anything.
BEGIN;
SELECT outbox.enqueue('twophase', 'prepared-then-rolled-back', '{}') IS NOT NULL AS ok;
SAVEPOINT s;
SELECT outbox.enqueue('twophase', 'in-subtransaction', '{}') IS NOT NULL AS ok;
RELEASE SAVEPOINT s;
PREPARE TRANSACTION 'decoder_2pc_b';
SELECT count(*) AS while_prepared FROM pg_temp.events('decoder_2pc_tp');
ROLLBACK PREPARED 'decoder_2pc_b';
SELECT count(*) AS after_rollback_prepared FROM pg_temp.events('decoder_2pc');
SELECT count(*) AS after_rollback_prepared FROM pg_temp.events('decoder_2pc_tp');

-- A prepared transaction with a subtransaction, committed: all its events,
-- and a rolled-back subtransaction's none.
BEGIN;
SELECT outbox.enqueue('twophase', 'c-top', '{}') IS NOT NULL AS ok;
SAVEPOINT s1;
SELECT outbox.enqueue('twophase', 'c-released', '{}') IS NOT NULL AS ok;
RELEASE SAVEPOINT s1;
SAVEPOINT s2;
SELECT outbox.enqueue('twophase', 'c-rolled-back', '{}') IS NOT NULL AS ok;
ROLLBACK TO SAVEPOINT s2;
PREPARE TRANSACTION 'decoder_2pc_c';
COMMIT PREPARED 'decoder_2pc_c';
SELECT key FROM pg_temp.events('decoder_2pc');
SELECT key FROM pg_temp.events('decoder_2pc_tp');

SELECT pg_drop_replication_slot('decoder_2pc');
SELECT pg_drop_replication_slot('decoder_2pc_tp');
DROP EXTENSION outbox;
