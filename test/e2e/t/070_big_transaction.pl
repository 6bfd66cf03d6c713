#
# 070_big_transaction.pl
#    One transaction of 1,000,000 events: every one arrives, and the
#    relay's memory stays bounded while it streams (decoding spills to disk
#    past logical_decoding_work_mem; Kafka's side is bounded by
#    outbox.max_in_flight).
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use POSIX ();
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $N = 1_000_000;
my $topic = unique_topic('big_txn');
# 64 partitions: the mock keeps only ~5 MiB per partition.
my $broker = start_broker(topics => ["$topic:64"]);
my $node = new_relay_node('big_txn', $broker,
	extra_conf => "log_statement = none\nlogical_decoding_work_mem = 64MB\n");

my $pid = relay_pid($node);
my $m0 = proc_memory($pid);
diag("relay $pid before: RssAnon $m0->{RssAnon} kB, VmHWM $m0->{VmHWM} kB");

my $t0 = time();
# The insert runs in a child process; we sample while it runs and after.
my $dir = PostgreSQL::Test::Utils::tempdir();
my $child = OutboxTest::spawn(
	[
		'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
		'-d', $node->connstr('postgres'), '-c',
		"INSERT INTO outbox.messages (topic, key, payload)
		 SELECT '$topic', 'k' || (g % 1000), jsonb_build_object('g', g)
		   FROM generate_series(1, $N) g"
	],
	"$dir/out");
my $insert_rc;

# Sample the relay's memory every 200 ms until everything is acknowledged.
my ($peak_anon, $peak_hwm, $samples, $t_commit) = (0, 0, 0, undef);
my $done = 0;
my $deadline = time() + 150;
while (time() < $deadline)
{
	my $m = proc_memory($pid) or last;
	$samples++;
	$peak_anon = $m->{RssAnon} if $m->{RssAnon} > $peak_anon;
	$peak_hwm = $m->{VmHWM} if $m->{VmHWM} > $peak_hwm;
	if (!defined $t_commit && waitpid($child, POSIX::WNOHANG()) == $child)
	{
		$insert_rc = $? >> 8;
		OutboxTest::forget_spawned($child);
		$t_commit = time();
	}
	if (defined $t_commit && $samples % 5 == 0)
	{
		my $s = relay_status($node);
		if ($s->{delivered} >= $N && $s->{in_flight} == 0)
		{
			$done = 1;
			last;
		}
	}
	usleep(200_000);
}
my $t_done = time();
ok(defined $t_commit && $insert_rc == 0, 'the 1,000,000-row transaction committed')
  or diag(slurp_file("$dir/out"));
ok($done, 'the relay acknowledged all 1,000,000 events');
is(relay_pid($node), $pid, 'the same relay process did it all');
diag(sprintf('insert+commit %.1f s, relay done %.1f s after the commit (%.0f events/s)',
	$t_commit - $t0, $t_done - $t_commit, $N / (($t_done - $t_commit) || 1)));
diag(sprintf('relay memory while streaming (%d samples): peak RssAnon %.1f MB, VmHWM %.1f MB',
	$samples, $peak_anon / 1024, $peak_hwm / 1024));

# Bound: logical_decoding_work_mem (64 MB) for the reorder buffer before it
# spills, plus outbox.max_in_flight (20,000 by default) records of ~0.5 kB
# each (our copy of the frame and librdkafka's message and batch buffers),
# plus librdkafka's and the backend's own memory, under 200 MB together.
# Without a bound on either side it would be the whole transaction (over
# 300 MB of events).
cmp_ok($peak_anon / 1024, '<', 200, 'relay RssAnon stayed below 200 MB');

ok(wait_relay_idle($node), 'slot confirmed past the transaction');

# Read everything back (a bitmap of ids, and per-key order).
my ($min_id, $max_id) = split /\|/, $node->safe_psql('postgres',
	"SELECT min(id), max(id) FROM outbox.messages WHERE topic = '$topic'");
is($max_id - $min_id + 1, $N, 'the ids are one contiguous range');
my $bits = '';
my ($distinct, $dups, $bad, $order) = (0, 0, 0, 0);
my %last_id;
my $t1 = time();
my $lines = consume_lines(
	$broker, $topic,
	sub {
		my ($t, $p, $o, $k, $v, $hdr) = @_;
		my ($id) = $hdr =~ /"outbox-id":"(\d+)"/;
		if (!defined $id || $id < $min_id || $id > $max_id) { $bad++; return; }
		if (vec($bits, $id - $min_id, 1)) { $dups++; return; }
		vec($bits, $id - $min_id, 1) = 1;
		$distinct++;
		# one transaction: per key, ids must increase
		$order++ if defined $last_id{$k} && $id < $last_id{$k};
		$last_id{$k} = $id;
	},
	idle_ms => 3000,
	timeout_ms => 150_000);
diag(sprintf('consumed %d records in %.1f s', $lines, time() - $t1));
is($distinct, $N, 'count of distinct outbox-ids is 1,000,000');
is($bad, 0, 'no record without a valid outbox-id');
is($order, 0, 'per key, the events arrived in insert order');
diag("duplicates: $dups");

$node->stop;
done_testing();
