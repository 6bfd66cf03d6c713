#
# 050_dead_letters.pl
#    Poison records: events Kafka rejects permanently go to
#    outbox.dead_letters with the full event and the error, the stream goes
#    on in order, the slot moves past them, and outbox.redrive() re-publishes
#    one once the cause is fixed.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use JSON::PP;
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $t_big = unique_topic('big');
my $t_ok = unique_topic('fine');
my $t_denied = unique_topic('denied');
my $broker = start_broker(topics => [ "$t_big:3", "$t_ok:3" ]);
my $node = new_relay_node('dead_letters', $broker,
	kafka_properties => 'topic.metadata.refresh.interval.ms=1000');

sub dead_letters
{
	my ($where) = @_;
	my $out = $node->safe_psql('postgres',
		"SELECT row_to_json(d) FROM (SELECT id, message_id, topic, key, error_code, error, lsn, xid,
		        octet_length(payload::text) AS payload_bytes, payload->>'n' AS n, headers
		   FROM outbox.dead_letters WHERE $where ORDER BY id) d");
	return map { decode_json($_) } grep { $_ ne '' } split /\n/, $out;
}

# ---------------------------------------------------------------------
# (a) A record larger than the producer's message.max.bytes (1000000).
# ---------------------------------------------------------------------
my $before = $node->safe_psql('postgres',
	"SELECT outbox.enqueue('$t_big', 'k', '{\"n\": \"before\"}')");
my $big = $node->safe_psql(
	'postgres', qq{
SET outbox.max_message_size = '4MB';
SELECT outbox.enqueue('$t_big', 'k',
    jsonb_build_object('n', 'big', 'fill', repeat('x', 2 * 1024 * 1024)),
    '{"h": "big"}');
});
my $big_commit = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my $after = $node->safe_psql('postgres',
	"SELECT outbox.enqueue('$t_big', 'k', '{\"n\": \"after\"}')");

ok(wait_for(sub { dead_letters('true') >= 1 }, 30),
	'the oversized event was dead-lettered');
my @dl = dead_letters("message_id = $big");
is(scalar(@dl), 1, 'one dead letter for the oversized event');
is($dl[0]{error_code}, 'MSG_SIZE_TOO_LARGE', 'error_code says why');
ok($dl[0]{error} ne '', "error text: $dl[0]{error}");
is($dl[0]{topic}, $t_big, 'topic recorded');
is($dl[0]{key}, 'k', 'key recorded');
cmp_ok($dl[0]{payload_bytes}, '>', 2 * 1024 * 1024, 'full payload recorded');
is($dl[0]{n}, 'big', 'payload is the event\'s');
is_deeply($dl[0]{headers}, { h => 'big' }, 'headers recorded');
ok(defined $dl[0]{lsn} && defined $dl[0]{xid}, 'commit LSN and xid recorded');

ok(wait_relay_idle($node), 'relay caught up');
is($node->safe_psql('postgres',
	qq{SELECT confirmed_lsn >= '$big_commit' FROM outbox.relay_status}),
	't', 'the slot moved past the oversized event');
my @recs = consume($broker, $t_big);
is_deeply([ map { $_->{headers}{'outbox-id'} } @recs ], [ $before, $after ],
	'the events before and after it arrived, in order, and nothing else');
my $s = relay_status($node);
is($s->{dead_lettered}, 1, 'relay_status counts the dead letter');
is($s->{state}, 'streaming', 'still streaming');
like($s->{last_error}, qr/dead_letters/, 'last_error points at dead_letters');

