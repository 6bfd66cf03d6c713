#
# 080_slot_invalidated.pl
#    Kafka is unreachable, events stay in flight and pin the slot, other
#    tables churn, and max_slot_wal_keep_size makes a checkpoint invalidate
#    the slot.  The relay drops it, creates a new one, and republishes from
#    outbox.messages every row the delivery watermark does not cover (state
#    recovering, rows left in relay_status.replay_left), then streams from
#    the new slot.  Consuming Kafka: nothing lost, per-key order kept,
#    duplicates only from the window after the last watermark.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $topic = unique_topic('invalidated');
my $broker = start_broker(topics => ["$topic:3"]);
my $node = new_relay_node('slot_invalidated', $broker,
	extra_conf => "max_slot_wal_keep_size = 16MB\nmax_wal_size = 64MB\nmin_wal_size = 32MB\nlog_statement = none\n");

$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'k' || g % 3, jsonb_build_object('n', g)) FROM generate_series(1, 10) g"
);
ok(wait_relay_idle($node), 'events flow at first');
# A watermark is written at most once a second while events are delivered.
ok(wait_for(sub {
	$node->safe_psql('postgres',
		q{SELECT count(*) FROM outbox.relay_watermark WHERE snapshot IS NOT NULL}) eq '1' }, 30),
	'the relay wrote its delivery watermark');
sleep 3;	# and one after the ten events were acknowledged
my $wm = $node->safe_psql('postgres',
	q{SELECT pg_visible_in_snapshot(pg_current_xact_id(), snapshot) FROM outbox.relay_watermark});
is($wm, 'f', 'a transaction running now is not covered by the watermark');

# Kafka unreachable (a closed port: works against the mock and a real
# cluster alike), then events that stay in flight pin the slot.
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET outbox.kafka_brokers = '127.0.0.1:1';
	SELECT pg_reload_conf();});
ok(wait_for(sub { $node->log_contains(qr/outbox relay streaming slot .* to Kafka at 127\.0\.0\.1:1\b/) }, 30),
	'relay now produces to an unreachable Kafka');
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'k' || g % 3, jsonb_build_object('n', 10 + g)) FROM generate_series(1, 10) g"
);
ok(wait_for(sub { relay_status($node)->{in_flight} == 10 }, 30),
	'ten events in flight');

# Other tables churn; more events are written meanwhile.  Checkpoints until
# the slot is lost.
$node->safe_psql('postgres', 'CREATE TABLE filler (id int, pad text)');
my $log_pos = log_position($node);
my $rounds = 0;
my $lost = wait_for(
	sub {
		$rounds++;
		$node->safe_psql('postgres',
			"INSERT INTO filler SELECT g, repeat(md5(g::text), 30) FROM generate_series(1, 20000) g;"
			  . "SELECT outbox.enqueue('$topic', 'k' || g % 3, jsonb_build_object('round', $rounds, 'n', g)) FROM generate_series(1, 5) g;"
			  . "CHECKPOINT;");
		$node->log_contains(qr/replication slot "outbox_5" was invalidated because/,
			$log_pos);
	},
	60);
ok($lost, "slot invalidated after $rounds rounds of ~20 MB of WAL and a checkpoint");

# The relay recovers by itself; Kafka is still unreachable, so it stays in
# recovering with the rows it could not get acknowledged.
my $s = wait_relay_state($node, 'recovering', 60);
# The last round's events may have been written after the new slot began.
ok($s->{replay_left} >= 10 + 5 * ($rounds - 1),
	"recovering: $s->{replay_left} rows left to publish (at least the 10 in flight and the "
	  . 5 * ($rounds - 1) . ' written before the loss)');
my $log = log_since($node, $log_pos);
like($log, qr/replication slot "outbox_5" was invalidated because .*; dropping it and recovering from outbox\.messages/,
	'the log says the slot was invalidated and is recovered');
like($log, qr/slot "outbox_5" starts at [0-9A-F]+\/[0-9A-F]+; publishing the \d+ row\(s\) of outbox\.messages/,
	'the log says how many rows are published again');

# Events written while recovering wait in the new slot.
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'k' || g % 3, jsonb_build_object('late', g)) FROM generate_series(1, 5) g"
);
# Updates that publish nothing, after the new slot began: a column of the
# user's, a table rewrite, a verdict written and withdrawn.  They change
# every row's xmin; the rows still waiting for the replay must still go out.
$node->safe_psql('postgres', q{
	ALTER TABLE outbox.messages ADD COLUMN note text;
	UPDATE outbox.messages SET note = 'touched';
	ALTER TABLE outbox.messages ALTER COLUMN note TYPE integer USING length(note);
	UPDATE outbox.messages SET confirm_status = 'failed' WHERE id = (SELECT max(id) FROM outbox.messages);
	UPDATE outbox.messages SET confirm_status = NULL WHERE confirm_status = 'failed';});

# Kafka back: the replay completes, the relay streams from the new slot.
$node->safe_psql('postgres', q{
	ALTER SYSTEM RESET outbox.kafka_brokers;
	SELECT pg_reload_conf();});
$s = wait_relay_state($node, 'streaming', 90);
is($s->{replay_left}, 0, 'nothing left to replay');
ok(wait_relay_idle($node), 'relay caught up on the new slot');
like(log_since($node, $log_pos), qr/published \d+ row\(s\) of outbox\.messages again after the slot change/,
	'the log says the replay finished');
is($node->safe_psql('postgres',
	q{SELECT replay_snapshot IS NULL AND snapshot IS NOT NULL FROM outbox.relay_watermark}),
	't', 'the new slot\'s start became the watermark');

my $d = verify_topic($node, $broker, $topic, 'after slot invalidation');
# Only events 1..10 were acknowledged before the loss; every copy beyond
# one per event comes from the window between watermark and loss, which
# here is at most those ten.
ok($d->{duplicates} <= 10, "duplicates only from the watermark window ($d->{duplicates})");

$node->stop;
done_testing();
