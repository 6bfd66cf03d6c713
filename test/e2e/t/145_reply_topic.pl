#
# 145_reply_topic.pl
#    The reply topic (outbox.reply_topic, issue 10 point 2) on a real Kafka:
#    verdicts land as outbox.confirm() would set them; replies that cannot
#    be applied (not JSON, wrong fields, unknown id or database, too large,
#    not text, a verdict a trigger refuses) are counted in relay_status and
#    kept in outbox.rejected_replies while good ones keep being applied;
#    none is lost and none applied twice when the consumer is rebuilt by a
#    reload, when the reply topic changes and changes back, and when the
#    relay is SIGKILLed in the middle of batches.  An audit trigger counts
#    every verdict UPDATE per message.  Reports replies applied per second.
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
my $replies2 = unique_topic('replies2');
my $orders = unique_topic('orders');
my $b = start_broker(
	topics => [ "$replies:3", "$replies2:2", "$orders:4" ]);
my $node = new_relay_node('reply_topic', $b,
	extra_conf => "outbox.reply_topic = '$replies'\nrestart_after_crash = on\n");

# Produce lines "key<TAB>value" to one partition; an empty value is a null
# value (a tombstone).
sub produce
{
	my ($topic, $partition, @lines) = @_;
	OutboxTest::kcat_produce($b, $topic, $partition, [], @lines);
}

# The reply of a verdict, as a consumer would send it.
sub reply
{
	my ($id, $status, $detail) = @_;
	my $d = defined $detail ? qq{,"detail":"$detail"} : '';
	return qq{order-$id\t{"db":"postgres","id":$id,"status":"$status"$d}};
}

# A query that may meet the server restarting after a kill: undef then.
sub try_psql
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	my $rc = $node->psql('postgres', $sql, stdout => \$out, stderr => \$err);
	return $rc == 0 ? $out : undef;
}

sub counters
{
	my $s = relay_status($node);
	return ($s->{replies_applied}, $s->{replies_rejected});
}

sub wait_counters
{
	my ($applied, $rejected, $timeout) = @_;
	my $ok = wait_for(
		sub {
			my ($a, $r) = counters();
			return $a == $applied && $r == $rejected;
		},
		$timeout // 60);
	my ($a, $r) = counters();
	diag("replies_applied $a (want $applied), replies_rejected $r (want $rejected)")
	  unless $ok;
	return $ok;
}

# Every verdict UPDATE, per message: a verdict applied twice shows twice.
$node->safe_psql('postgres', q{
CREATE TABLE verdict_audit (id bigint, status text, detail text);
CREATE FUNCTION audit_verdict() RETURNS trigger LANGUAGE plpgsql AS $$
-- the relay runs with search_path = pg_catalog, pg_temp: qualify names
BEGIN
    IF NEW.confirm_detail = 'poison' THEN
        RAISE EXCEPTION 'verdicts with detail poison are refused'
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO public.verdict_audit VALUES (NEW.id, NEW.confirm_status, NEW.confirm_detail);
    IF current_setting('audit.sleep', true) IS NOT NULL THEN
        PERFORM pg_sleep(0.0002);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_verdict BEFORE UPDATE ON outbox.messages
    FOR EACH ROW WHEN (NEW.confirmed_at IS NOT NULL)
    EXECUTE FUNCTION audit_verdict();
});
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$orders', 'order-' || i, jsonb_build_object('n', i)) FROM generate_series(1, 30000) i");
ok(wait_relay_idle($node), 'orders delivered');

# --- good replies and bad ones, interleaved --------------------------------
my @good0 = map { reply($_, 'confirmed') } 1 .. 40;
my @good1 = map { reply($_, 'failed', "no stock for $_") } 41 .. 80;
my @good2 = map { reply($_, 'confirmed', 'ok') } 81 .. 100;
my $deep = ('[' x 200) . (']' x 200);
my $oversize = '{"id":9,"status":"confirmed","pad":"' . ('x' x 70000) . '"}';
my @bad = (
	"k1\tnot json",
	"k2\t[1,2]",
	"k3\t" . '{"db":"postgres","id":"7","status":"confirmed"}',
	"k4\t" . '{"db":"postgres","id":5}',
	"k5\t" . '{"db":"postgres","id":5,"status":"maybe"}',
	"k6\t" . '{"db":"postgres","id":999999,"status":"confirmed"}',
	"k7\t" . '{"db":"nosuchdb","id":6,"status":"confirmed"}',
	"k8\t" . '{"db":"postgres","id":1.5,"status":"confirmed"}',
	"k9\t" . '{"db":"postgres","id":8,"status":"failed","detail":{"x":1}}',
	"k10\t$oversize",
	"k11\t\xff\xfe{}",
	"k12\t$deep",
	"k13\t",
	"k14\t" . '{"db":"postgres","id":500,"status":"confirmed","detail":"poison"}',
	"k15\t" . '{"db":42,"id":11,"status":"confirmed"}');
my $n_bad = scalar(@bad);
my $t0 = time();
produce($replies, 0, @good0[0 .. 19], @bad[0 .. 7], @good0[20 .. 39]);
produce($replies, 1, @bad[8 .. 14], @good1);
produce($replies, 2, @good2);
ok(wait_counters(100, $n_bad), "100 verdicts applied, $n_bad replies rejected");

is($node->safe_psql('postgres', q{
SELECT count(*) FROM outbox.messages
 WHERE (id BETWEEN 1 AND 40 AND confirm_status = 'confirmed' AND confirm_detail IS NULL)
    OR (id BETWEEN 41 AND 80 AND confirm_status = 'failed' AND confirm_detail = 'no stock for ' || id)
    OR (id BETWEEN 81 AND 100 AND confirm_status = 'confirmed' AND confirm_detail = 'ok')}),
	'100', 'each verdict recorded as sent, with its detail');
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM outbox.messages WHERE confirmed_at IS NOT NULL}),
	'100', 'no other message has a verdict');
