#
# 132_before_first_slot.pl
#    Rows committed after CREATE EXTENSION but before the relay ever ran
#    (outbox not yet in shared_preload_libraries, so no slot existed) are
#    delivered once the relay starts: its first slot has no watermark behind
#    it, so it publishes every unanswered row written before it, in id
#    order, then streams.  Rows with a verdict are not published again.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $topic = unique_topic('firstslot');
my $broker = start_broker(topics => ["$topic:3"]);

my $node = PostgreSQL::Test::Cluster->new('before_first_slot');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', qq{
output_plugin_libraries = 'pgoutput, test_decoding, outbox'
max_replication_slots = 10
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION outbox');
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'k' || g % 3, jsonb_build_object('n', g)) FROM generate_series(1, 50) g"
);
# one row already answered by a consumer: not published again
$node->safe_psql('postgres',
	"SELECT outbox.confirm((SELECT min(id) FROM outbox.messages), 'confirmed')");
is($node->safe_psql('postgres', 'SELECT count(*) FROM pg_replication_slots'),
	'0', 'no slot exists yet');

# Now the relay is set up.
my $props = join(';', OutboxTest::_kafka_properties());
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'outbox'
outbox.kafka_brokers = '$broker->{bootstrap}'
outbox.kafka_properties = '$props'
outbox.databases = 'postgres'
outbox.retry_interval = '200ms'
});
$node->restart;
wait_relay_state($node, 'streaming', 60);
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'k' || g % 3, jsonb_build_object('after', g)) FROM generate_series(1, 10) g"
);
ok(wait_relay_idle($node), 'relay caught up');
like(slurp_file($node->logfile),
	qr/published 49 row\(s\) of outbox\.messages again after the slot change/,
	'the 49 unanswered rows written before the first slot were published');

my @truth = table_ids($node, "topic = '$topic'");
my @recs = consume($broker, $topic, idle_ms => 2000);
my $d = check_delivery(\@recs, [ @truth[ 1 .. $#truth ] ]);
is(scalar(@{ $d->{missing} }), 0, 'every unanswered row and every later one arrived');
is($d->{duplicates}, 0, 'none twice');
is(scalar(@{ $d->{unexpected} }), 0, 'nothing unexpected');
ok(!grep({ ($_->{headers}{'outbox-id'} // '') eq $truth[0] } @recs),
	'the row with a verdict was not published');
is(scalar(check_per_key_order(@recs)), 0, 'per-key order');

$node->stop;
done_testing();
