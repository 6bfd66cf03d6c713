#
# 003_harness.pl
#    The test harness itself: a test file that ends badly, run under
#    test/run_test.pl as run_all.sh runs every end-to-end file, leaves no
#    process behind and is reported as failed, and the run goes on.  Each
#    mode of harness/dies_halfway.pl starts a node with the relay, a mock
#    broker and two writers, then dies, kills itself with SIGKILL, hangs
#    past a 20 s time limit, or leaves a forked child holding the TAP pipe;
#    and a runner killed outright takes its file down with it.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use IPC::Run;
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

plan skip_all => 'runs on the mock broker only (suite e2e)' if real_kafka();

my $runner = "$FindBin::RealBin/../../run_test.pl";
my $inner = "$FindBin::RealBin/../harness/dies_halfway.pl";

# Is a process alive (and not a zombie)?
sub alive
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/stat" or return 0;
	my $stat = <$fh> // '';
	return $stat !~ /\)\s+[ZX]\s/;
}

# Processes of a data directory's server (an absolute path): PostgreSQL's
# processes work in their data directory.
sub processes_naming
{
	my ($dir) = @_;
	my @found;
	opendir my $dh, '/proc' or return ();
	for my $p (grep { /^\d+$/ } readdir $dh)
	{
		my $cwd = readlink("/proc/$p/cwd") // next;
		next unless $cwd eq $dir && alive($p);
		open my $fh, '<', "/proc/$p/cmdline" or next;
		local $/;
		my $cmd = <$fh> // '';
		$cmd =~ tr/\0/ /;
		push @found, "$p $cmd";
	}
	return @found;
}

for my $case (
	[ die => 60, qr/Looks like your test exited with \d+ just after/ ],
	[ kill => 60, qr/left processes behind/ ],
	[ hang => 20, qr/ran over its time limit of 20 s/ ],
	[ orphan => 60, qr/left processes behind/ ])
{
	my ($mode, $limit, $says) = @$case;
	my $state = PostgreSQL::Test::Utils::tempdir() . '/state';
	local $ENV{HARNESS_MODE} = $mode;
	local $ENV{HARNESS_STATE} = $state;
	local $ENV{OUTBOX_TEST_TIMEOUT} = $limit;
	my ($out, $err) = ('', '');
	my $t0 = time();
	# The runner must come back by itself: an IPC::Run timeout here fails
	# the case instead of hanging this test.
	my $ok = eval {
		IPC::Run::run([ $^X, $runner, $inner ], '<', \undef, '>', \$out,
			'2>', \$err, IPC::Run::timeout(180));
		1;
	};
	my $took = time() - $t0;
	ok($ok, "$mode: the runner returned (after " . sprintf('%.1f', $took) . ' s)')
	  or diag("$mode: $@");
	isnt($? >> 8, 0, "$mode: the file is reported as failed");
	like($err, $says, "$mode: the runner says why") or diag($err);
	like($err, qr/dies_halfway\.pl/, "$mode: the file is named") if $mode ne 'die';

	my $s = -f $state ? slurp_file($state) : '';
	like($s, qr/^ready$/m, "$mode: the file got half-way");
	my @pids = $s =~ /^(?:postmaster|writer|broker|orphan) (\d+)$/mg;
	my ($datadir) = $s =~ /^datadir (.+)$/m;
	my @alive = grep { alive($_) } @pids;
	is(scalar(@alive), 0, "$mode: none of its " . scalar(@pids) . ' processes is left')
	  or diag("$mode: still running: @alive");
	my @node = defined $datadir ? processes_naming($datadir) : ();
	is(scalar(@node), 0, "$mode: no server of its node is left") or diag(join("\n", @node));
	like($err, qr/last lines of .*regress_log_dies_halfway/, "$mode: the log's last lines are shown")
	  if $mode eq 'hang';
}

# The runner itself killed outright (a suite's timeout(1) killing prove and
# its children, say): the test gets SIGTERM from its parent-death signal and
# stops its node through its END blocks; its helpers die with it.
{
	my $state = PostgreSQL::Test::Utils::tempdir() . '/state';
	local $ENV{HARNESS_MODE} = 'stall';
	local $ENV{HARNESS_STATE} = $state;
	local $ENV{OUTBOX_TEST_TIMEOUT} = 120;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ $^X, $runner, $inner ], '<', \undef, '>', \$out,
		'2>', \$err);
	ok(wait_for(sub { -f $state && slurp_file($state) =~ /^ready$/m }, 90),
		'runner killed: the file got half-way');
	my $s = -f $state ? slurp_file($state) : '';
	my @pids = $s =~ /^(?:postmaster|writer|broker) (\d+)$/mg;
	my ($datadir) = $s =~ /^datadir (.+)$/m;
	$h->signal('KILL');
	eval { $h->finish };
	ok(wait_for(sub { !grep { alive($_) } @pids }, 60),
		'runner killed: none of the file\'s ' . scalar(@pids) . ' processes is left')
	  or diag('still running: ' . join(' ', grep { alive($_) } @pids));
	my @node = defined $datadir ? processes_naming($datadir) : ();
	is(scalar(@node), 0, 'runner killed: no server of its node is left')
	  or diag(join("\n", @node));
}

done_testing();