is($node->safe_psql('postgres',
	q{SELECT count(*), count(DISTINCT id) FROM verdict_audit}),
	'100|100', 'each verdict applied once');

my %reasons = map { split /\|/, $_, 2 } split /\n/, $node->safe_psql('postgres',
	q{SELECT key, reason FROM outbox.rejected_replies});
is(scalar(keys %reasons), $n_bad, 'every rejected reply is kept');
like($reasons{k1}, qr/not JSON/, 'not JSON');
like($reasons{k2}, qr/not a JSON object/, 'not an object');
like($reasons{k3}, qr/"id" is not an integer/, 'id as a string');
like($reasons{k4}, qr/"status" is missing/, 'status missing');
like($reasons{k5}, qr/neither "confirmed" nor "failed"/, 'unknown status');
like($reasons{k6}, qr/no message with id 999999/, 'unknown id');
like($reasons{k7}, qr/database "nosuchdb" is not relayed/, 'unknown database');
like($reasons{k8}, qr/"id" is not an integer/, 'fractional id');
like($reasons{k9}, qr/"detail" is not a string/, 'detail as an object');
like($reasons{k10}, qr/larger than 65536 bytes/, 'oversize value');
like($reasons{k11}, qr/not valid text/, 'bytes that are not UTF-8');
like($reasons{k12}, qr/nested deeper than 64/, 'deep nesting');
like($reasons{k13}, qr/no value/, 'tombstone');
like($reasons{k14}, qr/applying the verdict failed: verdicts with detail poison are refused/,
	'a verdict a trigger refuses is rejected with the error');
like($reasons{k15}, qr/"db" is not a string/, 'db as a number');
is($node->safe_psql('postgres', q{
SELECT value_length, length(value), left(value, 8)
  FROM outbox.rejected_replies WHERE key = 'k10'}),
	length($oversize) . '|8192|{"id":9,', 'an oversize value is kept cut to 8 kB, with its length');
