#
# 107_extension_recreated_while_lagging.pl
#    DROP and CREATE EXTENSION while the relay lags behind (every broker
#    down, window full): the relay interleaves live catalog access with
#    historic decoding, invalidating caches around its own transactions as
#    core does.  Events of the old and of the new installation are all
#    delivered once Kafka is back, with no error and no restart.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;

plan skip_all => 'needs the mock broker (broker faults)' if real_kafka();

my $topic = unique_topic('recreated');
my $broker = start_broker(topics => ["$topic:3"]);
my $node = new_relay_node('recreated', $broker,
	extra_conf => "outbox.max_in_flight = 5\n");
my $pid = relay_pid($node);

broker_ctl($broker, 'down', $_) for 1 .. 3;
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'old' || (i % 2), pg_catalog.jsonb_build_object('gen', 'old', 'n', i)) FROM generate_series(1, 20) i");
ok(wait_for(sub { relay_status($node)->{state} eq 'kafka_unreachable' }, 20),
	'relay lags with Kafka down');

my $pos = log_position($node);
$node->safe_psql('postgres', 'DROP EXTENSION outbox');
$node->safe_psql('postgres', 'CREATE EXTENSION outbox');
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'new' || (i % 2), pg_catalog.jsonb_build_object('gen', 'new', 'n', i)) FROM generate_series(1, 20) i");
$node->safe_psql('postgres', "SELECT outbox.emit('$topic', 'emitted', '{\"gen\": \"new\"}')");

broker_ctl($broker, 'up', $_) for 1 .. 3;
ok(wait_relay_idle($node, 90), 'relay caught up once Kafka is back');
is(relay_pid($node), $pid, 'no restart');

my @recs = consume($broker, $topic);
my %seen;
for my $r (@recs)
{
	my $v = $r->{value} // '';
	my ($gen) = $v =~ /"gen":"(\w+)"/;
	my ($n) = $v =~ /"n":(\d+)/;
	$seen{ $gen . ':' . ($n // 'emit') } = 1 if $gen;
}
is(scalar(grep { $seen{"old:$_"} } 1 .. 20), 20, 'all 20 events of the old installation delivered');
is(scalar(grep { $seen{"new:$_"} } 1 .. 20), 20, 'all 20 events of the new installation delivered');
ok($seen{'new:emit'}, 'the new installation\'s emit() was authenticated with its new key');
my $log = log_since($node, $pos);
unlike($log, qr/ERROR|skipping/, 'no error and nothing skipped');

done_testing();
