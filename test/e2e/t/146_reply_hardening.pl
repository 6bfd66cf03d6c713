#
# 146_reply_hardening.pl
#    The reply topic's verdict loop under trouble (issue 23, points 4, 6, 7):
#    - a message row held by another session for 30 s: its verdict waits,
#      never the relay: new events reach Kafka within 1 s throughout, the
#      reply topic's other partition is applied meanwhile, the replies
#      behind the held one in its partition wait in order, and once the
#      row is free the verdict is applied, exactly once; a table lock is
#      waited for at most 100 ms, and delivery goes on meanwhile too;
#    - replies name the installation they answer ("source", or header
#      outbox-source): only this installation's are applied, the others
#      kept as rejected; after DROP and CREATE EXTENSION with the group's
#      offsets gone back to the earliest, none of the previous
#      installation's verdicts lands on the new installation's ids;
#    - a reply topic found below its stored positions (deleted and created
#      again) is said in the log and relay_status.last_error, and read again
#      from its start;
#    - bounds: a step takes at most 1 MB of replies; a reply without "db" is
#      applied only while outbox.databases names one database alone;
#      outbox.retention deletes old rows of outbox.rejected_replies.
#    An audit trigger counts every verdict UPDATE per message.
#
#    Consumer groups need a real cluster (suite e2e-kafka); skips on the
#    mock broker.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

plan skip_all =>
  'consumer groups need a real Kafka (run_all.sh suite e2e-kafka)'
  unless real_kafka();

my $replies = unique_topic('replies');
my $recreated = unique_topic('recreated');
my $orders = unique_topic('orders');
my $b = start_broker(topics => [ "$replies:2", "$recreated:1", "$orders:2" ]);
my $node = new_relay_node('reply_hardening', $b,
	extra_conf => "outbox.reply_topic = '$replies'\n");

# Produce lines "key<TAB>value" to one partition, each record with the
# given headers ("name=value").
sub produce
{
	my ($topic, $partition, $headers, @lines) = @_;
	OutboxTest::kcat_produce($b, $topic, $partition, $headers, @lines);
}

# Run $sql (a transaction that takes a lock, then sleeps) in a session of
# its own; returns once it sleeps, with the harness and its stderr.
sub hold
{
	my ($sql, $what) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
			'-c', $sql ],
		'<', \undef, '>', \$out, '2>', \$err);
	my $head = substr($sql, 0, 30);
	ok( wait_for(
			sub {
				$node->safe_psql('postgres',
					"SELECT count(*) FROM pg_stat_activity WHERE starts_with(query, '$head') AND wait_event = 'PgSleep'")
				  eq '1';
			},
			30),
		$what);
	return ($h, \$err);
}

sub verdict
{
	my ($id) = @_;
	return $node->safe_psql('postgres',
		"SELECT coalesce(confirm_status || '/' || coalesce(confirm_detail, ''), 'none') FROM outbox.messages WHERE id = $id");
}

sub reason
{
	my ($key) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(reason, ' | ' ORDER BY id) FROM outbox.rejected_replies WHERE key = '$key'");
}

sub audit_trigger
{
	$node->safe_psql('postgres', q{
CREATE TABLE IF NOT EXISTS verdict_audit (id bigint, status text, detail text);
CREATE OR REPLACE FUNCTION audit_verdict() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.verdict_audit VALUES (NEW.id, NEW.confirm_status, NEW.confirm_detail);
    IF NEW.confirm_detail = 'slow' THEN
        PERFORM pg_catalog.pg_sleep(3);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_verdict BEFORE UPDATE ON outbox.messages
    FOR EACH ROW WHEN (NEW.confirmed_at IS NOT NULL)
    EXECUTE FUNCTION audit_verdict();
});
}

# Until $until: write an event with $sql, wait until relay_status counts
# it delivered, run $each, pause; returns (events, those that took 1 s or
# more, the slowest's seconds).
sub probe_deliveries
{
	my ($until, $sql, $each) = @_;
	my ($probes, $late, $worst) = (0, 0, 0);
	while (time() < $until)
	{
		my $before = relay_status($node)->{delivered};
		my $t = time();
		$node->safe_psql('postgres', $sql);
		my $took = 10;
		while (time() - $t < 10)
		{
			if (relay_status($node)->{delivered} > $before)
			{
				$took = time() - $t;
				last;
			}
			usleep(20_000);
		}
		$probes++;
		$late++ if $took >= 1;
		$worst = $took if $took > $worst;
		$each->() if $each;
		usleep(300_000);
	}
	return ($probes, $late, $worst);
}

