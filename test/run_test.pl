#!/usr/bin/perl
#
# run_test.pl
#    Runs one TAP test file for prove (prove --exec 'perl test/run_test.pl')
#    under a time limit, and takes every process the file started with it.
#
#    The test runs in a process group of its own, with OUTBOX_TEST_SCOPE set
#    to a value unique to this run; every program it starts inherits that
#    variable, also the ones that leave the group (pg_ctl's postmaster calls
#    setsid).  When the test ends, or overruns OUTBOX_TEST_TIMEOUT seconds
#    (default 900), or this runner is told to stop, the runner stops the
#    group (SIGTERM first, so that the test's END blocks stop its nodes) and
#    then every process that still carries the scope, with the children of
#    such processes (backends show their status where the environment was):
#    SIGQUIT to PostgreSQL's, SIGTERM to the others, SIGKILL to what is left
#    5 s later.  An overrun is reported by name with the last lines of the
#    test's logs; processes left behind by a test that ended are named, and
#    either makes the file fail.  Processes meant to outlive a test (the
#    suite's Kafka nodes, restarted by test/kafka/kafka.sh) drop the variable.
#
# test/run_test.pl
#
use strict;
use warnings;

use File::Basename qw(basename);
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

my $file = pop @ARGV;
die "usage: run_test.pl TEST-FILE\n" unless defined $file && -f $file;
my $limit = $ENV{OUTBOX_TEST_TIMEOUT} || 900;
my $name = basename($file, '.pl');
my $scope = sprintf('%s.%d.%d', $name, $$, int(time() * 1000));

# prctl(PR_SET_PDEATHSIG, sig) on Linux, a no-op elsewhere: the runner is
# stopped (SIGTERM) when prove is gone, and the test when the runner is,
# however each of them ends (a suite's timeout(1) may kill prove outright).
sub die_with_parent
{
	my ($sig) = @_;
	my $nr = eval { require 'syscall.ph'; &SYS_prctl() };
	$nr //= { x86_64 => 157, aarch64 => 167 }->{ (POSIX::uname())[4] };
	syscall($nr, 1, $sig) if defined $nr;
	return;
}

my $prove = getppid();
die_with_parent(15);
my $pid = fork();
die "run_test.pl: fork failed: $!\n" unless defined $pid;
if ($pid == 0)
{
	setpgrp(0, 0);
	die_with_parent(15);
	$ENV{OUTBOX_TEST_SCOPE} = $scope;
	exec { $^X } $^X, @ARGV, $file
	  or print STDERR "run_test.pl: could not run $file: $!\n";
	POSIX::_exit(127);
}
# Both sides set the group, so that a signal right after the fork finds it.
setpgrp($pid, $pid);

