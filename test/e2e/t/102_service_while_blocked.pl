#
# 102_service_while_blocked.pl
#    The relay keeps serving reloads, status and Kafka while it waits:
#    with outbox.max_in_flight = 5 and every broker down, 20 events make it
#    wait inside the decoder; relay_status shows kafka_unreachable, errors
#    and a growing lag within seconds, and a reload pointing
#    outbox.kafka_brokers at a live cluster drains everything without a
#    restart.  Counters never go backwards across producer rebuilds.
#    Also: events committed while outbox.kafka_brokers is empty are kept and
#    delivered once it is set; the state follows CREATE and DROP EXTENSION
#    at once.  (Mock broker only: it needs two clusters and broker faults.)
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

plan skip_all => 'needs the mock broker (two clusters, broker faults)'
  if real_kafka();

my $topic = unique_topic('blocked');
my $a = start_broker(topics => ["$topic:3"]);
my $b = start_broker(topics => ["$topic:3"]);
my $node = new_relay_node('service_blocked', $a,
	extra_conf => "outbox.max_in_flight = 5\n");
my $pid = relay_pid($node);

# A few events through cluster A first, so that counters are not zero.
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'k' || (i % 3), pg_catalog.jsonb_build_object('n', i)) FROM generate_series(1, 3) i");
ok(wait_relay_idle($node), 'first events delivered to cluster A');
my $s0 = relay_status($node);
is($s0->{delivered}, 3, 'three delivered');

broker_ctl($a, 'down', $_) for 1 .. 3;
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'k' || (i % 3), pg_catalog.jsonb_build_object('n', i)) FROM generate_series(4, 23) i");

ok(wait_for(sub { relay_status($node)->{state} eq 'kafka_unreachable' }, 20),
	'state becomes kafka_unreachable while every broker is down');
my $s1 = relay_status($node);
ok($s1->{in_flight} > 0 && $s1->{in_flight} <= 5, "window is full ($s1->{in_flight} in flight)");
sleep(2);
my $s2 = relay_status($node);
ok($s2->{lag_seconds} > $s1->{lag_seconds} && $s2->{lag_seconds} >= 2,
	"lag grows while waiting ($s1->{lag_seconds} s, then $s2->{lag_seconds} s)");
ok($s2->{errors} >= $s1->{errors}, 'errors are counted');
isnt($s2->{last_error} // '', '', 'last_error says what is wrong');

# The reload is applied while the relay waits inside the decoder.
$node->safe_psql('postgres',
	"ALTER SYSTEM SET outbox.kafka_brokers = '$b->{bootstrap}'; SELECT pg_reload_conf()");
ok(wait_relay_idle($node, 60), 'a reload to a live cluster drains everything');
is(relay_pid($node), $pid, 'without a restart of the relay');
my @recs = consume($b, $topic);
my %ids = map { $_->{headers}{'outbox-id'} => 1 } @recs;
is(scalar(grep { $ids{$_} } 4 .. 23), 20, 'all 20 events reached cluster B');
my $s3 = relay_status($node);
ok($s3->{delivered} >= $s0->{delivered} + 20,
	"delivered kept counting across the producer rebuild ($s0->{delivered} -> $s3->{delivered})");
is($s3->{state}, 'streaming', 'streaming again');

# Kafka unset: the slot keeps events; they go out once brokers are set.
$node->safe_psql('postgres',
	"ALTER SYSTEM SET outbox.kafka_brokers = ''; SELECT pg_reload_conf()");
ok(wait_for(sub { relay_status($node)->{state} eq 'disabled' }, 20), 'disabled without brokers');
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'unset', '{\"while\": \"unset\"}')");
my $unset_id = $node->safe_psql('postgres', 'SELECT max(id) FROM outbox.messages');
$node->safe_psql('postgres',
	"ALTER SYSTEM SET outbox.kafka_brokers = '$b->{bootstrap}'; SELECT pg_reload_conf()");
ok(wait_relay_idle($node, 60), 'relay streams again after brokers are set');
@recs = consume($b, $topic);
ok((grep { ($_->{headers}{'outbox-id'} // '') eq $unset_id } @recs),
	'the event written while brokers were unset was delivered');
ok(relay_status($node)->{delivered} >= $s3->{delivered},
	'delivered never went backwards');

# The state follows DROP and CREATE EXTENSION within seconds.
my $pos = log_position($node);
$node->safe_psql('postgres', 'DROP EXTENSION outbox');
ok(wait_for(sub { log_since($node, $pos) =~ /extension "outbox" is not installed/ }, 10),
	'the relay notices DROP EXTENSION within seconds');
$node->safe_psql('postgres', 'CREATE EXTENSION outbox');
my $t0 = time();
ok(wait_for(sub { relay_status($node)->{state} eq 'streaming' }, 10),
	sprintf('streaming again after CREATE EXTENSION, no event needed (%.1f s)', time() - $t0));

done_testing();