audit_trigger();
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$orders', 'order-' || i, jsonb_build_object('n', i)) FROM generate_series(1, 40) i");
ok(wait_relay_idle($node), 'orders delivered');
my $installation = $node->safe_psql('postgres', 'SELECT id FROM outbox.installation');
my $other = '00000000-0000-4000-8000-0000000000aa';

# --- 1. a locked message row ---------------------------------------------
# Another session updates message 1 and keeps its transaction open for
# 30 s.  Its verdict arrives on partition 0, followed by one for message 2;
# partition 1 brings one for message 3.
my ($holder, $herr) = hold(
	q{BEGIN; UPDATE outbox.messages SET confirm_detail = 'held' WHERE id = 1; SELECT pg_sleep(30); COMMIT;},
	'a session holds message 1');
my $held_at = time();
produce($replies, 0, [],
	qq{order-1\t{"db":"postgres","id":1,"status":"confirmed","detail":"after the lock"}},
	qq{order-2\t{"db":"postgres","id":2,"status":"failed","detail":"behind the lock"}});
produce($replies, 1, [],
	qq{order-3\t{"db":"postgres","id":3,"status":"confirmed","detail":"other partition"}});

# While the row is held: one new event after another, each must reach
# Kafka (relay_status.delivered) within a second.
my ($third_at, $early) = (undef, 0);
my ($probes, $late, $worst) = probe_deliveries(
	$held_at + 27,
	"SELECT outbox.enqueue('$orders', 'probe', '{}')",
	sub {
		$third_at //= time() - $held_at if verdict(3) eq 'confirmed/other partition';
		$early++ if verdict(1) ne 'none' || verdict(2) ne 'none';
	});
diag(sprintf('%d events while the row was held, slowest delivered after %.3f s', $probes, $worst));
ok($probes >= 10, "$probes events written while the row was held");
is($late, 0, 'every one reached Kafka within 1 s');
ok(defined $third_at, 'the other partition\'s verdict was applied while the row was held');
is($early, 0, 'the held verdict and the one behind it in its partition waited');
is(relay_status($node)->{state}, 'streaming', 'the relay streamed on');
$holder->finish;
is($holder->result(0), 0, 'the holder committed after 30 s') or diag($$herr);
my $freed_at = time();
ok(wait_for(sub { verdict(2) eq 'failed/behind the lock' }, 30),
	'once the row is free the waiting verdicts are applied');
diag(sprintf('applied %.1f s after the row was freed', time() - $freed_at));
is(verdict(1), 'confirmed/after the lock', 'the held verdict is applied');
sleep 2;
is($node->safe_psql('postgres',
	q{SELECT string_agg(id || ':' || n, ' ' ORDER BY id) FROM (SELECT id, count(*) AS n FROM verdict_audit GROUP BY id) a}),
	'1:1 2:1 3:1', 'each verdict applied exactly once');
is($node->safe_psql('postgres', q{SELECT count(*) FROM outbox.rejected_replies}),
	'0', 'nothing rejected');
is($node->safe_psql('postgres', qq{
SELECT string_agg(partition || ':' || next_offset, ' ' ORDER BY partition)
  FROM outbox.reply_offsets WHERE topic = '$replies'}),
	'0:2 1:1', 'positions stored past the applied verdicts');

# A lock on the table (here SHARE, which the verdict's UPDATE waits for) is
# waited for at most 100 ms; the batch is tried again later.  Probes with
# outbox.emit(), which writes no table.
my $log_lock = -s $node->logfile;
($holder, $herr) = hold(
	q{BEGIN; LOCK TABLE outbox.messages IN SHARE MODE; SELECT pg_sleep(6); COMMIT;},
	'a session holds a SHARE lock on outbox.messages');
$held_at = time();
produce($replies, 1, [],
	qq{order-18\t{"db":"postgres","id":18,"status":"confirmed","detail":"after the table lock"}});
