-- confirm(), redeliver(), purge() and redrive() semantics.
BEGIN;
SELECT plan(24);

SELECT outbox.enqueue('t', 'k' || i, '{}') FROM generate_series(1, 4) AS i;
CREATE TEMP TABLE ids AS SELECT id, key FROM outbox.messages ORDER BY id;
CREATE FUNCTION pg_temp.id(k text) RETURNS bigint LANGUAGE sql AS $$ SELECT id FROM ids WHERE key = k $$;

SELECT is(outbox.confirm(pg_temp.id('k1')), true, 'confirm an event');
SELECT is(outbox.confirm(pg_temp.id('k2'), 'failed', 'bad'), true, 'report a failure');
SELECT is(outbox.confirm(-1), false, 'unknown id: false');
SELECT results_eq(
    $$SELECT confirm_status, confirm_detail, confirmed_at IS NOT NULL FROM outbox.messages ORDER BY id$$,
    $$VALUES ('confirmed'::text, NULL::text, true), ('failed', 'bad', true),
             (NULL, NULL, false), (NULL, NULL, false)$$,
    'verdicts are recorded');

SELECT is(outbox.redeliver(), 0::bigint, 'nothing is due right after publishing');
UPDATE outbox.messages SET published_at = published_at - interval '10 minutes';
SELECT is(outbox.redeliver(), 3::bigint, 'failed and unconfirmed events are due after 5 minutes');
SELECT results_eq(
    $$SELECT key, attempts, confirm_status, published_at = now() FROM outbox.messages ORDER BY id$$,
    $$VALUES ('k1'::text, 1, 'confirmed'::text, false), ('k2', 2, NULL, true),
             ('k3', 2, NULL, true), ('k4', 2, NULL, true)$$,
    'redeliver bumps attempts, clears the verdict, sets published_at');
SELECT is(outbox.redeliver(), 0::bigint, 'not due again right away');
SELECT is(outbox.redeliver('0'), 3::bigint, 'older_than 0: due at once');
UPDATE outbox.messages SET published_at = published_at - interval '1 hour';
SELECT is(outbox.redeliver('5 minutes', 3), 0::bigint, 'max_attempts reached');
SELECT is(outbox.redeliver('5 minutes', 4), 3::bigint, 'a higher max_attempts allows one more');
SELECT is((SELECT max(attempts) FROM outbox.messages), 4, 'attempts counts publications');

-- purge() removes confirmed events whose verdict is older than older_than.
SELECT is(outbox.purge('1 day'), 0::bigint, 'nothing old enough to purge');
UPDATE outbox.messages SET confirmed_at = confirmed_at - interval '2 days';
SELECT is(outbox.purge('1 day'), 1::bigint, 'the old confirmed event is purged');
SELECT is(outbox.confirm(pg_temp.id('k3')), true, 'confirm another');
SELECT is(outbox.confirm(pg_temp.id('k4'), 'failed'), true, 'fail another');
SELECT is(outbox.purge('0'), 1::bigint, 'purge(0) removes confirmed events only');
SELECT results_eq($$SELECT key FROM outbox.messages ORDER BY id$$, $$VALUES ('k2'::text), ('k4')$$,
                  'failed and unconfirmed events stay');

-- redrive() re-publishes a dead letter.
INSERT INTO outbox.dead_letters (message_id, topic, key, payload, error_code, error)
VALUES (pg_temp.id('k4'), 't', 'k4', '{}', 'MSG_SIZE_TOO_LARGE', 'too large');
SELECT is(outbox.redrive((SELECT max(id) FROM outbox.dead_letters)), true, 'redrive a dead letter');
SELECT is(outbox.redrive(-1), false, 'unknown dead letter: false');
SELECT results_eq(
    $$SELECT redrives, redriven_at = now() FROM outbox.dead_letters$$,
    $$VALUES (1, true)$$, 'the dead letter records the redrive');
SELECT results_eq(
    $$SELECT attempts, confirm_status FROM outbox.messages WHERE key = 'k4'$$,
    $$VALUES (5, NULL::text)$$, 'the message row counts the attempt and loses its verdict');
-- UPDATEs that leave the event columns alone (confirm, redeliver) skip the
-- validation trigger; UPDATEs of topic, key, payload or headers do not.
SELECT lives_ok($$UPDATE outbox.messages SET attempts = attempts + 1$$, 'non-event columns update freely');
SELECT throws_ok($$UPDATE outbox.messages SET topic = 'x y'$$, '22023', NULL, 'event columns are re-validated');

SELECT * FROM finish();
ROLLBACK;
