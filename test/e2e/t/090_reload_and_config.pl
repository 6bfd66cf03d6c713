#
# 090_reload_and_config.pl
#    Configuration changes at run time and configuration mistakes: a new
#    Kafka cluster on reload, disabling and re-enabling, a server without
#    outbox in output_plugin_libraries, an invalid librdkafka property, a
#    librdkafka property file, and CREATE EXTENSION after the relay started.
#    A mistake puts the relay in a calm, reported state, never a crash loop.
#
use strict;
use warnings;

use File::Spec;
use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $topic = unique_topic('config');
my $b1 = start_broker(topics => ["$topic:3"]);
my $node = new_relay_node('config', $b1);

sub enqueue
{
	my ($node, $n) = @_;
	return $node->safe_psql('postgres',
		"SELECT outbox.enqueue('$topic', 'k', '{\"n\": \"$n\"}')");
}

sub ids_in
{
	my ($b, %opts) = @_;
	return map { $_->{headers}{'outbox-id'} }
	  consume($b, $topic, idle_ms => 1000, %opts);
}

# The same process for $secs seconds (no crash loop)?
sub pid_stable
{
	my ($node, $secs) = @_;
	my $pid = relay_status($node)->{pid};
	my $t0 = time();
	while (time() - $t0 < $secs)
	{
		my $p = relay_status($node)->{pid};
		return 0 if !defined $p || !$pid || $p != $pid;
		usleep(500_000);
	}
	return 1;
}

sub set_conf
{
	my ($node, $name, $value) = @_;
	my $sql = defined $value
	  ? "ALTER SYSTEM SET $name = '$value'" : "ALTER SYSTEM RESET $name";
	$node->safe_psql('postgres', "$sql; SELECT pg_reload_conf();");
}

my $e1 = enqueue($node, 'e1');
ok(wait_relay_idle($node), 'first event delivered');

# ---------------------------------------------------------------------
# (a) outbox.kafka_brokers changed on reload: later events go to the new
# cluster.
# ---------------------------------------------------------------------
my $b2 = $b1;
SKIP:
{
	skip 'a second Kafka cluster needs the mock broker', 5 if $b1->{real};
	$b2 = start_broker(topics => ["$topic:3"]);
	my $pos = log_position($node);
	set_conf($node, 'outbox.kafka_brokers', $b2->{bootstrap});
	ok( wait_for(sub { log_since($node, $pos) =~ /Kafka settings changed, rebuilding the producer/ },
			30),
		'reload rebuilds the producer');
	ok( wait_for(sub { log_since($node, $pos) =~ /streaming slot "outbox_5" .* to Kafka at \Q$b2->{bootstrap}\E/ },
			30),
		'relay streams to the second cluster');
	my $e2 = enqueue($node, 'e2');
	ok(wait_relay_idle($node), 'relay caught up');
	is_deeply([ ids_in($b2) ], [$e2], 'the later event arrived at the second cluster');
	is_deeply([ ids_in($b1) ], [$e1], 'the first cluster has only the earlier event');
}

# ---------------------------------------------------------------------
# (b) outbox.kafka_brokers = '': disabled; events written meanwhile wait in
# the slot and are delivered once it is set again.
# ---------------------------------------------------------------------
my $pos = log_position($node);
set_conf($node, 'outbox.kafka_brokers', '');
wait_relay_state($node, 'disabled', 30);
pass('empty outbox.kafka_brokers: state disabled');
my @while_disabled = map { enqueue($node, "disabled-$_") } 1 .. 5;
ok(pid_stable($node, 6), 'the disabled relay waits in the same process');
is(relay_status($node)->{state}, 'disabled', 'still disabled');
set_conf($node, 'outbox.kafka_brokers', $b2->{bootstrap});
wait_relay_state($node, 'streaming', 30);
ok(wait_relay_idle($node), 'relay caught up after re-enabling');
my %got = map { $_ => 1 } ids_in($b2);
is(scalar(grep { $got{$_} } @while_disabled), 5,
	'the events written while disabled were delivered');
is(count_matches(log_since($node, $pos), qr/outbox\.kafka_brokers is empty/), 1,
	'"disabled" logged once');

