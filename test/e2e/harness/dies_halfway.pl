#
# dies_halfway.pl
#    Not a test of outbox: the test file that e2e 003 runs under
#    test/run_test.pl to check that a test which ends badly leaves nothing
#    behind.  It starts a node with the relay, a mock broker and two
#    writers, records their pids in $ENV{HARNESS_STATE}, and then, by
#    $ENV{HARNESS_MODE}:
#      die     dies (END blocks run)
#      kill    kills itself with SIGKILL (no END block runs: the node, the
#              writers and the broker are left to the runner)
#      hang    sleeps until the runner's time limit stops it
#      stall   the same, on a node of its own (for the case whose runner
#              is killed)
#      orphan  forks a child that loops for ever holding the TAP pipe (as
#              the old writer did), then ends with every test passed
#
# test/e2e/harness/dies_halfway.pl
#
use strict;
use warnings;

use Cwd ();
use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $mode = $ENV{HARNESS_MODE} // 'die';
my $state = $ENV{HARNESS_STATE} or die "HARNESS_STATE not set";

my $topic = unique_topic('harness');
my $b = start_broker(topics => ["$topic:2"]);
my $node = new_relay_node("halfway_$mode", $b);
my @w = map { start_writer($node, $topic, name => "h$_", pause => 0.01) } 1 .. 2;
ok(wait_for(sub { $node->safe_psql('postgres', 'SELECT count(*) FROM outbox.messages') > 20 }, 60),
	'writers are writing');

my $orphan;
if ($mode eq 'orphan')
{
	$orphan = fork();
	die "fork: $!" unless defined $orphan;
	if ($orphan == 0)
	{
		# like the old writer: the test's own code, its copy of the TAP
		# pipe, a loop that only a stop file ends
		sleep 1 while 1;
	}
}

open my $fh, '>', $state or die "could not write $state: $!";
print $fh "postmaster $node->{_pid}\n";
print $fh "datadir " . Cwd::abs_path($node->data_dir) . "\n";
print $fh "writer $_->{pid}\n" for @w;
print $fh "broker " . $b->{handle}{KIDS}[0]{PID} . "\n" if $b->{handle};
print $fh "orphan $orphan\n" if $orphan;
print $fh "ready\n";
close $fh;

if ($mode eq 'die')
{
	die "dies half-way on purpose\n";
}
elsif ($mode eq 'kill')
{
	kill 'KILL', $$;
}
elsif ($mode eq 'hang' || $mode eq 'stall')
{
	sleep 1 while 1;
}
done_testing();