# ---------------------------------------------------------------------
# (b) A topic the producer may not write to (mock only): its events are
# dead-lettered, the other topics flow on in order; redrive after the cause
# is fixed.
#
# The mock's "topic_error T TOPIC_AUTHORIZATION_FAILED" cannot be used: the
# mock answers Metadata with the error *and* the topic's partitions, which
# librdkafka 2.0.2 takes as an existing topic with a transient error, so the
# events wait forever (message.timeout.ms = 0) instead of failing.  Real
# Kafka sends no partitions with that error and librdkafka fails the
# events.  A Produce response with TOPIC_AUTHORIZATION_FAILED (write denied,
# describe allowed) is injected instead; librdkafka then marks the topic as
# failed, so later events for it fail at once, until a metadata refresh
# (topic.metadata.refresh.interval.ms, 1 s here) sees the topic is fine.
# ---------------------------------------------------------------------
SKIP:
{
	skip 'injected errors need the mock broker', 19 if $broker->{real};

	my $n = 0;
	my $ok_event = sub {
		$n++;
		return "SELECT outbox.enqueue('$t_ok', 'key-' || ($n % 3), '{\"n\": $n}');\n";
	};
	$node->safe_psql('postgres', join('', map { $ok_event->() } 1 .. 10));
	ok(wait_relay_idle($node), 'relay idle before the poison');

	# Nothing else is in flight: the next Produce request carries the poison.
	like(broker_ctl($broker, 'error', 'Produce', 1, 'TOPIC_AUTHORIZATION_FAILED'),
		qr/^ok/, 'next Produce request will be denied');
	my $first = $node->safe_psql('postgres',
		"SELECT outbox.enqueue('$t_denied', 'p', '{\"n\": \"poison-1\"}')");
	ok(wait_for(sub { dead_letters("topic = '$t_denied'") >= 1 }, 30),
		'the denied event was dead-lettered');

	# More events, mixed in transactions with the other topic, right after:
	# the producer knows the topic is denied and fails them at once.
	my $sql = '';
	for my $i (1 .. 3)
	{
		$sql .= "BEGIN;\n" . $ok_event->();
		$sql .= "SELECT outbox.enqueue('$t_denied', 'p', '{\"n\": \"poison-" . ($i + 1) . "\"}');\n";
		$sql .= $ok_event->() . "COMMIT;\n";
	}
	$node->safe_psql('postgres', $sql);
	my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	my @poison = table_ids($node, "topic = '$t_denied'");
	is(scalar(@poison), 4, 'four events for the denied topic');

	ok(wait_relay_idle($node), 'relay caught up');
	is($node->safe_psql('postgres',
		qq{SELECT confirmed_lsn >= '$end' FROM outbox.relay_status}),
		't', 'the slot moved past the rejected events');
	my @d = dead_letters("topic = '$t_denied'");
	my %denied_dead = map { $_->{message_id} => 1 } @d;
	is($d[0]{message_id}, $first, 'the first dead letter is the first denied event');
	is($d[0]{error_code}, 'TOPIC_AUTHORIZATION_FAILED', 'error_code names the cause');
	diag('denied-topic events dead-lettered: ' . scalar(@d) . ' of 4 ('
		  . join(', ', map { "$_->{message_id}: $_->{error_code}" } @d) . ')');
	is(relay_status($node)->{dead_lettered}, 1 + scalar(@d),
		'relay_status counts every dead letter');

	my $v = verify_topic($node, $broker, $t_ok, 'other topic', exactly_once => 1);
	is(scalar(@{ $v->{records} }), $n, "all $n events of the other topic arrived");

	# Nothing was dropped silently: every event is in Kafka or dead_letters.
	my %in_kafka;
	$in_kafka{ $_->{headers}{'outbox-id'} } = 1
	  for @{ $v->{records} }, consume($broker, $t_big),
	  consume($broker, $t_denied, idle_ms => 500, timeout_ms => 5000);
	my %dead = map { $_->{message_id} => 1 } dead_letters('true');
	my @lost = grep { !$in_kafka{$_} && !$dead{$_} } table_ids($node);
	is(scalar(@lost), 0, 'every event is either in Kafka or in dead_letters')
	  or diag("neither: @lost");

	# The cause is gone (the injected error was used up); once the
	# producer's metadata shows the topic fine again, a redrive goes through.
	my $redrives = 0;
	my @got;
	ok( wait_for(
			sub {
				my $open = $node->safe_psql('postgres',
					"SELECT id FROM outbox.dead_letters WHERE message_id = $first ORDER BY id DESC LIMIT 1");
				$node->safe_psql('postgres', "SELECT outbox.redrive($open)");
				$redrives++;
				wait_relay_idle($node, 10);
				@got = grep { ($_->{headers}{'outbox-id'} // '') eq $first }
				  consume($broker, $t_denied, idle_ms => 500, timeout_ms => 5000);
				@got >= 1;
			},
			30),
		'the redriven event arrived');
	diag("redrives needed: $redrives");
	is(scalar(@got), 1, 'once');
	is(decode_json($got[0]{value})->{n}, 'poison-1', 'with its payload');
}

# ---------------------------------------------------------------------
# (c) One dead letter per event: redriving the oversized event, which Kafka
#     rejects again, counts the failure on its dead letter instead of adding
#     a row; redeliver() leaves it to redrive().
# ---------------------------------------------------------------------
my ($big_dl) = dead_letters("message_id = $big");
$node->safe_psql('postgres',
	"SET outbox.max_message_size = '4MB'; SELECT outbox.redrive($big_dl->{id})");
ok( wait_for(
		sub {
			$node->safe_psql('postgres',
				"SELECT failures FROM outbox.dead_letters WHERE message_id = $big")
			  eq '2';
		},
		30),
	'a redrive that Kafka rejects again is counted on the dead letter');
is(scalar(dead_letters("message_id = $big")), 1,
	'still one dead letter for the event');
$node->safe_psql('postgres', 'SELECT outbox.redeliver(\'0\')');
is($node->safe_psql('postgres', "SELECT attempts FROM outbox.messages WHERE id = $big"),
	'2', 'redeliver() does not re-send a dead-lettered message');

$node->stop;
done_testing();
