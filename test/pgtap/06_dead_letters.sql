-- One dead letter per event: renewed failures are counted, not added;
-- redeliver() leaves dead-lettered messages to redrive().
BEGIN;
SELECT plan(12);

-- What the relay writes when Kafka rejects an event: a plain INSERT.
CREATE FUNCTION pg_temp.reject(message_id bigint, lsn pg_lsn, xid bigint,
                               error_code text, payload jsonb DEFAULT '{}')
    RETURNS void LANGUAGE sql AS $$
    INSERT INTO outbox.dead_letters (message_id, topic, key, payload, lsn, xid,
                                     commit_time, error_code, error)
    VALUES ($1, 'too.big', 'k', $5, $2, $3, now(), $4, 'rejected: ' || $4)
$$;

SELECT outbox.enqueue('too.big', 'k', '{}') AS mid \gset
SELECT pg_temp.reject(:mid, '0/100', 700, 'MSG_SIZE_TOO_LARGE');
SELECT is((SELECT count(*)::int FROM outbox.dead_letters), 1, 'the first rejection is a dead letter');
SELECT is((SELECT failures FROM outbox.dead_letters), 1, 'failures starts at 1');

-- redeliver() does not re-send a dead-lettered message, however old.
UPDATE outbox.messages SET published_at = published_at - interval '1 day';
SELECT is(outbox.redeliver('0'), 0::bigint, 'redeliver() skips a dead-lettered message');
SELECT is((SELECT attempts FROM outbox.messages WHERE id = :mid), 1, 'its attempts are untouched');

-- redrive() re-publishes it; Kafka rejects it again.
SELECT is(outbox.redrive((SELECT id FROM outbox.dead_letters)), true, 'redrive the dead letter');
SELECT pg_temp.reject(:mid, '0/200', 701, 'TOPIC_AUTHORIZATION_FAILED');
SELECT is((SELECT count(*)::int FROM outbox.dead_letters), 1, 'a failed redrive adds no second dead letter');
SELECT results_eq(
    $$SELECT failures, redrives, error_code, lsn, xid FROM outbox.dead_letters$$,
    $$VALUES (2, 1, 'TOPIC_AUTHORIZATION_FAILED'::text, '0/200'::pg_lsn, 701::bigint)$$,
    'the dead letter counts the failure and shows the latest error and position');
SELECT is((SELECT attempts FROM outbox.messages WHERE id = :mid), 2, 'the message counts the redrive');

-- The relay may write the same rejection twice (a rewind after a crash).
SELECT pg_temp.reject(:mid, '0/200', 701, 'TOPIC_AUTHORIZATION_FAILED');
SELECT is((SELECT count(*)::int FROM outbox.dead_letters), 1, 'a replayed rejection adds no row either');

-- An emitted event has no message id: it is recognised by its content and
-- the transaction that redrove it.
DELETE FROM outbox.dead_letters;
SELECT pg_temp.reject(NULL, '0/300', 800, 'MSG_SIZE_TOO_LARGE', '{"emitted": true}');
SELECT outbox.redrive((SELECT id FROM outbox.dead_letters));
SELECT pg_temp.reject(NULL, '0/400', txid_current() % 4294967296, 'MSG_SIZE_TOO_LARGE', '{"emitted": true}');
SELECT results_eq(
    $$SELECT count(*)::int, max(failures) FROM outbox.dead_letters$$,
    $$VALUES (1, 2)$$,
    'a failed redrive of an emitted event is counted on its dead letter');
-- Another emitted event with other content is another dead letter.
SELECT pg_temp.reject(NULL, '0/400', txid_current() % 4294967296, 'MSG_SIZE_TOO_LARGE', '{"other": true}');
SELECT is((SELECT count(*)::int FROM outbox.dead_letters), 2, 'a different emitted event is its own dead letter');

-- At most one dead letter per message, whoever writes.
ALTER TABLE outbox.dead_letters DISABLE TRIGGER dead_letters_merge;
SELECT throws_ok(
    format($$INSERT INTO outbox.dead_letters (message_id, topic, error_code, error)
             SELECT %s, 't', 'E', 'e' FROM (VALUES (1), (2)) AS v$$, :mid),
    '23505', NULL, 'a unique index backs the rule');

SELECT * FROM finish();
ROLLBACK;