($probes, $late, $worst) = probe_deliveries($held_at + 5,
	"SELECT outbox.emit('$orders', 'probe', '{}')");
diag(sprintf('%d events while the table was locked, slowest delivered after %.3f s', $probes, $worst));
is($late, 0, "$probes events written while the table was locked: each reached Kafka within 1 s");
$holder->finish;
ok(wait_for(sub { verdict(18) eq 'confirmed/after the table lock' }, 60),
	'the verdict is applied once the table lock is gone');
ok($node->log_contains(qr/could not apply 1 replies: canceling statement due to lock timeout/, $log_lock),
	'the lock timeout was logged');
sleep 1;
is($node->safe_psql('postgres', q{SELECT count(*) FROM verdict_audit WHERE id = 18}),
	'1', 'and applied once');

# Both at once: a held verdict (message 19) and a batch that fails on the
# table lock (message 20, on the other partition).  The relay waits for
# the failed batch's retry without spinning: little CPU time meanwhile.
($holder, $herr) = hold(
	q{BEGIN; UPDATE outbox.messages SET confirm_detail = 'held' WHERE id = 19; LOCK TABLE outbox.messages IN SHARE MODE; SELECT pg_sleep(8); COMMIT;},
	'a session holds message 19 and a SHARE lock on outbox.messages');
produce($replies, 0, [],
	qq{order-19\t{"db":"postgres","id":19,"status":"confirmed","detail":"held and locked"}});
usleep(300_000);
produce($replies, 1, [],
	qq{order-20\t{"db":"postgres","id":20,"status":"confirmed","detail":"locked"}});
sleep 1;
my $relay = relay_pid($node);
sub cpu_ticks
{
	my @f = split ' ', slurp_file("/proc/$relay/stat");
	return $f[13] + $f[14];
}
my $ticks = cpu_ticks();
sleep 5;
$ticks = cpu_ticks() - $ticks;
diag("relay CPU while waiting: $ticks ticks in 5 s");
ok($ticks < 150, 'the relay does not spin while a held verdict and a failed batch wait');
$holder->finish;
ok( wait_for(
		sub {
			verdict(19) eq 'confirmed/held and locked' && verdict(20) eq 'confirmed/locked';
		},
		60),
	'both verdicts are applied once the session ends');
sleep 1;
is($node->safe_psql('postgres', q{SELECT count(*) FROM verdict_audit WHERE id IN (19, 20)}),
	'2', 'once each');

# --- 2. replies name their installation ----------------------------------
produce($replies, 0, [],
	qq{k-own\t{"db":"postgres","id":6,"source":"$installation","status":"confirmed"}},
	qq{k-foreign\t{"db":"postgres","id":5,"source":"$other","status":"failed"}},
	qq{k-srcnum\t{"db":"postgres","id":10,"source":5,"status":"failed"}});
produce($replies, 0, ["outbox-source=$installation"],
	qq{k-hdr-own\t{"db":"postgres","id":7,"status":"confirmed"}},
	qq{k-disagree\t{"db":"postgres","id":9,"source":"$other","status":"failed"}});
produce($replies, 0, ["outbox-source=$other"],
	qq{k-hdr-foreign\t{"db":"postgres","id":8,"status":"failed"}});
ok( wait_for(
		sub {
			$node->safe_psql('postgres', q{SELECT count(*) FROM outbox.rejected_replies}) eq '4';
		},
		30),
	'four replies rejected');
ok(wait_for(sub { verdict(7) eq 'confirmed/' }, 30), 'header outbox-source of this installation: applied');
is(verdict(6), 'confirmed/', '"source" of this installation: applied');
is(join(',', map { verdict($_) } 5, 8, 9, 10), 'none,none,none,none',
	'no other verdict applied');
like(reason('k-foreign'), qr/answers installation \Q$other\E, not this one \(\Q$installation\E\)/,
	'"source" of another installation: rejected');
like(reason('k-hdr-foreign'), qr/answers installation \Q$other\E/,
	'header outbox-source of another installation: rejected');
like(reason('k-disagree'), qr/"source" \(\Q$other\E\) and header outbox-source \(\Q$installation\E\) disagree/,
	'"source" and header disagreeing: rejected');
