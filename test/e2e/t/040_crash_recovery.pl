#
# 040_crash_recovery.pl
#    Crashes in the middle of the stream: (a) SIGKILL of the relay, which
#    makes the postmaster reinitialise the cluster; (b) an immediate
#    shutdown and a start.  Writers keep trying through the crash; the truth
#    is what outbox.messages holds afterwards.  Nothing is lost, and the only
#    duplicates are events at or after the position the relay resumed from
#    (the unconfirmed window).
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

sub lsn_value
{
	my ($lsn) = @_;
	my ($hi, $lo) = split m{/}, $lsn;
	return hex($hi) * 2**32 + hex($lo);
}

# Run writers, crash the server with $crash, keep writing, then check.
sub crash_run
{
	my ($node, $broker, $topic, $label, $crash) = @_;

	my @writers = map { start_writer($node, $topic, name => "w$_", pause => 0.005) } 1 .. 3;
	ok(wait_for(sub { (relay_status($node) // {})->{delivered} // 0 >= 500 }, 30),
		"$label: events flow before the crash");
	my $pid_before = relay_pid($node);
	my $delivered_before = relay_status($node)->{delivered};
	my $log_pos = log_position($node);

	my $t0 = time();
	$crash->($pid_before);

	my $back = wait_for(
		sub {
			my $s = eval { relay_status($node) };
			return $s && $s->{pid} && $s->{pid} != $pid_before
			  && $s->{state} eq 'streaming' && $s->{delivered} > 100;
		},
		60);
	ok($back, "$label: relay back and delivering");
	diag(sprintf('%s: relay delivering again %.1f s after the crash (%d delivered before it)',
		$label, time() - $t0, $delivered_before));

	my $w = { batches_ok => 0, batches_failed => 0 };
	for (@writers)
	{
		my $r = $_->stop;
		$w->{$_} += $r->{$_} for keys %$r;
	}
	diag("$label: writer batches ok $w->{batches_ok}, failed $w->{batches_failed}");
	ok(wait_relay_idle($node), "$label: relay caught up");

	# Where the new relay resumed: everything before it was confirmed.
	my ($resume) = log_since($node, $log_pos)
	  =~ /outbox relay streaming slot "outbox_5" from ([0-9A-F]+\/[0-9A-F]+)/;
	ok(defined $resume, "$label: relay logged where it resumed");
	$resume //= '0/0';

	my $d = verify_topic($node, $broker, $topic, $label);
	my %n;
	$n{ $_->{headers}{'outbox-id'} }++ for @{ $d->{records} };
	my @early = grep {
		$n{ $_->{headers}{'outbox-id'} } > 1
		  && lsn_value($_->{headers}{'outbox-lsn'}) < lsn_value($resume)
	} @{ $d->{records} };
	is(scalar(@early), 0,
		"$label: duplicates only at or after the resume position $resume");
	diag("$label: $d->{duplicates} duplicates (events re-sent from the unconfirmed window after $resume)");
	return $d;
}

my $t_kill = unique_topic('crash_kill');
my $t_stop = unique_topic('crash_stop');
my $broker = start_broker(topics => [ "$t_kill:6", "$t_stop:6" ]);
my $node = new_relay_node('crash', $broker,
	extra_conf => "restart_after_crash = on\n");

# (a) SIGKILL of the relay: the postmaster kills every backend and
# reinitialises shared memory, as after any crashed backend.
crash_run(
	$node, $broker, $t_kill,
	'relay SIGKILL',
	sub {
		my ($pid) = @_;
		kill 'KILL', $pid;
	});
ok($node->log_contains(qr/background worker "outbox relay" \(PID \d+\) was terminated by signal 9/),
	'the postmaster saw the relay killed');

# (b) immediate shutdown and start.
crash_run(
	$node, $broker, $t_stop,
	'immediate shutdown',
	sub {
		$node->stop('immediate');
		$node->start;
	});

is(relay_status($node)->{in_flight}, 0, 'nothing in flight at the end');
$node->stop;
done_testing();