is($node->safe_psql('postgres',
	q{SELECT value FROM outbox.rejected_replies WHERE key = 'k11'}),
	'\xfffe7b7d', 'bytes that are not text are kept as hex');
is($node->safe_psql('postgres', q{
SELECT value IS NULL, value_length FROM outbox.rejected_replies WHERE key = 'k13'}),
	't|0', 'a tombstone is kept with a null value');
is($node->safe_psql('postgres', q{
SELECT confirmed_at IS NULL FROM outbox.messages WHERE id = 500}),
	't', 'the refused verdict left its message alone');
is($node->safe_psql('postgres', q{
SELECT string_agg(partition || ':' || next_offset, ' ' ORDER BY partition)
  FROM outbox.reply_offsets WHERE topic = '} . $replies . q{'}),
	'0:48 1:47 2:20', 'positions stored per partition');
my $s = relay_status($node);
is($s->{state}, 'streaming', 'the relay streams on');

# Only the relay and superusers see rejected replies.
is($node->safe_psql('postgres', q{
SELECT has_table_privilege('pg_monitor', 'outbox.rejected_replies', 'SELECT'),
       has_table_privilege('public', 'outbox.rejected_replies', 'SELECT'),
       has_table_privilege('pg_monitor', 'outbox.reply_offsets', 'SELECT')}),
	'f|f|t', 'rejected replies are not readable by PUBLIC or pg_monitor');

# --- a reload rebuilds the consumer: nothing lost, nothing twice -----------
my $rej = $n_bad;
produce($replies, 0, map { reply($_, 'confirmed') } 101 .. 150);
$node->append_conf('postgresql.conf',
	"outbox.kafka_properties = 'fetch.wait.max.ms=100;acks=all;linger.ms=1'\n");
$node->reload;
produce($replies, 1, map { reply($_, 'failed', 'after reload') } 151 .. 200);
ok(wait_counters(200, $rej), 'replies around a reload with new Kafka settings applied');
ok($node->log_contains('rebuilding the reply consumer|rebuilding the producer'),
	'the consumer was rebuilt');
ok(!$node->log_contains('producer property'),
	'producer-only properties do not trouble the consumer');

# The topic changes and changes back: each topic goes on where it stopped.
$node->append_conf('postgresql.conf', "outbox.reply_topic = '$replies2'\n");
$node->reload;
produce($replies2, 0, map { reply($_, 'confirmed', 'second topic') } 201 .. 220);
ok(wait_counters(220, $rej), 'replies from the new reply topic applied');
$node->append_conf('postgresql.conf', "outbox.reply_topic = '$replies'\n");
$node->reload;
produce($replies, 2, map { reply($_, 'confirmed', 'back') } 221 .. 240);
ok(wait_counters(240, $rej), 'back on the first topic: only new replies applied');
is($node->safe_psql('postgres',
	q{SELECT count(*), count(DISTINCT id), max(id) FROM verdict_audit}),
	'240|240|240', 'every verdict so far applied exactly once');

# --- throughput ------------------------------------------------------------
my $n_fast = 6000;
$t0 = time();
for my $p (0 .. 2)
{
	produce($replies, $p,
		map { reply($_, 'confirmed', 'fast') } grep { $_ % 3 == $p }
		  1001 .. 1000 + $n_fast);
}
ok(wait_counters(240 + $n_fast, $rej, 120), "$n_fast more replies applied");
my $secs = time() - $t0;
diag(sprintf('reply throughput: %d replies produced and applied in %.2f s, %.0f/s',
	$n_fast, $secs, $n_fast / $secs));