my $stop_signal;
$SIG{$_} = sub { $stop_signal //= $_[0] } for qw(TERM INT HUP);

my $deadline = time() + $limit;
my $status;
my $timed_out = 0;
while (1)
{
	my $r = waitpid($pid, WNOHANG);
	if ($r == $pid)
	{
		$status = $?;
		last;
	}
	$stop_signal //= 'TERM' if getppid() != $prove;	# prove is gone
	if (time() >= $deadline || defined $stop_signal)
	{
		$timed_out = !defined $stop_signal;
		last;
	}
	sleep(0.1);
}

if (!defined $status)
{
	my $why = $timed_out
	  ? "ran over its time limit of $limit s (OUTBOX_TEST_TIMEOUT)"
	  : "was stopped by SIG$stop_signal";
	print STDERR "# run_test: $file $why; stopping it and every process it started\n";
	kill 'TERM', -$pid;
	my $grace = time() + 20;
	while (time() < $grace)
	{
		last if waitpid($pid, WNOHANG) == $pid;
		sleep(0.1);
	}
	kill 'KILL', -$pid;
	waitpid($pid, 0);
	$status = $? || 9;
	print_log_tails($name) if $timed_out;
}

my @left = stop_scope($scope, $pid);
if (@left)
{
	print STDERR "# run_test: $file left processes behind (stopped now):\n";
	print STDERR "#   $_\n" for @left;
}

exit(128 + 15) if defined $stop_signal;
my $rc = $status & 127 ? 128 + ($status & 127) : $status >> 8;
$rc = 1 if $rc == 0 && ($timed_out || @left);
exit($rc);

# Stop every process of the run: the group, then whatever carries the
# scope and the children of those.  Returns a description of each process
# that was still there once the group leader had ended.
sub stop_scope
{
	my ($scope, $pgid) = @_;
	my @found;
	my %named;
	my %groups = ($pgid => 1);

	# Processes may take a moment to exit after their parent's END blocks.
	my $settle = time() + 5;
	my @procs;
	while (1)
	{
		@procs = scope_processes($scope, \%groups);
		last if !@procs || time() >= $settle;
		sleep(0.2);
	}
	return () unless @procs;

	# From here on the groups of what was found count too: a backend whose
	# postmaster is gone has init for its parent, but keeps the group.
	$groups{ $_->{pgrp} } = 1 for @procs;
	for my $p (@procs)
	{
		push @found, "$p->{pid} $p->{cmd}" unless $named{ $p->{pid} }++;
		kill($p->{postgres} ? 'QUIT' : 'TERM', $p->{pid});
	}
	for my $signal ('KILL', undef)
	{
		my $until = time() + 5;
		while (time() < $until)
		{
			@procs = scope_processes($scope, \%groups);
			last unless @procs;
			sleep(0.2);
		}
		last unless @procs && defined $signal;
		for my $p (@procs)
		{
			push @found, "$p->{pid} $p->{cmd}" unless $named{ $p->{pid} }++;
			kill $signal, $p->{pid};
		}
	}
	return @found;
}

# The live processes of the run: in one of its process groups, carrying the
# scope in their environment, or descended from such a process.
sub scope_processes
{
	my ($scope, $groups) = @_;
	my (%info, %children, @roots);
	my $needle = "\0OUTBOX_TEST_SCOPE=$scope\0";
	opendir(my $dh, '/proc') or return ();
	for my $p (grep { /^\d+$/ } readdir $dh)
	{
		next if $p == $$;
		open(my $sf, '<', "/proc/$p/stat") or next;
		my $stat = <$sf> // '';
		close $sf;
		# pid (comm) state ppid pgrp ...; comm may hold spaces and parens
		next unless $stat =~ /\)\s+(\S)\s+(\d+)\s+(\d+)/;
		my ($state, $ppid, $pgrp) = ($1, $2, $3);
		next if $state eq 'Z' || $state eq 'X';
		my $env = '';
		if (open(my $ef, '<', "/proc/$p/environ"))
		{
			local $/;
			$env = <$ef> // '';
			close $ef;
		}
		my $cmd = '';
		if (open(my $cf, '<', "/proc/$p/cmdline"))
		{
			local $/;
			$cmd = <$cf> // '';
			close $cf;
			$cmd =~ s/\0+$//;
			$cmd =~ tr/\0/ /;
		}
		my $exe = readlink("/proc/$p/exe") // '';
		$info{$p} = {
			pid => $p,
			pgrp => $pgrp,
			cmd => substr($cmd, 0, 200),
			postgres => basename($exe) eq 'postgres' ? 1 : 0,
		};
		push @{ $children{$ppid} }, $p;
		push @roots, $p
		  if $groups->{$pgrp} || index("\0$env", $needle) >= 0;
	}
	closedir $dh;

	my %in;
	my @queue = @roots;
	while (defined(my $p = shift @queue))
	{
		next if $in{$p}++;
		push @queue, @{ $children{$p} // [] };
	}
	return map { $info{$_} } sort { $a <=> $b } keys %in;
}

# The last lines of the test's own log and of its nodes' logs
# (PostgreSQL::Test::Utils writes them under tmp_check/log).
sub print_log_tails
{
	my ($name) = @_;
	my $dir = ($ENV{TESTDIR} ? "$ENV{TESTDIR}/" : '') . 'tmp_check/log';
	for my $log ("$dir/regress_log_$name", glob("$dir/${name}_*.log"))
	{
		next unless -f $log;
		my $n = $log =~ /regress_log_/ ? 40 : 15;
		open(my $fh, '<', $log) or next;
		my @lines = <$fh>;
		close $fh;
		splice(@lines, 0, @lines - $n) if @lines > $n;
		print STDERR "# --- last lines of $log\n";
		print STDERR "# $_" for @lines;
	}
}
