-- Every invalid input is rejected with its SQLSTATE.
BEGIN;
SELECT plan(46);

-- Topic names (enqueue, INSERT, emit, capture).
SELECT throws_ok($$SELECT outbox.enqueue('', NULL, '{}')$$, '22023', 'invalid Kafka topic name ""', 'empty topic');
SELECT throws_ok($$SELECT outbox.enqueue('.', NULL, '{}')$$, '22023', 'invalid Kafka topic name "."', 'topic "."');
SELECT throws_ok($$SELECT outbox.enqueue('..', NULL, '{}')$$, '22023', 'invalid Kafka topic name ".."', 'topic ".."');
SELECT throws_ok($$SELECT outbox.enqueue(repeat('a', 250), NULL, '{}')$$, '22023', NULL, '250-character topic');
SELECT lives_ok($$SELECT outbox.enqueue(repeat('a', 249), NULL, '{}')$$, '249-character topic');
SELECT lives_ok($$SELECT outbox.enqueue('...', NULL, '{}')$$, 'topic "..." is legal');
SELECT lives_ok($$SELECT outbox.enqueue('Az09._-', NULL, '{}')$$, 'every legal character');
SELECT throws_ok($$SELECT outbox.enqueue('a b', NULL, '{}')$$, '22023', NULL, 'space in topic');
SELECT throws_ok($$SELECT outbox.enqueue('a/b', NULL, '{}')$$, '22023', NULL, 'slash in topic');
SELECT throws_ok($$SELECT outbox.enqueue('a:b', NULL, '{}')$$, '22023', NULL, 'colon in topic');
SELECT throws_ok($$SELECT outbox.enqueue('ä', NULL, '{}')$$, '22023', NULL, 'non-ASCII topic');
SELECT throws_ok($$SELECT outbox.enqueue(NULL, NULL, '{}')$$, '22004', 'outbox event topic must not be null', 'null topic in enqueue: the same error as emit()');
SELECT throws_ok($$INSERT INTO outbox.messages (topic) VALUES ('bad topic')$$, '22023', NULL, 'plain INSERT is validated');
SELECT throws_ok($$SELECT outbox.emit('bad topic', NULL, '{}')$$, '22023', NULL, 'emit validates the topic');
SELECT throws_ok($$SELECT outbox.emit(NULL, NULL, '{}')$$, '22004', 'outbox event topic must not be null', 'null topic in emit');
SELECT throws_ok($$SELECT outbox.capture('pg_class', 'bad topic')$$, '22023', NULL, 'capture validates the topic');

-- Headers.
SELECT throws_ok($$SELECT outbox.enqueue('t', NULL, '{}', '[]')$$, '22023', 'invalid outbox headers', 'headers array');
SELECT throws_ok($$SELECT outbox.enqueue('t', NULL, '{}', '"s"')$$, '22023', 'invalid outbox headers', 'headers scalar');
SELECT throws_ok($$SELECT outbox.enqueue('t', NULL, '{}', '{"a": 1}')$$, '22023', 'invalid outbox headers', 'numeric header value');
SELECT throws_ok($$SELECT outbox.enqueue('t', NULL, '{}', '{"a": null}')$$, '22023', 'invalid outbox headers', 'null header value');
SELECT throws_ok($$SELECT outbox.enqueue('t', NULL, '{}', '{"a": {}}')$$, '22023', 'invalid outbox headers', 'object header value');
SELECT throws_ok($$SELECT outbox.enqueue('t', NULL, '{}', '{"": "x"}')$$, '22023', 'invalid outbox headers', 'empty header name');
SELECT throws_ok($$SELECT outbox.enqueue('t', NULL, '{}', '{"outbox-id": "1"}')$$, '22023', 'invalid outbox headers', 'reserved outbox- prefix');
SELECT throws_ok($$SELECT outbox.enqueue('t', NULL, '{}', '{"Outbox-Xid": "1"}')$$, '22023', 'invalid outbox headers', 'reserved prefix, any case');
SELECT throws_ok($$SELECT outbox.emit('t', NULL, '{}', '{"a": 1}')$$, '22023', 'invalid outbox headers', 'emit validates headers');
SELECT lives_ok($$SELECT outbox.enqueue('t', NULL, '{}', '{"a": "1", "b": ""}')$$, 'string headers');

-- Size.
SET LOCAL outbox.max_message_size = 50;
SELECT throws_ok($$SELECT outbox.enqueue('t', repeat('k', 50), NULL)$$, '54000', 'outbox message is too large', 'oversize key');
SELECT lives_ok($$SELECT outbox.enqueue('t', repeat('k', 49), NULL)$$, 'exactly at the limit');
SELECT throws_ok($$SELECT outbox.enqueue('t', NULL, jsonb_build_object('s', repeat('x', 100)))$$, '54000', NULL, 'oversize payload');
SELECT throws_ok($$SELECT outbox.emit('t', NULL, jsonb_build_object('s', repeat('x', 100)))$$, '54000', NULL, 'oversize emit');
RESET outbox.max_message_size;

-- Tombstones and null keys are fine.
SELECT lives_ok($$SELECT outbox.enqueue('t', 'k', NULL)$$, 'tombstone (null payload)');
SELECT lives_ok($$SELECT outbox.emit('t', 'k', NULL)$$, 'emitted tombstone');

-- confirm(), redeliver(), purge(), _emit_stored() arguments.
SELECT throws_ok($$SELECT outbox.confirm(1, 'maybe')$$, '22023', 'invalid confirm status "maybe"', 'unknown confirm status');
SELECT throws_ok($$SELECT outbox.confirm(1, NULL)$$, '22023', NULL, 'null confirm status');
SELECT throws_ok($$SELECT outbox.redeliver('-1 second')$$, '22023', NULL, 'negative older_than');
SELECT throws_ok($$SELECT outbox.redeliver('1 minute', 0)$$, '22023', NULL, 'max_attempts 0');
SELECT throws_ok($$SELECT outbox.purge(NULL)$$, '22023', NULL, 'null purge interval');
SELECT throws_ok($$SELECT outbox._emit_stored(1, 0, 't', NULL, NULL, NULL)$$, '22023', NULL, 'attempts 0');
SELECT throws_ok($$SELECT outbox._emit_stored(1, NULL, 't', NULL, NULL, NULL)$$, '22004', NULL, 'null attempts');

-- capture() arguments.
CREATE TABLE pgtap_t (id int PRIMARY KEY);
CREATE VIEW pgtap_v AS SELECT 1 AS x;
SELECT throws_ok($$SELECT outbox.capture('pgtap_v', 't')$$, '42809', NULL, 'capture a view');
SELECT throws_ok($$SELECT outbox.capture('outbox.messages', 't')$$, '22023', NULL, 'capture outbox.messages');
SELECT throws_ok($$SELECT outbox.capture('pgtap_t', 't', '{nope}')$$, '42703', NULL, 'unknown key column');
SELECT throws_ok($$SELECT outbox.capture('pgtap_t', 't', '{}')$$, '22023', NULL, 'empty key_columns');
SELECT throws_ok($$SELECT outbox.capture('pgtap_t', 't', NULL, '{truncate}')$$, '22023', 'invalid capture event "truncate"', 'bad event name');
SELECT throws_ok($$SELECT outbox.capture(NULL, 't')$$, '22004', NULL, 'null relation');
SELECT throws_ok($$SELECT outbox.uncapture(NULL)$$, '22004', NULL, 'uncapture null');

SELECT * FROM finish();
ROLLBACK;
