#
# 130_slot_dropped.pl
#    The slot is dropped mid-stream, three times, while two writers keep
#    committing events: the operator stops the relay and drops its slot
#    before the launcher starts it again.  Each time the relay creates a
#    new slot, republishes the rows of outbox.messages that the delivery
#    watermark does not cover, and streams on.  Consuming Kafka: nothing
#    lost, per-key order kept (each writer has keys of its own, so the
#    commit order of every key is known), duplicates only from the window
#    between the last watermark and the loss (reported).
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $topic = unique_topic('dropped');
my $broker = start_broker(topics => ["$topic:4"]);
my $node = new_relay_node('slot_dropped', $broker);

my @writers = map {
	start_writer($node, $topic, name => "w$_", key_prefix => "w$_", keys => 5,
		pause => 0.005)
} 1 .. 2;
sleep 2;

my $log_pos = log_position($node);
for my $round (1 .. 3)
{
	my $before = relay_status($node);
	# Stop the relay and drop its slot before the launcher restarts it.
	my $dropped = drop_relay_slot($node, 'outbox_5');
	ok($dropped, "round $round: slot dropped while writers run");
	my $s = wait_relay_state($node, 'streaming', 60);
	isnt($s->{pid}, $before->{pid}, "round $round: a new relay process streams");
	sleep 2;
}
my $log = log_since($node, $log_pos);
is(count_matches($log, qr/outbox relay: creating logical replication slot "outbox_5"/), 3,
	'three new slots were created');
is(count_matches($log, qr/published \d+ row\(s\) of outbox\.messages again after the slot change/), 3,
	'three replays finished');
my @replayed = $log =~ /published (\d+) row\(s\) of outbox\.messages again/g;
diag("rows published again per slot change: @replayed");

my @results = map { $_->stop } @writers;
diag("writer $_: $results[$_ - 1]{batches_ok} batches") for 1 .. 2;
ok(wait_relay_idle($node), 'relay caught up');
my $d = verify_topic($node, $broker, $topic, 'slot dropped three times');
diag("duplicates from the three watermark windows: $d->{duplicates}");
ok($d->{duplicates} <= $replayed[0] + $replayed[1] + $replayed[2],
	'every duplicate is a row published again');

$node->stop;
done_testing();