like(reason('k-srcnum'), qr/"source" is not a string/, '"source" not a string: rejected');

# --- 3. bounds ----------------------------------------------------------------
# 3a. At most 1 MB of replies per step.  A slow verdict (the trigger sleeps
# 3 s) holds the relay while twelve replies of 300 kB (too large: kept as
# rejected) queue up behind it; the rejected rows of one transaction share
# received_at.
produce($replies, 1, [],
	qq{k-slow\t{"db":"postgres","id":11,"status":"confirmed","detail":"slow"}});
ok( wait_for(
		sub {
			$node->safe_psql('postgres',
				q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'outbox relay' AND wait_event = 'PgSleep'})
			  eq '1';
		},
		30),
	'the relay applies the slow verdict');
my $pad = 'x' x 300_000;
produce($replies, 1, [], map { qq{k-big-$_\t{"db":"postgres","id":12,"status":"confirmed","pad":"$pad"}} } 1 .. 12);
ok( wait_for(
		sub {
			$node->safe_psql('postgres',
				q{SELECT count(*) FROM outbox.rejected_replies WHERE key LIKE 'k-big-%'}) eq '12';
		},
		60),
	'the twelve large replies are kept as rejected');
my $groups = $node->safe_psql('postgres', q{
SELECT string_agg(n::text, ',' ORDER BY t) FROM (
  SELECT received_at AS t, count(*) AS n FROM outbox.rejected_replies
   WHERE key LIKE 'k-big-%' GROUP BY received_at) g});
diag("large replies per transaction: $groups");
ok(!grep({ $_ > 4 } split /,/, $groups),
	'no transaction took more than 1 MB of them (4 of 300 kB: the one crossing 1 MB is the last)');
is(verdict(11), 'confirmed/slow', 'the slow verdict is applied');

# 3b. A reply without "db": applied while outbox.databases names this
# database alone, a stray under '*' even while this relay is the only one.
produce($replies, 0, [], qq{k-nodb-1\t{"id":13,"status":"confirmed"}});
ok(wait_for(sub { verdict(13) eq 'confirmed/' }, 30),
	'no "db", outbox.databases = \'postgres\': applied');
$node->append_conf('postgresql.conf', "outbox.databases = '*'\n");
$node->reload;
sleep 2;
wait_relay_state($node, 'streaming');
produce($replies, 0, [], qq{k-nodb-2\t{"id":14,"status":"confirmed"}});
ok(wait_for(sub { reason('k-nodb-2') ne '' }, 30), 'no "db", outbox.databases = \'*\': rejected');
like(reason('k-nodb-2'), qr/"db" is missing, and outbox.databases does not name one database alone/,
	'with the reason');
is(verdict(14), 'none', 'and not applied');
$node->append_conf('postgresql.conf', "outbox.databases = 'postgres'\n");
$node->reload;

# 3c. outbox.retention deletes rejected replies received that long ago.
$node->safe_psql('postgres', q{
INSERT INTO outbox.rejected_replies (received_at, topic, partition, kafka_offset, value_length, reason)
VALUES (now() - interval '30 days', 'old', 0, 0, 0, 'an old one'),
       (now() - interval '6 days', 'old', 0, 1, 0, 'a younger one')});
my $kept = $node->safe_psql('postgres', q{SELECT count(*) FROM outbox.rejected_replies}) - 1;
$node->append_conf('postgresql.conf', "outbox.retention = '7d'\n");
$node->reload;
ok( wait_for(
		sub {
			$node->safe_psql('postgres',
				q{SELECT count(*) FROM outbox.rejected_replies WHERE reason = 'an old one'}) eq '0';
		},
		60),
	'retention deleted the rejected reply received 30 days ago');
is($node->safe_psql('postgres', q{SELECT count(*) FROM outbox.rejected_replies}),
	$kept, 'and kept the younger ones');

# --- 4. a reply topic created again ---------------------------------------
# The database says the next reply of $recreated is at offset 1000; the
# topic has three: it was deleted and created again.
$node->safe_psql('postgres',
	"INSERT INTO outbox.reply_offsets (topic, partition, next_offset) VALUES ('$recreated', 0, 1000)");
