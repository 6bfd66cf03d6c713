#
# 120_relay_memory.pl
#    The relay's long-lived memory stays flat across the checks it repeats:
#    relay_ready() (output_plugin_libraries parsed by plugin_allowed()) on
#    every pass of its loop, and the outbox.kafka_config_file read on every
#    producer (re)build.  Both once allocated in TopMemoryContext and never
#    freed (issue 6, point 16).
#
#    TopMemoryContext's "used" bytes are read from the server log with
#    pg_log_backend_memory_contexts(<relay pid>), before and after:
#      (a) 100 reloads while disabled (outbox.kafka_brokers = ''): each
#          reload is one pass of the relay's loop, so one relay_ready();
#      (b) 10 producer rebuilds (a reload that changes a Kafka setting),
#          each reading a 64 kB outbox.kafka_config_file.
#    output_plugin_libraries carries 40 extra entries (about 2.5 kB), so
#    that one leaked parse (about 7 kB: the copy, the list, the items)
#    shows.  Leaking, (a) grows by about 700 kB and (b) by 10 x 64 kB plus
#    the parses; without leaks both stay within a few kB (the bound below
#    is 64 kB).
#
# test/e2e/t/120_relay_memory.pl
#
use strict;
use warnings;

use File::Spec;
use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $bound = 8 * 1024;

my $topic = unique_topic('memory');
my $b = start_broker(topics => ["$topic:1"]);
my $pad = join(', ',
	map { sprintf('/nonexistent/outbox-memory-test/plugin_%02d', $_) } 1 .. 40);
my $node = new_relay_node('relay_memory', $b,
	plugin_libraries => "pgoutput, test_decoding, outbox, $pad");

sub set_conf
{
	my ($name, $value) = @_;
	$node->safe_psql('postgres',
		"ALTER SYSTEM SET $name = '$value'; SELECT pg_reload_conf();");
}

# TopMemoryContext's own used bytes in the relay, from the server log.
sub top_used
{
	my $pid = relay_pid($node);
	my $pos = log_position($node);
	my $used;
	$node->safe_psql('postgres', "SELECT pg_log_backend_memory_contexts($pid)");
	wait_for(
		sub {
			log_since($node, $pos) =~
			  /logging memory contexts of PID $pid\n.*?level: 0; TopMemoryContext: \d+ total in \d+ blocks; \d+ free \(\d+ chunks\); (\d+) used/s
			  or return 0;
			$used = $1;
			return 1;
		},
		30);
	die "no memory context report from the relay (pid $pid)" unless defined $used;
	return $used;
}

# Reload $n times, letting the relay take each reload on its own.
sub reloads
{
	my ($n) = @_;
	for (1 .. $n)
	{
		$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
		usleep(50_000);
	}
}

ok($node->safe_psql('postgres', 'SHOW output_plugin_libraries') =~ /plugin_40/,
	'output_plugin_libraries carries the padding');
my $pid = relay_pid($node);

# ---------------------------------------------------------------------
# (a) relay_ready() on every pass of the loop: disabled, then reloads.
# ---------------------------------------------------------------------
set_conf('outbox.kafka_brokers', '');
wait_relay_state($node, 'disabled', 30);
reloads(10);
my $before = top_used();
reloads(100);
my $after = top_used();
diag("disabled, 100 reloads: TopMemoryContext used $before -> $after bytes");
cmp_ok($after - $before, '<', $bound,
	'100 passes through relay_ready(): TopMemoryContext grows less than 64 kB');
is(relay_status($node)->{state}, 'disabled', 'the relay stayed disabled');

# ---------------------------------------------------------------------
# (b) The config file read on every producer build.
# ---------------------------------------------------------------------
my $file = File::Spec->rel2abs($node->data_dir . '/kafka.properties');
append_to_file($file,
	join('', map { sprintf("# %-60s\n", "padding line $_ of a 64 kB file") } 1 .. 1040)
	  . "linger.ms=1\n");
ok(-s $file >= 64_000, 'the property file is 64 kB');
my $pos = log_position($node);
set_conf('outbox.kafka_config_file', $file);
set_conf('outbox.kafka_brokers', $b->{bootstrap});
wait_relay_state($node, 'streaming', 30);

# One rebuild per change of outbox.kafka_properties; returns the count of
# "streaming" lines (one per producer build) once the relay is back.
my $builds = 0;
sub rebuild
{
	my ($i) = @_;
	my $want = $builds + 1;
	set_conf('outbox.kafka_properties', "client.id=memory-$i");
	wait_for(sub {
		count_matches(log_since($node, $pos), qr/outbox relay streaming slot/) >= $want
	}, 30) or die "the relay did not rebuild its producer";
	$builds = $want;
}
$builds = count_matches(log_since($node, $pos), qr/outbox relay streaming slot/);
rebuild($_) for 1 .. 2;
wait_relay_state($node, 'streaming', 30);
$before = top_used();
rebuild($_) for 3 .. 12;
wait_relay_state($node, 'streaming', 30);
$after = top_used();
diag("10 producer rebuilds with a 64 kB property file: TopMemoryContext used $before -> $after bytes");
cmp_ok($after - $before, '<', $bound,
	'10 producer rebuilds: TopMemoryContext grows less than 64 kB');

# Still delivering, in the same process.
my $id = $node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'k', '{\"n\": 1}')");
ok(wait_relay_idle($node), 'the relay delivers after the rebuilds');
is(relay_pid($node), $pid, 'in the same process');

$node->stop;
done_testing();
