#
# 096_rewind_skips_acked.pl
#    A rewind (here: a reload of the Kafka settings) in the middle of a
#    partly acknowledged transaction.  The relay decodes the transaction
#    again from the slot's confirmed position, but produces only the events
#    Kafka had not acknowledged: no duplicates, and no key's events go
#    backwards in Kafka.
#
#    One transaction of 300 events over 30 keys on a 3-partition topic whose
#    partition 0 is led by broker 1, which is down: partitions 1 and 2 are
#    acknowledged, partition 0 waits.  Then the settings change (rewind),
#    then broker 1 comes back.  Needs the mock broker (down/up, leaders).
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $topic = unique_topic('rewind');
my $broker = start_broker(topics => ["$topic:3"]);
if ($broker->{real})
{
	plan skip_all => 'stopping one broker and moving leaders needs the mock broker';
}
for my $p (0 .. 2)
{
	like(broker_ctl($broker, 'leader', $topic, $p, $p + 1), qr/^ok/,
		"partition $p led by broker " . ($p + 1));
}
my $node = new_relay_node('rewind', $broker);

my @keys = map { "key-$_" } 0 .. 29;
my %part = map { $_ => java_partition($_, 3) } @keys;
my $n_p0 = 10 * scalar(grep { $part{$_} == 0 } @keys);
cmp_ok($n_p0, '>', 0, "$n_p0 events go to partition 0");

ok(wait_relay_idle($node), 'relay idle');
like(broker_ctl($broker, 'down', 1), qr/^ok/, 'broker 1 (leader of partition 0) down');

my $sql = "BEGIN;\n";
for my $i (0 .. 299)
{
	my $key = $keys[ $i % 30 ];
	$sql .= "SELECT outbox.enqueue('$topic', '$key', '{\"i\": $i}');\n";
}
$sql .= "COMMIT;\n";
$node->safe_psql('postgres', $sql);

ok( wait_for(sub { relay_status($node)->{in_flight} == $n_p0 }, 60),
	"partitions 1 and 2 acknowledged, the $n_p0 events of partition 0 wait")
  or diag('in_flight: ' . relay_status($node)->{in_flight});

# A rewind: the relay rebuilds its producer and decodes the transaction again.
my $pos = log_position($node);
$node->safe_psql('postgres',
	"ALTER SYSTEM SET outbox.kafka_properties = 'client.id=outbox-rewind'; SELECT pg_reload_conf();");
ok( wait_for(sub { log_since($node, $pos) =~ /rebuilding the producer/ }, 30),
	'the relay rewound');
like(broker_ctl($broker, 'up', 1), qr/^ok/, 'broker 1 up');
ok(wait_relay_idle($node, 120), 'relay caught up');
like(log_since($node, $pos),
	qr/\d+ event\(s\) of 1 unsettled transaction\(s\) were acknowledged before the rewind/,
	'the acknowledged events were handed to the new producer');

my @records = consume($broker, $topic, idle_ms => 2000);
my $d = check_delivery(\@records, [ table_ids($node, "topic = '$topic'") ]);
is($d->{distinct}, 300, 'all 300 events arrived');
is(scalar(@{ $d->{missing} }), 0, 'none missing');
is($d->{duplicates}, 0, 'none twice: acknowledged events were not produced again');
is_deeply([ check_per_key_order(@records) ], [], 'per-key order holds');

$node->stop;
done_testing();