produce($recreated, 0, [], map { qq{r-$_\t{"db":"postgres","id":$_,"status":"confirmed","detail":"recreated"}} } 15 .. 17);
my $log_at = -s $node->logfile;
$node->append_conf('postgresql.conf', "outbox.reply_topic = '$recreated'\n");
$node->reload;
ok(wait_for(sub { verdict(17) eq 'confirmed/recreated' }, 60),
	'the replies of the re-created topic are applied');
is(join(',', map { verdict($_) } 15, 16), 'confirmed/recreated,confirmed/recreated',
	'all of them');
ok( $node->log_contains(
		qr/WARNING: .*partition 0 of reply topic "\Q$recreated\E" has offset 0 below the stored next offset 1000/,
		$log_at),
	'the log says so');
like(relay_status($node)->{last_error}, qr/has offset 0 below the stored next offset 1000/,
	'relay_status.last_error says so');
is($node->safe_psql('postgres',
	"SELECT next_offset FROM outbox.reply_offsets WHERE topic = '$recreated'"),
	'3', 'the position follows the new topic');

# --- 5. a new installation, the group's offsets back at the earliest ------
# DROP and CREATE EXTENSION: ids start at 1 again.  With the relay stopped
# the group's offsets go back to the earliest (as if they had expired):
# every reply above is read again, and none may land on the new ids.
$node->append_conf('postgresql.conf', "outbox.reply_topic = ''\n");
$node->reload;
ok(wait_for(sub { $node->log_contains('outbox.reply_topic was emptied', $log_at) }, 30),
	'the reply consumer stops');
$node->safe_psql('postgres', 'DROP EXTENSION outbox CASCADE');
sleep 1;
$node->safe_psql('postgres', 'CREATE EXTENSION outbox');
$node->safe_psql('postgres', 'DROP TABLE verdict_audit');
audit_trigger();
my $new_installation = $node->safe_psql('postgres', 'SELECT id FROM outbox.installation');
isnt($new_installation, $installation, 'a new installation');
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$orders', 'new-' || i, '{}') FROM generate_series(1, 20) i");
ok(wait_relay_idle($node), 'the new installation\'s messages are delivered');
my $kc = kafka_cluster();
SKIP:
{
	skip 'needs the cluster of test/kafka/kafka.sh to move group offsets', 6
	  unless $kc;
	$node->stop;
	my @reset = ('run-class', 'org.apache.kafka.tools.consumer.group.ConsumerGroupCommand',
		'--bootstrap-server', $b->{bootstrap}, '--group', 'outbox-reply-postgres',
		'--reset-offsets', '--execute', '--to-earliest', '--topic', $replies);
	ok(wait_for(sub { eval { kafka_sh(@reset); 1 } }, 60),
		"the group's offsets are back at the earliest");
	$node->append_conf('postgresql.conf', "outbox.reply_topic = '$replies'\n");
	$node->start;
	wait_relay_state($node, 'streaming');
	produce($replies, 0, [],
		qq{k-new-1\t{"db":"postgres","id":4,"status":"confirmed","detail":"new, no source"}},
		qq{k-new-2\t{"db":"postgres","id":5,"source":"$new_installation","status":"failed","detail":"new"}});
	ok(wait_for(sub { verdict(5) eq 'failed/new' }, 60), 'a reply naming the new installation is applied');
	is(verdict(4), 'confirmed/new, no source',
		'a reply without "source" written after the installation is applied');
	sleep 2;
	is($node->safe_psql('postgres',
		q{SELECT string_agg(id::text, ',' ORDER BY id) FROM outbox.messages WHERE confirmed_at IS NOT NULL}),
		'4,5', 'no verdict of the previous installation landed on the new ids');
	is($node->safe_psql('postgres',
		q{SELECT count(*) FROM outbox.rejected_replies WHERE reason LIKE '%written before this installation%'}),
		'9', 'the replies without "source" from before it are kept as rejected');
	is($node->safe_psql('postgres',
		qq{SELECT count(*) FROM outbox.rejected_replies WHERE reason LIKE '%answers installation $installation%'}),
		'2', 'those naming the previous installation too');
}

$node->stop;
done_testing();