# --- SIGKILL of the relay in the middle of batches -------------------------
# Slow verdicts (0.2 ms each in the trigger) so that kills land inside
# batches; each kill restarts the whole server (restart_after_crash).
$node->safe_psql('postgres', q{ALTER DATABASE postgres SET audit.sleep = 'on'});
$node->restart;
wait_relay_state($node, 'streaming');
my $kill_from = 10001;
my $n_kill = 15000;
for my $p (0 .. 2)
{
	produce($replies, $p,
		map { reply($_, 'failed', 'kill') } grep { $_ % 3 == $p }
		  $kill_from .. $kill_from + $n_kill - 1);
}
my $applied_before = 0;
my $kills = 0;
for my $round (1 .. 3)
{
	my $seen = 0;
	wait_for(
		sub {
			$seen = try_psql(
				"SELECT count(*) FROM verdict_audit WHERE detail = 'kill'") // 0;
			return $seen > $applied_before + 500;
		},
		60);
	last if $seen >= $n_kill;
	my $pid = try_psql(
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'});
	next unless $pid;
	my $log_at = -s $node->logfile;
	kill 'KILL', $pid;
	$kills++;
	$applied_before = $seen;
	wait_for(
		sub {
			$node->log_contains('all server processes terminated; reinitializing',
				$log_at);
		},
		30);
	wait_for(
		sub {
			(try_psql(q{SELECT state FROM outbox.relay_status}) // '') eq
			  'streaming';
		},
		120);
}
ok($kills >= 2, "relay SIGKILLed $kills times while applying replies");
ok( wait_for(
		sub {
			(try_psql(
				"SELECT count(*) >= $n_kill FROM verdict_audit WHERE detail = 'kill'") // '') eq 't';
		},
		180),
	'every reply applied after the kills');
sleep 2;
is($node->safe_psql('postgres', qq{
SELECT count(*), count(DISTINCT id) FROM verdict_audit WHERE detail = 'kill'}),
	"$n_kill|$n_kill", 'none lost, none applied twice across the kills');
is($node->safe_psql('postgres', qq{
SELECT count(*) FROM outbox.messages
 WHERE id BETWEEN $kill_from AND @{[ $kill_from + $n_kill - 1 ]}
   AND confirm_status = 'failed' AND confirm_detail = 'kill'}),
	$n_kill, 'every killed-around verdict is recorded');
is($node->safe_psql('postgres', q{SELECT count(*) FROM outbox.rejected_replies}),
	$rej, 'nothing rejected by the restarts');
is($node->safe_psql('postgres', q{
SELECT count(*) - count(DISTINCT (id, detail)) FROM verdict_audit}),
	'0', 'no verdict applied twice in the whole test');

# --- Kafka's committed offsets behind and ahead of the database's ---------
# A crash between the database commit and Kafka's leaves Kafka behind; the
# relay must go by outbox.reply_offsets.  With the relay stopped (its
# consumer leaves the group), replies arrive, and the group's offsets are
# moved to the earliest on partition 0 (behind: everything would be
# applied again) and to the latest on partitions 1 and 2 (ahead: the new
# replies there would be skipped).
my $kc = kafka_cluster();
SKIP:
{
	skip 'needs the cluster of test/kafka/kafka.sh to move group offsets', 3
	  unless $kc;
	$node->stop;
	produce($replies, 0, map { reply($_, 'confirmed', 'while down') } 26001 .. 26030);
	produce($replies, 1, map { reply($_, 'confirmed', 'while down') } 26031 .. 26060);
	my @reset = ('run-class', 'org.apache.kafka.tools.consumer.group.ConsumerGroupCommand',
		'--bootstrap-server', $b->{bootstrap}, '--group', 'outbox-reply-postgres',
		'--reset-offsets', '--execute');
	# a member killed earlier may linger until its session times out (10 s)
	ok( wait_for(
			sub {
				eval {
					kafka_sh(@reset, '--topic', "$replies:0", '--to-earliest');
					kafka_sh(@reset, '--topic', "$replies:1,2", '--to-latest');
					1;
				};
			},
			60),
		"the group's offsets moved: partition 0 to the earliest, 1 and 2 to the latest");
	$node->start;
	wait_relay_state($node, 'streaming');
	ok( wait_for(
			sub {
				$node->safe_psql('postgres',
					"SELECT count(*) FROM verdict_audit WHERE detail = 'while down'") >= 60;
			},
			60),
		'the replies that came while the relay was down are applied');
	sleep 3;
	is($node->safe_psql('postgres', q{
SELECT count(*) - count(DISTINCT (id, detail)), count(*) FILTER (WHERE detail = 'while down')
  FROM verdict_audit}),
		'0|60', "the database's positions win over Kafka's: nothing applied twice, nothing skipped");
}

# --- two databases: each relay applies its own replies ---------------------
# A second relayed database: a reply naming it is applied there and nowhere
# else; a reply without "db" and one for a database nobody relays are
# strays now, kept once (by the relay of the lowest database OID).
$node->safe_psql('postgres', 'CREATE DATABASE db2');
$node->safe_psql('db2', 'CREATE EXTENSION outbox');
$node->safe_psql('db2',
	"SELECT outbox.enqueue('$orders', 'db2-' || i, '{}') FROM generate_series(1, 10) i");
$node->append_conf('postgresql.conf', "outbox.databases = 'postgres, db2'\n");
$node->reload;
ok( wait_for(
		sub {
			$node->safe_psql('postgres',
				q{SELECT count(*) FROM outbox.relay_status WHERE state = 'streaming'}) eq '2';
		},
		60),
	'two relays stream');
my $strays_before = $node->safe_psql('postgres',
	q{SELECT count(*) FROM outbox.rejected_replies});
my $p3 = $node->safe_psql('postgres',
	q{SELECT confirm_status || '/' || coalesce(confirm_detail, '') FROM outbox.messages WHERE id = 3});
produce($replies, 2,
	qq{k-db2\t{"db":"db2","id":3,"status":"failed","detail":"db2 verdict"}},
	qq{k-omit\t{"id":4,"status":"failed","detail":"no db"}},
	qq{k-none\t{"db":"nosuch","id":4,"status":"failed"}});
ok( wait_for(
		sub {
			$node->safe_psql('db2',
				q{SELECT confirm_status || '/' || confirm_detail FROM outbox.messages WHERE id = 3})
			  eq 'failed/db2 verdict';
		},
		60),
	'the reply naming db2 is applied in db2');
ok( wait_for(
		sub {
			$node->safe_psql('postgres',
				q{SELECT count(*) FROM outbox.rejected_replies WHERE key IN ('k-omit', 'k-none')})
			  eq '2';
		},
		60),
	'both strays kept by the relay of the lowest database OID');
sleep 3;
is($node->safe_psql('postgres', q{
SELECT string_agg(key || ': ' || reason, '; ' ORDER BY key) FROM outbox.rejected_replies
 WHERE key IN ('k-omit', 'k-none', 'k-db2')}),
	'k-none: database "nosuch" is not relayed by this cluster; k-omit: "db" is missing, and outbox.databases does not name one database alone',
	'each stray kept once, with its reason; the db2 reply is no stray');
is($node->safe_psql('db2',
	q{SELECT count(*) FROM outbox.rejected_replies WHERE key IN ('k-omit', 'k-none', 'k-db2')}),
	'0', 'db2 keeps no stray');
is($node->safe_psql('postgres',
	q{SELECT confirm_status || '/' || coalesce(confirm_detail, '') FROM outbox.messages WHERE id = 3}),
	$p3, "postgres's message 3 is left alone");
is($node->safe_psql('db2',
	q{SELECT count(*) FROM outbox.messages WHERE confirmed_at IS NOT NULL}),
	'1', 'db2 applied only its own reply of the whole topic');

# --- emptied: the consumer stops --------------------------------------------
$node->append_conf('postgresql.conf', "outbox.reply_topic = ''\n");
$node->reload;
ok(wait_for(sub { $node->log_contains('outbox.reply_topic was emptied') }, 30),
	'emptying outbox.reply_topic stops the consumer');
produce($replies, 0, reply(29999, 'confirmed'));
sleep 2;
is($node->safe_psql('postgres',
	q{SELECT confirmed_at IS NULL FROM outbox.messages WHERE id = 29999}),
	't', 'no reply is applied while the topic is off');

$node->stop;
done_testing();
