#
# 080_slot_invalidated.pl
#    The slot is held back (Kafka unreachable, events in flight) until
#    max_slot_wal_keep_size makes a checkpoint invalidate it.  The relay
#    says so in relay_status and once in the log, waits calmly instead of
#    crash-looping, and starts over with a new slot when the old one is
#    dropped; outbox.redeliver() then re-publishes what the lost slot held.
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
my $pinned = relay_status($node)->{confirmed_lsn};

# Write WAL and checkpoint until the slot is lost.
$node->safe_psql('postgres', 'CREATE TABLE filler (id int, pad text)');
my $log_pos = log_position($node);
my $rounds = 0;
my $lost = wait_for(
	sub {
		$rounds++;
		$node->safe_psql('postgres',
			"INSERT INTO filler SELECT g, repeat(md5(g::text), 30) FROM generate_series(1, 20000) g; CHECKPOINT;"
		);
		$node->safe_psql('postgres',
			q{SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'outbox'})
		  eq 'lost';
	},
	60);
ok($lost, "slot invalidated after $rounds rounds of ~20 MB of WAL and a checkpoint");

my $s = wait_relay_state($node, 'slot_invalidated', 60);
like($s->{last_error}, qr/invalidated/, 'last_error says the slot was invalidated');
diag("last_error: $s->{last_error}");

# No crash loop: the same process waits, and says it once.
my $pid = $s->{pid};
my $t0 = time();
my $same = 1;
while (time() - $t0 < 12)
{
	my $p = relay_status($node)->{pid};
	$same = 0 if !defined $p || $p != $pid;
	usleep(500_000);
}
ok($same, 'the relay process stays the same for 12 s (no crash loop)');
is(relay_status($node)->{state}, 'slot_invalidated', 'still slot_invalidated');
my $log = log_since($node, $log_pos);
is(count_matches($log, qr/replication slot "outbox" was invalidated because/), 1,
	'the invalidation is logged once, not on every retry');
is(count_matches($log, qr/background worker "outbox relay" \(PID \d+\) exited/), 1,
	'the relay exited once (terminated by the checkpointer that invalidated the slot)');

# Kafka back, old slot dropped: a new slot, new events flow.
$node->safe_psql('postgres', q{
	ALTER SYSTEM RESET outbox.kafka_brokers;
	SELECT pg_reload_conf();});
$node->safe_psql('postgres', q{SELECT pg_drop_replication_slot('outbox')});
wait_relay_state($node, 'streaming', 60);
ok($node->log_contains(qr/outbox relay: creating logical replication slot "outbox"/),
	'the relay created a new slot');
my $new = $node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'k', '{\"n\": \"new\"}')");
ok(wait_relay_idle($node), 'relay caught up on the new slot');
ok(grep({ ($_->{headers}{'outbox-id'} // '') eq $new } consume($broker, $topic)),
	'an event written after the new slot arrived');

# What the lost slot held (events 11..20) is recovered with redeliver().
my $n = $node->safe_psql('postgres', q{SELECT outbox.redeliver('0 seconds')});
diag("redeliver() re-published $n messages");
ok(wait_relay_idle($node), 'relay caught up');
my $d = verify_topic($node, $broker, $topic, 'after redeliver');

$node->stop;
done_testing();
