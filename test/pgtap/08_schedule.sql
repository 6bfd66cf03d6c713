-- The SQL behind the relay's scheduled redelivery and retention
-- (issue 10): outbox._redeliver_batch() shared with redeliver(), expiry,
-- outbox._retention_batch(), and who may call them.
BEGIN;
SELECT plan(21);

SELECT has_column('outbox', 'messages', 'expired_at', 'messages.expired_at exists');
SELECT col_type_is('outbox', 'messages', 'expired_at', 'timestamp with time zone', 'expired_at is timestamptz');
SELECT col_is_null('outbox', 'messages', 'expired_at', 'expired_at is null until a message expires');
SELECT function_privs_are('outbox', '_redeliver_batch', ARRAY['interval', 'integer', 'boolean', 'bigint', 'integer'],
                          'public', '{}'::name[], 'PUBLIC cannot run _redeliver_batch()');
SELECT function_privs_are('outbox', '_retention_batch', ARRAY['interval', 'boolean', 'bigint', 'integer'],
                          'public', '{}'::name[], 'PUBLIC cannot run _retention_batch()');
SELECT is((SELECT p.prosecdef FROM pg_proc p
            WHERE p.oid = 'outbox._redeliver_batch(interval,integer,boolean,bigint,integer)'::regprocedure),
          false, '_redeliver_batch() is not SECURITY DEFINER');

-- k1 confirmed, k2 failed, k3 dead-lettered, k4..k6 unanswered.
SELECT outbox.enqueue('t', 'k' || i, '{}') FROM generate_series(1, 6) AS i;
CREATE TEMP TABLE ids AS SELECT id, key FROM outbox.messages ORDER BY id;
CREATE FUNCTION pg_temp.id(k text) RETURNS bigint LANGUAGE sql AS $$ SELECT id FROM ids WHERE key = k $$;
SELECT outbox.confirm(pg_temp.id('k1'));
SELECT outbox.confirm(pg_temp.id('k2'), 'failed');
INSERT INTO outbox.dead_letters (message_id, topic, error_code, error)
VALUES (pg_temp.id('k3'), 't', 'MSG_SIZE_TOO_LARGE', 'too large');
UPDATE outbox.messages SET published_at = published_at - interval '10 minutes';

SELECT results_eq(
    $$SELECT redelivered, expired, last_id FROM outbox._redeliver_batch('5 minutes', 3, false, NULL, 2)$$,
    $$SELECT 2::bigint, 0::bigint, pg_temp.id('k5')$$,
    'the schedule''s batch: unanswered rows only, at most max_rows, in id order');
SELECT results_eq(
    $$SELECT redelivered, expired, last_id FROM outbox._redeliver_batch('5 minutes', 3, false, pg_temp.id('k5'), 2)$$,
    $$SELECT 1::bigint, 0::bigint, pg_temp.id('k6')$$,
    'the next batch goes on above last_id');
SELECT results_eq(
    $$SELECT key, attempts FROM outbox.messages ORDER BY id$$,
    $$VALUES ('k1'::text, 1), ('k2', 1), ('k3', 1), ('k4', 2), ('k5', 2), ('k6', 2)$$,
    'confirmed, failed and dead-lettered rows were left alone');

UPDATE outbox.messages SET published_at = published_at - interval '10 minutes';
SELECT outbox.confirm(pg_temp.id('k6'), 'failed');
SELECT results_eq(
    $$SELECT redelivered, expired FROM outbox._redeliver_batch('5 minutes', 2, false, NULL, NULL)$$,
    $$VALUES (0::bigint, 2::bigint)$$,
    'at max_attempts and due, unanswered rows expire');
SELECT results_eq(
    $$SELECT key FROM outbox.messages WHERE expired_at IS NOT NULL ORDER BY id$$,
    $$VALUES ('k4'::text), ('k5')$$,
    'expired_at marks them; a failed verdict (k6) does not expire');
SELECT results_eq(
    $$SELECT redelivered, expired FROM outbox._redeliver_batch('0', 2, false, NULL, NULL)$$,
    $$VALUES (0::bigint, 0::bigint)$$,
    'an expired row is expired once');
SELECT is(outbox.redeliver('0', 3), 4::bigint,
          'redeliver(): failed k2, k6 and expired k4, k5 are published again with more attempts');
SELECT is((SELECT count(*) FROM outbox.messages WHERE expired_at IS NOT NULL), 0::bigint,
          'republished rows are no longer expired');

-- A role granted only redeliver() (SECURITY DEFINER) may run it: the
-- internal function is called with the owner's rights.
CREATE ROLE pgtap_outbox_ops;
GRANT USAGE ON SCHEMA outbox TO pgtap_outbox_ops;
GRANT EXECUTE ON FUNCTION outbox.redeliver(interval, integer) TO pgtap_outbox_ops;
SET LOCAL ROLE pgtap_outbox_ops;
SELECT is(outbox.redeliver('0', 10), 4::bigint, 'an ops role runs redeliver()');
SELECT throws_ok($$SELECT * FROM outbox._redeliver_batch('0', 10, true, NULL, NULL)$$,
                 '42501', NULL, 'but not _redeliver_batch() itself');
SELECT throws_ok($$SELECT * FROM outbox._retention_batch('0', false, NULL, 10)$$,
                 '42501', NULL, 'nor _retention_batch()');
RESET ROLE;

-- Retention without a delivery watermark deletes nothing; with one that
-- covers everything, confirmed rows older than older_than go, failed and
-- dead-lettered ones stay; unanswered ones stay when keep_unanswered.
SELECT outbox.confirm(pg_temp.id('k4'));
SELECT outbox.confirm(pg_temp.id('k2'), 'failed');
UPDATE outbox.messages SET created_at = created_at - interval '2 hours';
SELECT results_eq(
    $$SELECT deleted, done FROM outbox._retention_batch('1 hour', false, NULL, 100)$$,
    $$VALUES (0::bigint, true)$$,
    'no watermark: nothing is known to be acknowledged, nothing deleted');
-- A snapshot from the future covers every transaction so far (this one too).
INSERT INTO outbox.relay_watermark (system_identifier, slot_name, snapshot)
SELECT system_identifier, 'pgtap',
       (pg_current_xact_id()::text::bigint + 1 || ':' || pg_current_xact_id()::text::bigint + 1 || ':')::pg_snapshot
  FROM pg_control_system();
SELECT results_eq(
    $$SELECT deleted, done FROM outbox._retention_batch('1 hour', true, NULL, 100)$$,
    $$VALUES (2::bigint, true)$$,
    'with a watermark: the confirmed rows k1 and k4 go');
SELECT results_eq(
    $$SELECT key FROM outbox.messages ORDER BY id$$,
    $$VALUES ('k2'::text), ('k3'), ('k5'), ('k6')$$,
    'failed (k2), dead-lettered (k3) and, kept for redelivery, unanswered (k5, k6) rows stay');
SELECT results_eq(
    $$SELECT deleted FROM outbox._retention_batch('1 hour', false, NULL, 100)$$,
    $$VALUES (2::bigint)$$,
    'without redelivery, acknowledged unanswered rows go too');

SELECT * FROM finish();
ROLLBACK;
