#
# 155_retention.pl
#    Retention inside the relay (outbox.retention): rows of outbox.messages
#    older than the setting that Kafka acknowledged are deleted, when their
#    verdict is confirmed or (scheduled redelivery being off) missing; rows
#    with a failed verdict or a dead letter are kept, and so are rows Kafka
#    did not acknowledge, confirmed or not (Kafka down: nothing written
#    meanwhile is deleted).  A backlog is deleted in small transactions
#    while writers keep writing; the delete rate is reported.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $topic = unique_topic('retention');
my $broker = start_broker(topics => ["$topic:3"]);
my $node = new_relay_node('retention', $broker,
	extra_conf => "outbox.retention = '2s'\n");

sub sql { return $node->safe_psql('postgres', $_[0]) }

sub set_conf
{
	my ($line) = @_;
	$node->append_conf('postgresql.conf', "$line\n");
	$node->reload;
	sleep 0.5;
}

# ---------------------------------------------------------------------
# What is deleted, what is kept.
# ---------------------------------------------------------------------
sql("SELECT outbox.enqueue('$topic', 'k' || i, jsonb_build_object('i', i)) FROM generate_series(1, 20) AS i");
sql("SELECT outbox.confirm(i) FROM generate_series(1, 5) AS i");
sql("SELECT outbox.confirm(i, 'failed', 'no stock') FROM generate_series(6, 8) AS i");
sql("INSERT INTO outbox.dead_letters (message_id, topic, key, payload, error_code, error)
     VALUES (9, '$topic', 'k9', '{}', 'MSG_SIZE_TOO_LARGE', 'Message size too large')");
ok(wait_relay_idle($node), 'the 20 events are delivered');
ok(wait_for(sub { sql('SELECT count(*) FROM outbox.messages') == 4 }, 30),
	'acknowledged confirmed and unanswered rows older than 2 s are deleted');
is(sql('SELECT string_agg(id::text, \',\' ORDER BY id) FROM outbox.messages'),
	'6,7,8,9', 'failed (6, 7, 8) and dead-lettered (9) rows are kept');
is(sql('SELECT count(*) FROM outbox.dead_letters'), '1', 'the dead letter is kept');
is(relay_status($node)->{purged}, 16, 'relay_status.purged counts the 16 rows deleted');

# ---------------------------------------------------------------------
# Kafka down: nothing written meanwhile is acknowledged, nothing deleted.
# ---------------------------------------------------------------------
SKIP:
{
	skip 'broker down/up needs the mock broker', 4 unless broker_can_fail($broker);
	broker_ctl($broker, 'down', $_) for 1 .. 3;
	sql("SELECT outbox.enqueue('$topic', 'down' || i, '{}') FROM generate_series(1, 50) AS i");
	sql("SELECT outbox.confirm(id) FROM outbox.messages WHERE key LIKE 'down%' AND id % 2 = 0");
	ok(wait_for(sub { relay_status($node)->{in_flight} >= 50 }, 20),
		'the events are in flight, unacknowledged');
	sleep 8;	# retention 2 s, a pass every 2 s
	is(sql("SELECT count(*) FROM outbox.messages WHERE key LIKE 'down%'"), '50',
		'while Kafka is down no row written meanwhile is deleted, confirmed or not');
	broker_ctl($broker, 'up', $_) for 1 .. 3;
	ok(wait_relay_idle($node), 'delivered once Kafka is back');
	ok( wait_for(sub { sql("SELECT count(*) FROM outbox.messages WHERE key LIKE 'down%'") == 0 },
			30),
		'then they are deleted');
}

# ---------------------------------------------------------------------
# A backlog deleted in small transactions while writers write.
# ---------------------------------------------------------------------
my $backlog = 50_000;
set_conf("outbox.retention = '1h'");
sql("SELECT outbox.enqueue('$topic', 'b' || (i % 100), jsonb_build_object('i', i)) FROM generate_series(1, $backlog) AS i");
ok(wait_relay_quiet($node, 300), "the backlog of $backlog events is delivered");
sleep 2.5;	# older than 2 s

my ($out, $err) = ('', '');
my $h = start_pgbench($node, enqueue_script($topic, 1),
	[ '-c', 2, '-T', 12, '-R', 200 ], \$out, \$err);
sleep 1;
my $purged_before = relay_status($node)->{purged};
set_conf("outbox.retention = '2s'");
my $t0 = time();
my (@counts, $max_xact, $t_done);
$max_xact = 0;
while (time() - $t0 < 60)
{
	my ($n, $age) = split /\|/, sql(
		"SELECT (SELECT count(*) FROM outbox.messages WHERE key LIKE 'b%'),
		        coalesce((SELECT max(extract(epoch FROM clock_timestamp() - xact_start))
		                    FROM pg_stat_activity WHERE backend_type = 'outbox relay'), 0)");
	push @counts, $n;
	$max_xact = $age if $age > $max_xact;
	if ($n == 0)
	{
		$t_done = time();
		last;
	}
	sleep 0.1;
}
ok(defined $t_done, 'the backlog is deleted');
my $secs = ($t_done // time()) - $t0;
my %distinct = map { $_ => 1 } grep { $_ > 0 && $_ < $backlog } @counts;
cmp_ok(scalar keys %distinct, '>=', 3,
	'in steps: the count was seen at ' . (scalar keys %distinct) . ' values in between');
cmp_ok($max_xact, '<', 1.0,
	sprintf('the relay\'s longest transaction seen while deleting: %.3f s', $max_xact));
cmp_ok(relay_status($node)->{purged} - $purged_before, '>=', $backlog,
	'relay_status.purged counts the backlog');
diag(sprintf('retention deleted %d rows in %.1f s (%.0f rows/s) while pgbench wrote',
	$backlog, $secs, $backlog / ($secs || 1)));
$h->finish;
is($h->result(0), 0, 'the writers ran without an error') or diag($err);
like($out, qr/number of failed transactions: 0|processed: \d+/, 'pgbench wrote');
ok(wait_relay_idle($node), 'everything the writers wrote is delivered');
ok( wait_for(sub { sql("SELECT count(*) FROM outbox.messages WHERE confirm_status IS NULL AND id NOT IN (9)") == 0 },
		30),
	'and deleted in turn, once older than 2 s');
is(sql('SELECT string_agg(id::text, \',\' ORDER BY id) FROM outbox.messages'),
	'6,7,8,9', 'the failed and dead-lettered rows are still there');

$node->stop;
done_testing();
