#
# 150_redelivery_schedule.pl
#    Scheduled redelivery inside the relay (outbox.redeliver_interval,
#    outbox.redeliver_after, outbox.max_attempts): an unanswered message is
#    published again at the interval, attempt 2, then 3, each record with
#    its outbox-id and outbox-attempt headers, no sooner than redeliver_after
#    after the previous one, and is then marked expired, visibly, and
#    published no more.  A verdict (confirmed or failed) stops it; a reload
#    turns it off; redeliver() with more attempts revives an expired message.
#    While Kafka is unreachable nothing is redelivered (no attempt is used up
#    by a publication that cannot be delivered).
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $topic = unique_topic('schedule');
my $broker = start_broker(topics => ["$topic:3"]);
my $node = new_relay_node(
	'redelivery_schedule', $broker,
	extra_conf => qq{
outbox.redeliver_interval = '500ms'
outbox.redeliver_after = '2s'
outbox.max_attempts = 3
});

sub sql { return $node->safe_psql('postgres', $_[0]) }

my %id;
for my $name (qw(silent confirmed failed late))
{
	$id{$name} = sql("SELECT outbox.enqueue('$topic', '$name', '{\"n\": \"$name\"}')");
}
# Verdicts before the first redelivery is due: these are never redelivered.
sql("SELECT outbox.confirm($id{confirmed})");
sql("SELECT outbox.confirm($id{failed}, 'failed', 'out of stock')");

# Watch the silent message's publications (published_at of each attempt)
# until it expires; 'late' gets its verdict after its second publication.
my %published_at;
my $late_confirmed = 0;
my $expired = wait_for(
	sub {
		my ($a, $p, $e) = split /\|/,
		  sql("SELECT attempts, extract(epoch FROM published_at), expired_at IS NOT NULL FROM outbox.messages WHERE id = $id{silent}");
		$published_at{$a} //= $p;
		if (!$late_confirmed &&
			sql("SELECT attempts FROM outbox.messages WHERE id = $id{late}") >= 2)
		{
			sql("SELECT outbox.confirm($id{late})");
			$late_confirmed = 1;
		}
		return $e eq 't';
	},
	30);
ok($late_confirmed, 'an unanswered message is published a second time');
ok($expired, 'the silent message expires');
is( sql("SELECT attempts, confirm_status IS NULL FROM outbox.messages WHERE id = $id{silent}"),
	'3|t', 'it expired after max_attempts = 3 publications without a verdict');
is_deeply([ sort keys %published_at ], [ 1, 2, 3 ], 'attempts 1, 2 and 3 were seen');
# Each redelivery comes redeliver_after (2 s) or more after the previous
# publication, and no later than redeliver_after + interval + slack.
for my $i (2, 3)
{
	my $gap = $published_at{$i} - $published_at{ $i - 1 };
	ok($gap >= 2 && $gap < 5,
		sprintf('publication %d came %.2f s after publication %d', $i, $gap, $i - 1));
}
like(slurp_file($node->logfile),
	qr/scheduled redelivery published \d+ unanswered message\(s\) again and expired 1/,
	'the expiry is logged');

# Nothing more is published for any of them: wait for two more intervals.
sleep 3;
ok(wait_relay_idle($node), 'the relay delivered everything');
my %state = map { my ($i, $a, $s, $e) = split /\|/; ($i => [ $a, $s, $e ]) }
  split /\n/, sql("SELECT id, attempts, coalesce(confirm_status, ''), expired_at IS NOT NULL FROM outbox.messages");
is_deeply(
	[ map { join ',', @{ $state{ $id{$_} } } } qw(silent confirmed failed late) ],
	[ '3,,t', '1,confirmed,f', '1,failed,f', '2,confirmed,f' ],
	'attempts, verdicts and expiry of the four messages');

my @records = consume($broker, $topic, idle_ms => 3000);
my %seen;
for my $r (@records)
{
	push @{ $seen{ $r->{key} } },
	  { attempt => $r->{headers}{'outbox-attempt'} // 1,
		id => $r->{headers}{'outbox-id'} };
}
is_deeply([ map { $_->{attempt} } @{ $seen{silent} } ], [ 1, 2, 3 ],
	'Kafka has the silent message three times: attempts 1, 2, 3 (outbox-attempt header from the second on)');
is_deeply([ map { $_->{id} } @{ $seen{silent} } ], [ ($id{silent}) x 3 ],
	'every publication carries the message\'s outbox-id');
is(scalar @{ $seen{confirmed} }, 1, 'a confirmed message is published once');
is(scalar @{ $seen{failed} }, 1, 'a failed verdict stops the schedule too');
is_deeply([ map { $_->{attempt} } @{ $seen{late} } ], [ 1, 2 ],
	'a verdict after the second publication stops the third');
is_deeply([ map { $_->{attempt} } @{ $seen{confirmed} }, @{ $seen{failed} } ], [ 1, 1 ],
	'a first publication has no outbox-attempt header');

# relay_status counts what the schedule did: silent twice, late once; one
# expiry.
my $st = relay_status($node);
is("$st->{redelivered}/$st->{expired}", '3/1',
	'relay_status: redelivered 3 (silent twice, late once), expired 1');

# redeliver() with more attempts revives the expired message (and, as it
# always did, re-publishes the one with a failed verdict).
is(sql("SELECT outbox.redeliver('0', 4)"), '2', 'redeliver() with max_attempts 4 publishes it again');
is( sql("SELECT attempts, expired_at IS NULL FROM outbox.messages WHERE id = $id{silent}"),
	'4|t', 'attempt 4, no longer expired');
ok( wait_for(
		sub {
			sql("SELECT expired_at IS NOT NULL FROM outbox.messages WHERE id = $id{silent}") eq 't';
		},
		30),
	'the schedule expires it again: 4 publications, more than max_attempts');
is(sql("SELECT attempts FROM outbox.messages WHERE id = $id{silent}"), '4',
	'without publishing it a fifth time');

# Turned off by a reload: nothing is redelivered any more.
$node->append_conf('postgresql.conf', "outbox.redeliver_interval = 0\n");
$node->reload;
sleep 1;
my $off = sql("SELECT outbox.enqueue('$topic', 'off', '{}')");
sleep 5;
is(sql("SELECT attempts FROM outbox.messages WHERE id = $off"), '1',
	'with outbox.redeliver_interval = 0 an unanswered message stays at attempt 1');

# Kafka unreachable: the schedule waits.
SKIP:
{
	skip 'broker down/up needs the mock broker', 3 unless broker_can_fail($broker);
	$node->append_conf('postgresql.conf', "outbox.redeliver_interval = '500ms'\n");
	$node->reload;
	ok( wait_for(
			sub { sql("SELECT attempts FROM outbox.messages WHERE id = $off") >= 2 }, 30),
		'turned on again, the waiting message is redelivered');
	ok(wait_relay_idle($node), 'and delivered');
	broker_ctl($broker, 'down', $_) for 1 .. 3;
	my $down = sql("SELECT outbox.enqueue('$topic', 'down', '{}')");
	wait_for(sub { relay_status($node)->{state} eq 'kafka_unreachable' }, 20);
	my $before = sql("SELECT attempts FROM outbox.messages WHERE id = $down");
	sleep 6;
	is(sql("SELECT attempts FROM outbox.messages WHERE id = $down"), $before,
		'while Kafka is unreachable nothing is redelivered');
	broker_ctl($broker, 'up', $_) for 1 .. 3;
}

$node->stop;
done_testing();
