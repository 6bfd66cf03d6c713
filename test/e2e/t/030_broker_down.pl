#
# 030_broker_down.pl
#    Kafka faults under steady load: every broker down for ~5 s, then
#    transient Produce errors.  Nothing is lost, per-key order of first
#    occurrences holds, relay_status shows the errors and the relay goes
#    back to streaming with nothing in flight.  The mock does not
#    deduplicate a non-transactional idempotent producer's retries, so
#    duplicates are counted and reported, not forbidden.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $t_down = unique_topic('down');
my $t_err = unique_topic('produce_errors');
my $broker = start_broker(topics => [ "$t_down:6", "$t_err:6" ]);
my $node = new_relay_node('broker_down', $broker);

# ---------------------------------------------------------------------
# All brokers down for ~5 s in the middle of the load.
# ---------------------------------------------------------------------
SKIP:
{
	skip 'broker down/up needs the mock broker or OUTBOX_TEST_KAFKA_STOP_CMD/START_CMD', 15
	  unless broker_can_fail($broker);

	my ($out, $err) = ('', '');
	my $h = start_pgbench($node, enqueue_script($t_down, 3),
		[ '-c', 2, '-T', 14, '-R', 200 ], \$out, \$err);

	ok(wait_for(sub { relay_status($node)->{delivered} >= 300 }, 30),
		'events flow before the fault');
	my $before = relay_status($node);

	my $t0 = time();
	if ($broker->{real}) { broker_ctl($broker, 'down', 'all') }
	else { broker_ctl($broker, 'down', $_) for 1 .. 3 }

	# While down: errors are reported, events pile up in flight and the
	# slot's confirmed position stands still.
	ok( wait_for(
			sub {
				my $s = relay_status($node);
				$s->{errors} > $before->{errors} && $s->{in_flight} > 0;
			},
			20),
		'relay_status shows errors and events in flight while Kafka is down');
	my $down = relay_status($node);
	diag("while down: state $down->{state}, errors $down->{errors}, in flight $down->{in_flight}, last error: $down->{last_error}");
	like($down->{last_error}, qr/Kafka|broker|connect|transport/i,
		'last_error names the Kafka problem');
	ok(wait_for(sub { relay_status($node)->{in_flight} > $down->{in_flight} }, 10),
		'decoding goes on while Kafka is down');
	# Read the reference now: an acknowledgement of a request the brokers
	# answered just before they went down can still be counted at the
	# relay's next poll, after the first error was already visible.
	my $ref = relay_status($node);
	my $conf1 = $ref->{confirmed_lsn};
	sleep(5 - (time() - $t0)) if time() - $t0 < 5;	# hold the fault ~5 s
	my $s = relay_status($node);
	is($s->{confirmed_lsn}, $conf1,
		'the slot does not advance past unacknowledged events');
	cmp_ok($s->{delivered}, '<=', $ref->{delivered} + 0,
		'nothing is acknowledged while every broker is down');

	if ($broker->{real}) { broker_ctl($broker, 'up', 'all') }
	else { broker_ctl($broker, 'up', $_) for 1 .. 3 }
	my $t_up = time();
	ok(wait_for(sub { relay_status($node)->{delivered} > $s->{delivered} }, 30),
		'deliveries resume after the brokers are back');
	diag(sprintf('first acknowledgement %.1f s after the brokers came back',
		time() - $t_up));

	$h->finish;
	is($h->result(0), 0, 'writers never noticed (pgbench ran without errors)')
	  or diag($err);
	ok(wait_relay_idle($node), 'relay caught up');
	$s = relay_status($node);
	is($s->{state}, 'streaming', 'relay is streaming again');
	is($s->{in_flight}, 0, 'in_flight back to 0');

	my $d = verify_topic($node, $broker, $t_down, 'brokers down 5 s');
	diag("duplicates after all brokers down for 5 s: $d->{duplicates}");
}

# ---------------------------------------------------------------------
# Transient Produce errors: librdkafka retries them; nothing fails.
#
# Against the mock, with one request in flight per connection: the mock does
# not check an idempotent producer's sequence numbers, so when a Produce
# request fails with a retriable error and the next pipelined request for
# the same partition succeeds, the mock has stored the later batch and not
# the earlier one.  librdkafka, rightly for real Kafka (which would have
# rejected the later batch as out of sequence), then takes the earlier
# batch as implicitly acknowledged (rd_kafka_dr_implicit_ack), and those
# events are lost in the mock only.  With the default pipelining this loses
# a few events per run here; against a real Kafka the default is kept.
# ---------------------------------------------------------------------
SKIP:
{
	skip 'injected Produce errors need the mock broker', 16 if $broker->{real};

	$node->safe_psql('postgres', q{
		ALTER SYSTEM SET outbox.kafka_properties = 'max.in.flight.requests.per.connection=1';
		SELECT pg_reload_conf();});
	ok($node->wait_for_log(qr/Kafka settings changed, rebuilding the producer/),
		'producer rebuilt with one request in flight per connection');
	wait_relay_state($node, 'streaming');
	my $errors0 = relay_status($node)->{errors};
	my $restarts_log = log_position($node);
	my ($out, $err) = ('', '');
	my $h = start_pgbench($node, enqueue_script($t_err, 3),
		[ '-c', 2, '-T', 10, '-R', 200 ], \$out, \$err);
	ok(wait_for(sub { relay_status($node)->{delivered} > 100 }, 30),
		'events flow');
	for my $e (qw(NOT_LEADER_FOR_PARTITION REQUEST_TIMED_OUT
		NOT_ENOUGH_REPLICAS))
	{
		like(broker_ctl($broker, 'error', 'Produce', 20, $e), qr/^ok/,
			"20 x $e injected into Produce");
		my $d0 = relay_status($node)->{delivered};
		ok(wait_for(sub { relay_status($node)->{delivered} > $d0 + 100 }, 30),
			"deliveries go on after $e");
	}
	$h->finish;
	is($h->result(0), 0, 'pgbench ran without errors') or diag($err);
	ok(wait_relay_idle($node), 'relay caught up');
	my $s = relay_status($node);
	is($s->{in_flight}, 0, 'in_flight back to 0');
	is($s->{state}, 'streaming', 'still streaming');
	my $rebuilds = count_matches(log_since($node, $restarts_log),
		qr/rebuilding the producer/);
	diag("producer rebuilds during transient errors: $rebuilds; relay errors counted: "
		  . ($s->{errors} - $errors0));

	my $d = verify_topic($node, $broker, $t_err, 'transient Produce errors');
	diag("duplicates after 60 injected Produce errors: $d->{duplicates}");
}

$node->stop;
done_testing();
