#
# 055_transient_errors.pl
#    Errors that are usually transient (here TOPIC_AUTHORIZATION_FAILED on
#    Produce) are retried, holding back later events, so per-key order holds:
#    (a) two refused Produce requests: nothing is dead-lettered, every event
#        arrives once, in commit order;
#    (b) refused for longer than outbox.dead_letter_after: dead-lettered,
#        then the stream goes on;
#    (c) outbox.on_permanent_error = block: never dead-lettered, the relay
#        reports that it is blocked, and everything arrives in order once
#        the cause is gone;
#    (d) block mode holds back a record error too, until the mode is
#        switched back to dead_letter.
#    Needs the mock broker's injected errors.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use JSON::PP;
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $broker = start_broker();
if ($broker->{real})
{
	plan skip_all => 'injected errors need the mock broker';
}
my $topic = unique_topic('transient');
broker_ctl($broker, 'create_topic', $topic, 3);
my $node = new_relay_node('transient', $broker);

sub set_conf
{
	my ($name, $value) = @_;
	$node->safe_psql('postgres',
		"ALTER SYSTEM SET $name = '$value'; SELECT pg_reload_conf();");
	# the relay applies the reload in its next loop
	usleep(500_000);
}

sub dead_count
{
	return $node->safe_psql('postgres', 'SELECT count(*) FROM outbox.dead_letters');
}

# Events of one key, one transaction each; returns their ids.
sub enqueue_key
{
	my ($key, @ns) = @_;
	return map {
		$node->safe_psql('postgres',
			"SELECT outbox.enqueue('$topic', '$key', '{\"n\": $_}')")
	} @ns;
}

# The ids of a key's records in Kafka, in partition order.
sub key_ids
{
	my ($key, $count) = @_;
	return map { $_->{headers}{'outbox-id'} }
	  grep { $_->{key} eq $key }
	  consume($broker, $topic, idle_ms => 1000);
}

# ---------------------------------------------------------------------
# (a) The issue's case: two refused Produce requests for six events of one
# key.  Today's Kafka would be fine a moment later: retried, in order.
# ---------------------------------------------------------------------
ok(wait_relay_idle($node), 'relay idle');
my $pos = log_position($node);
like(broker_ctl($broker, 'error', 'Produce', 2, 'TOPIC_AUTHORIZATION_FAILED'),
	qr/^ok/, 'the next two Produce requests will be refused');
my @a = enqueue_key('k1', 1 .. 6);
ok(wait_relay_idle($node, 60), 'relay caught up');
is(dead_count(), 0, 'nothing was dead-lettered');
is(relay_status($node)->{dead_lettered}, 0, 'relay_status: no dead letters');
is_deeply([ key_ids('k1') ], \@a, 'all six events arrived once, in commit order');
like(log_since($node, $pos), qr/retrying, later events wait/,
	'the retries are logged');

# ---------------------------------------------------------------------
# (b) Refused for longer than outbox.dead_letter_after (1 s here): the
# events are dead-lettered, not before that time, and the stream goes on.
# ---------------------------------------------------------------------
set_conf('outbox.dead_letter_after', '1s');
like(broker_ctl($broker, 'error', 'Produce', 100000, 'TOPIC_AUTHORIZATION_FAILED'),
	qr/^ok/, 'every Produce request is refused');
my $t0 = time();
my @b = enqueue_key('k2', 1 .. 2);
ok(wait_for(sub { dead_count() >= 2 }, 60), 'both events were dead-lettered');
my $took = time() - $t0;
cmp_ok($took, '>=', 1.0, sprintf('not before outbox.dead_letter_after (%.1f s)', $took));
is($node->safe_psql('postgres',
	"SELECT string_agg(message_id || ':' || error_code, ',' ORDER BY id) FROM outbox.dead_letters"),
	"$b[0]:TOPIC_AUTHORIZATION_FAILED,$b[1]:TOPIC_AUTHORIZATION_FAILED",
	'in order, with the error');
like(broker_ctl($broker, 'clear_errors', 'Produce'), qr/^ok/, 'the cause is gone');
my @b2 = enqueue_key('k2', 3);
ok(wait_relay_idle($node, 60), 'relay caught up');
is_deeply([ key_ids('k2') ], \@b2, 'the next event arrived');

# ---------------------------------------------------------------------
# (c) Block mode: refused for longer than outbox.dead_letter_after, but
# never dead-lettered; the relay says it is blocked; once the cause is gone
# everything arrives in order.
# ---------------------------------------------------------------------
set_conf('outbox.on_permanent_error', 'block');
$pos = log_position($node);
like(broker_ctl($broker, 'error', 'Produce', 100000, 'TOPIC_AUTHORIZATION_FAILED'),
	qr/^ok/, 'every Produce request is refused');
my @c = enqueue_key('k3', 1 .. 3);
ok(wait_for(sub { (relay_status($node)->{last_error} // '') =~ /blocked/ }, 30),
	'relay_status says the relay is blocked');
sleep(3);
is(dead_count(), 2, 'nothing more was dead-lettered after 3 s (dead_letter_after is 1 s)');
cmp_ok(relay_status($node)->{in_flight}, '>=', 3, 'the events are still in flight');
like(log_since($node, $pos), qr/blocked: Kafka refuses an event/, 'the block is logged');
like(broker_ctl($broker, 'clear_errors', 'Produce'), qr/^ok/, 'the cause is gone');
ok(wait_relay_idle($node, 60), 'relay caught up');
is_deeply([ key_ids('k3') ], \@c, 'all three arrived once, in commit order');
is(dead_count(), 2, 'no dead letter in block mode');

# ---------------------------------------------------------------------
# (d) Block mode holds back a record error too (a message too large for
# the producer); switching to dead_letter lets the stream go on.
# ---------------------------------------------------------------------
my $big = $node->safe_psql(
	'postgres', qq{
SET outbox.max_message_size = '4MB';
SELECT outbox.enqueue('$topic', 'k4', jsonb_build_object('fill', repeat('x', 2 * 1024 * 1024)));
});
my @d = enqueue_key('k4', 1);
sleep(2);
is(dead_count(), 2, 'block mode: the oversized event is not dead-lettered');
is_deeply([ key_ids('k4') ], [], 'and the event after it waits');
set_conf('outbox.on_permanent_error', 'dead_letter');
ok(wait_relay_idle($node, 60), 'after switching to dead_letter, the relay caught up');
is($node->safe_psql('postgres',
	"SELECT error_code FROM outbox.dead_letters WHERE message_id = $big"),
	'MSG_SIZE_TOO_LARGE', 'the oversized event was dead-lettered');
is_deeply([ key_ids('k4') ], \@d, 'the event after it arrived');

$node->stop;
done_testing();
