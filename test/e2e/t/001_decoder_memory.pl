#
# 001_decoder_memory.pl
#	  The outbox output plugin decodes a 1,000,000-event transaction through
#	  a walsender (pg_recvlogical) completely, in order, in flat memory.
#
# Run as a non-root user from a writable directory, with the server's
# bindir first in PATH:
#
#	  prove -I $(pg_config --pkglibdir)/pgxs/src/test/perl test/e2e/t/001_decoder_memory.pl
#
# The memory bound: the reorder buffer keeps at most logical_decoding_work_mem
# (32MB here) of decoded changes in memory and spills the rest to disk; the
# plugin itself allocates per event in a scratch context reset after every
# change.  A walsender's peak resident set is then its baseline (about 10MB
# of code, catalog caches and touched shared memory), the reorder buffer's
# 32MB plus allocator overhead, and one event's output buffer.  100MB leaves
# room for that overhead, while a leak of 70 bytes per event (70MB over a
# million events) would exceed it.  Measured on PostgreSQL 15: about 55MB;
# with the scratch context's reset removed from the change callback, about
# 290MB.
#
# test/e2e/t/001_decoder_memory.pl
#
use strict;
use warnings;

use File::Basename qw(dirname);
use Time::HiRes qw(usleep);

BEGIN
{
	# pg_regress (for --config-auth) lives in the PGXS tree of the server
	# found in PATH, unless the caller already said where.
	if (!defined $ENV{PG_REGRESS})
	{
		my $pgxs = `pg_config --pgxs`;
		chomp $pgxs;
		$ENV{PG_REGRESS} = dirname(dirname($pgxs)) . '/test/regress/pg_regress';
	}
}

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $nevents = 1_000_000;
my $rss_bound_kb = 100 * 1024;

my $node = PostgreSQL::Test::Cluster->new('decoder_memory');
$node->init(allows_streaming => 'logical');
$node->append_conf(
	'postgresql.conf', q{
output_plugin_libraries = 'pgoutput, test_decoding, outbox'
logical_decoding_work_mem = 32MB
shared_buffers = 32MB
max_wal_size = 4GB
checkpoint_timeout = 30min
log_statement = none
});
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION outbox');
$node->safe_psql('postgres',
	"SELECT pg_create_logical_replication_slot('mem', 'outbox')");

# One transaction, a million events with small payloads and headers.
$node->safe_psql(
	'postgres', qq{
INSERT INTO outbox.messages (topic, key, payload, headers)
SELECT 'orders', 'k' || i,
       jsonb_build_object('order', i, 'lines', jsonb_build_array(i, i + 1), 'note', 'decoder memory test'),
       '{"source": "tap"}'
  FROM generate_series(1, $nevents) AS i;
});
my $end_lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
note "inserted $nevents events, WAL up to $end_lsn";

# Stream it through a walsender.
my $outfile = $node->basedir . '/events.json';
my ($stdout, $stderr);
my $recv = IPC::Run::start(
	[
		'pg_recvlogical', '-d', $node->connstr('postgres'),
		'--slot', 'mem', '--start', '-o', 'format=json',
		'-f', $outfile, '-F', '0', '--no-loop'
	],
	'>', \$stdout, '2>', \$stderr);

# Find the walsender serving it (a walsender, as pg_stat_replication shows).
my $pid;
for (my $i = 0; $i < 30 * 10 && !$pid; $i++)
{
	$pid = $node->safe_psql('postgres',
		"SELECT s.pid FROM pg_replication_slots r JOIN pg_stat_replication s ON s.pid = r.active_pid WHERE r.slot_name = 'mem'"
	);
	usleep(100_000) if !$pid;
}
ok($pid, "walsender for pg_recvlogical is running (pid $pid)");

# Wait until the last event has been written out.
my $timeout = 150;
my $start = time;
my $lines = 0;
while (time - $start < $timeout)
{
	$lines = count_lines($outfile);
	last if $lines >= $nevents;
	usleep(200_000);
}

# Read the walsender's peak RSS before it goes away.
my $hwm_kb = read_vm_hwm($pid);
my $rss_kb = read_status_kb($pid, 'VmRSS');
$recv->kill_kill;

is($lines, $nevents, "pg_recvlogical wrote $nevents lines");

# (a) every event exactly once, in id order, from one transaction
open my $fh, '<', $outfile or die "could not open $outfile: $!";
my ($count, $in_order, $prev_id, %xids, %lsns, $bad) = (0, 1, 0);
while (my $line = <$fh>)
{
	$count++;
	if ($line !~ /^\{"id":(\d+),"topic":"orders","key":"k(\d+)","payload":\{[^\n]*\},"headers":\{"source":"tap"\},"lsn":"([0-9A-F]+\/[0-9A-F]+)","xid":(\d+),"commit_time":"[^"]+"\}$/)
	{
		$bad = $line unless defined $bad;
		next;
	}
	$in_order = 0 if $1 != $prev_id + 1 || $2 != $1;
	$prev_id = $1;
	$xids{$4} = 1;
	$lsns{$3} = 1;
}
close $fh;
is($count, $nevents, "exactly $nevents events decoded");
ok(!defined $bad, 'every line is a well-formed event')
  or diag("first bad line: " . substr($bad, 0, 300));
ok($in_order, 'events are in id order, ids 1..N without gaps');
is(scalar(keys %xids), 1, 'all events carry the same xid');
is(scalar(keys %lsns), 1, 'all events carry the same commit LSN');

# (b) flat memory
ok(defined $hwm_kb, 'read the walsender VmHWM');
diag(sprintf("walsender peak RSS (VmHWM): %.1f MB, current RSS: %.1f MB, bound %d MB",
		$hwm_kb / 1024, ($rss_kb // 0) / 1024, $rss_bound_kb / 1024));
cmp_ok($hwm_kb // $rss_bound_kb, '<', $rss_bound_kb,
	"walsender peak RSS stays under " . ($rss_bound_kb / 1024) . " MB");

$node->poll_query_until('postgres',
	"SELECT NOT active FROM pg_replication_slots WHERE slot_name = 'mem'")
  or die "slot mem stayed active";
$node->safe_psql('postgres', "SELECT pg_drop_replication_slot('mem')");
$node->stop;
done_testing();

sub count_lines
{
	my ($file) = @_;
	open my $f, '<', $file or return 0;
	my $n = 0;
	my $buf;
	while (sysread($f, $buf, 1 << 20))
	{
		$n += ($buf =~ tr/\n//);
	}
	close $f;
	return $n;
}

sub read_status_kb
{
	my ($p, $field) = @_;
	open my $f, '<', "/proc/$p/status" or return undef;
	while (<$f>)
	{
		return $1 if /^\Q$field\E:\s+(\d+)\s+kB/;
	}
	return undef;
}

sub read_vm_hwm
{
	my ($p) = @_;
	return read_status_kb($p, 'VmHWM');
}
