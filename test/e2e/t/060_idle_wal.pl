#
# 060_idle_wal.pl
#    An idle outbox must not pin WAL: with no events to relay and heavy
#    writes to other tables, the slot's confirmed position keeps up with the
#    WAL and, after a checkpoint, the slot retains almost nothing.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $topic = unique_topic('idle');
my $broker = start_broker(topics => ["$topic:1"]);
my $node = new_relay_node('idle_wal', $broker,
	extra_conf => "max_wal_size = 1GB\nlog_statement = none\n");

# Some events first, so the relay has something in its past.
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'k', jsonb_build_object('n', g)) FROM generate_series(1, 10) g"
);
ok(wait_relay_idle($node), 'relay caught up with the outbox');

$node->safe_psql('postgres', 'CREATE TABLE filler (id int, pad text)');
my $start = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');

# ~250 MB of WAL without a single outbox event, in 13 transactions of
# ~1 kB rows (below the TOAST threshold, so nothing is compressed).
# Meanwhile, watch how far behind the slot's confirmed position is.
my ($max_lag, $max_retained) = (0, 0);
my $t0 = time();
for my $i (1 .. 13)
{
	$node->safe_psql('postgres',
		"INSERT INTO filler SELECT g, repeat(md5(g::text), 30) FROM generate_series(1, 20000) g"
	);
	my ($lag, $ret) = split /\|/, $node->safe_psql('postgres',
		q{SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_lsn), wal_retained_bytes
		    FROM outbox.relay_status});
	$max_lag = $lag if $lag > $max_lag;
	$max_retained = $ret if $ret > $max_retained;
}
my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my $written = $node->safe_psql('postgres',
	"SELECT pg_wal_lsn_diff('$end', '$start')");
diag(sprintf('wrote %.0f MB of non-outbox WAL in %.1f s; confirmed position at most %.1f MB behind, slot retained at most %.1f MB meanwhile',
	$written / 2**20, time() - $t0, $max_lag / 2**20, $max_retained / 2**20));
cmp_ok($written, '>', 200 * 2**20, 'more than 200 MB of WAL written');

# The relay decodes through it all (finding nothing) and confirms it.
my $t1 = time();
ok( wait_for(
		sub {
			$node->safe_psql('postgres',
				"SELECT confirmed_lsn >= '$end' FROM outbox.relay_status") eq 't';
		},
		60),
	'the slot\'s confirmed position reached the end of the writes');
diag(sprintf('confirmed position caught up %.1f s after the writes', time() - $t1));

# A checkpoint logs the running transactions; once the relay has decoded
# past that record, the slot's restart_lsn may move up to it.  What is
# left is at most what was written since that record: the checkpoint's own
# records and the relay's catch-up, far below one 16 MB WAL segment.
# 32 MB (two segments) leaves room for a checkpoint that starts while the
# last insert's WAL is still being decoded.
$node->safe_psql('postgres', 'CHECKPOINT');
my $retained;
ok( wait_for(
		sub {
			$retained = relay_status($node)->{wal_retained_bytes};
			$retained < 32 * 2**20;
		},
		30),
	'after a checkpoint the slot retains less than 32 MB of WAL');
diag(sprintf('WAL retained by the slot after the checkpoint: %.2f MB (%d bytes)',
	$retained / 2**20, $retained));
is($node->safe_psql('postgres',
	q{SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'outbox_5'}),
	'reserved', 'slot wal_status is reserved');

# The old segments can go: a second checkpoint removes or recycles them.
$node->safe_psql('postgres', 'CHECKPOINT');
my $oldest = $node->safe_psql('postgres',
	q{SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'});
my $start_seg = $node->safe_psql('postgres',
	"SELECT pg_walfile_name('$start')");
ok($oldest gt $start_seg,
	"WAL from before the writes was removed (oldest segment $oldest, writes began in $start_seg)");

# Still relaying.
my $id = $node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'k', '{\"n\": \"after\"}')");
ok(wait_relay_idle($node), 'relay caught up');
my @recs = consume($broker, $topic);
is(scalar(@recs), 11, 'all 11 events arrived');
is($recs[-1]{headers}{'outbox-id'}, $id, 'the last one after the writes');
is(relay_status($node)->{state}, 'streaming', 'still streaming');

$node->stop;
done_testing();