# ---------------------------------------------------------------------
# (d) An invalid librdkafka property: misconfigured with librdkafka's error,
# logged once; fixed and reloaded, the relay streams and catches up.
# ---------------------------------------------------------------------
$pos = log_position($node);
set_conf($node, 'outbox.kafka_properties', 'no.such.property=1');
my $s = wait_relay_state($node, 'misconfigured', 30);
like($s->{last_error}, qr/no\.such\.property/, 'last_error has librdkafka\'s complaint');
diag("last_error: $s->{last_error}");
my $e4 = enqueue($node, 'e4');
ok(pid_stable($node, 7), 'misconfigured relay keeps its process for 7 s (more than one retry)');
is(relay_status($node)->{state}, 'misconfigured', 'still misconfigured');
is(count_matches(log_since($node, $pos), qr/invalid Kafka producer configuration/), 1,
	'the configuration error is logged once');
set_conf($node, 'outbox.kafka_properties', undef);
wait_relay_state($node, 'streaming', 30);
ok(wait_relay_idle($node), 'relay caught up after the fix');
ok(grep({ $_ eq $e4 } ids_in($b2)), 'the event written meanwhile arrived');

# ---------------------------------------------------------------------
# (e) outbox.kafka_config_file: its properties are applied.  message.max.bytes
# = 10000 makes its effect visible: a 20 kB event becomes a dead letter.
# ---------------------------------------------------------------------
my $file = File::Spec->rel2abs($node->data_dir . '/kafka.properties');
append_to_file($file,
	"# librdkafka settings for the relay\nlinger.ms=2\n  message.max.bytes = 10000\n\n");
$pos = log_position($node);
set_conf($node, 'outbox.kafka_config_file', $file);
ok(wait_for(sub { log_since($node, $pos) =~ /streaming slot "outbox_5"/ }, 30),
	'relay restarted streaming with the property file');
my $small = enqueue($node, 'small');
my $big = $node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'k', jsonb_build_object('fill', repeat('x', 20000)))");
ok(wait_relay_idle($node), 'relay caught up');
ok(grep({ $_ eq $small } ids_in($b2)), 'a small event is delivered');
is($node->safe_psql('postgres',
	"SELECT error_code FROM outbox.dead_letters WHERE message_id = $big"),
	'MSG_SIZE_TOO_LARGE', 'message.max.bytes from the file applies: 20 kB event dead-lettered');
set_conf($node, 'outbox.kafka_config_file', undef);
wait_relay_state($node, 'streaming', 30);

# ---------------------------------------------------------------------
# (c) output_plugin_libraries without outbox: misconfigured, named, calm.
# ---------------------------------------------------------------------
SKIP:
{
	my $has_gate = $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_settings WHERE name = 'output_plugin_libraries'});
	skip 'this server has no output_plugin_libraries', 5 unless $has_gate;

	my $gated = new_relay_node('config_gated', $b2,
		plugin_libraries => 'pgoutput, test_decoding', no_wait => 1);
	my $g = wait_relay_state($gated, 'misconfigured', 30);
	like($g->{last_error}, qr/output_plugin_libraries/,
		'last_error names output_plugin_libraries');
	diag("last_error: $g->{last_error}");
	ok(pid_stable($gated, 7), 'the relay keeps its process for 7 s (no crash loop)');
	is(count_matches(slurp_file($gated->logfile),
			qr/output plugin "outbox" is not listed in output_plugin_libraries/), 1,
		'logged once');
	is($gated->safe_psql('postgres',
		q{SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'outbox_5'}),
		'0', 'no slot was created');
	ok(!$gated->log_contains(qr/terminated by signal|exited with exit code/),
		'the relay never exited');
	$gated->stop;
}

# ---------------------------------------------------------------------
# (f) CREATE EXTENSION after the relay started: the slot exists first, so
# events written right after CREATE EXTENSION are delivered.
# ---------------------------------------------------------------------
my $late = new_relay_node('config_late', $b2, no_extension => 1, no_wait => 1);
# (relay_status is part of the extension: look at the log instead)
ok($late->wait_for_log(qr/extension "outbox" is not installed in database "postgres"; the slot is ready/),
	'relay waits for the extension');
is($late->safe_psql('postgres',
	q{SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'outbox_5' AND plugin = 'outbox'}),
	'1', 'the slot exists before the extension');
$late->safe_psql('postgres', 'CREATE EXTENSION outbox');
my $first = enqueue($late, 'late-first');
wait_relay_state($late, 'streaming', 30);
ok(wait_relay_idle($late), 'relay caught up');
my @late_recs = grep { ($_->{headers}{'outbox-id'} // '') eq $first
	  && $_->{value} =~ /late-first/ } consume($b2, $topic, idle_ms => 1000);
is(scalar(@late_recs), 1,
	'the event written right after CREATE EXTENSION was delivered');
$late->stop;

is(relay_status($node)->{state}, 'streaming', 'first node still streaming');
$node->stop;
done_testing();
