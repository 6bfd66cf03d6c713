#
# OutboxTest.pm
#    Shared helpers for outbox's end-to-end TAP tests: a Kafka to talk to
#    (our mock broker, or a real cluster), PostgreSQL nodes running the relay,
#    a consumer, and assertions about what arrived.
#
# A real Kafka is used instead of the mock when OUTBOX_TEST_KAFKA_BROKERS
# holds its bootstrap servers; OUTBOX_TEST_KAFKA_PROPERTIES may add
# librdkafka properties ("name=value;name=value", e.g. SASL settings) used
# by both the relay and the test consumer.  Topic names are unique per run,
# so old data in a real cluster never interferes.  Tests that need to break
# the broker (down/up, injected errors) skip those parts against a real
# cluster unless OUTBOX_TEST_KAFKA_STOP_CMD / OUTBOX_TEST_KAFKA_START_CMD say
# how to stop and start it.  With OUTBOX_TEST_KAFKA_DIR naming a cluster
# started by test/kafka/kafka.sh, start_broker() creates the topics a test
# declares (auto topic creation may be off there), and kafka_cluster() gives
# the real-only fault tests its node count and a way to drive its nodes.
#
# test/e2e/OutboxTest.pm
#
package OutboxTest;

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use POSIX ();

use Exporter 'import';
our @EXPORT = qw(
  real_kafka start_broker broker_ctl broker_can_fail unique_topic
  new_relay_node wait_relay_state wait_relay_idle wait_relay_quiet relay_status
  consume consume_all_ids murmur2 java_partition
  check_per_key_order summarize_duplicates relay_pid wait_for
  consume_lines table_ids check_delivery proc_memory start_writer
  start_pgbench log_position log_since count_matches verify_topic
  enqueue_script kafka_cluster kafka_sh real_fault_scenario drop_relay_slot
);

my $ROOT   = abs_path(dirname(__FILE__) . '/../..');
my $BROKER = "$ROOT/test/broker/kafka_mock_broker";
my $CONSUME = "$ROOT/test/broker/kafka_consume";
my $ADMIN = "$ROOT/test/broker/kafka_admin";
my $KAFKA_SH = "$ROOT/test/kafka/kafka.sh";

my @brokers_started;

sub real_kafka
{
	return $ENV{OUTBOX_TEST_KAFKA_BROKERS};
}

sub _kafka_properties
{
	return $ENV{OUTBOX_TEST_KAFKA_PROPERTIES} // '';
}

# Start a mock cluster (or describe the real one).  Options: brokers (3),
# topics (["name:partitions", ...]; auto-created topics get 4 partitions).
# Returns a hashref with bootstrap, ctl (control socket) and real (true for a
# real Kafka).
sub start_broker
{
	my (%opts) = @_;

	if (real_kafka())
	{
		my $b = { bootstrap => real_kafka(), real => 1 };
		my $k = kafka_cluster();
		if (!$k && @{ $opts{topics} // [] })
		{
			# A cluster we did not start (or no Java at hand, as in the
			# version chroots): create the topics through the admin API.
			my ($out, $err) = ('', '');
			IPC::Run::run([ $ADMIN, '-b', real_kafka(),
				(map { ('-X', $_) } grep { $_ ne '' } split /;/, _kafka_properties()),
				@{ $opts{topics} } ], '<', \undef, '>', \$out, '2>', \$err)
			  or die "kafka_admin failed: $err";
		}
		if ($k)
		{
			$b->{kafka} = $k;
			for my $spec (@{ $opts{topics} // [] })
			{
				# "name:partitions[:config=value,...]"
				my ($name, $parts, $configs) = split /:/, $spec, 3;
				kafka_sh('create-topic', $k->{dir}, $name, $parts // 4,
					$k->{rf}, $k->{min_isr},
					split(/,/, $configs // ''));
			}
		}
		return $b;
	}

	my $dir = PostgreSQL::Test::Utils::tempdir();
	my @cmd = (
		$BROKER,
		'--brokers', $opts{brokers} // 3,
		'--bootstrap-file', "$dir/bootstrap",
		'--control', "$dir/ctl");
	push @cmd, map { ('--topic', $_) } @{ $opts{topics} // [] };

	my $h = IPC::Run::start(\@cmd, init => \&die_with_parent, '<', \undef,
		'>', "$dir/broker.out", '2>', "$dir/broker.err");
	my $deadline = time() + 20;
	while (!-s "$dir/bootstrap")
	{
		die "mock broker did not start: " . slurp_file("$dir/broker.err")
		  if time() > $deadline;
		usleep(50_000);
	}
	my $bootstrap = slurp_file("$dir/bootstrap");
	chomp $bootstrap;
	my $b = { bootstrap => $bootstrap, ctl => "$dir/ctl", handle => $h,
		dir => $dir, real => 0 };
	push @brokers_started, $b;
	return $b;
}

# The real cluster started by test/kafka/kafka.sh (OUTBOX_TEST_KAFKA_DIR):
# {dir, nodes, rf, min_isr}, or undef.
sub kafka_cluster
{
	my $dir = $ENV{OUTBOX_TEST_KAFKA_DIR};
	return undef unless real_kafka() && $dir && -f "$dir/cluster.env";
	my %env = map { /^(\w+)=(.*)$/ ? ($1, $2) : () }
	  split /\n/, slurp_file("$dir/cluster.env");
	my $nodes = $env{NODES} // 1;
	return {
		dir => $dir,
		nodes => $nodes,
		rf => $nodes >= 3 ? 3 : 1,
		min_isr => $nodes >= 3 ? 2 : 1,
		auto_create => ($env{AUTO_CREATE} // 'true') eq 'true',
	};
}

# Run test/kafka/kafka.sh with these arguments; returns its output (chomped),
# dies if it fails.
sub kafka_sh
{
	my (@args) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'bash', $KAFKA_SH, @args ], '<', \undef, '>', \$out,
		'2>', \$err)
	  or die "kafka.sh @args failed: $err";
	chomp $out;
	return $out;
}

# A fault test on a real 3-node cluster from test/kafka/kafka.sh (skips the
# whole test otherwise): a topic of 6 partitions, replication factor 3,
# min.insync.replicas 2 (the relay's idempotent producer uses acks=all);
# writers run transactions over 20 keys; once the relay has delivered some,
# $fault->($ctx) breaks and repairs the cluster ($ctx: broker, kafka, topic,
# node, busiest => the partition most keys map to); the writers go on a
# little, stop, and the topic is checked: nothing lost, nothing unexpected,
# per-key order of first occurrences; duplicates are counted and reported
# (and must be 0 with $opts{exactly_once}: the relay runs with
# outbox.delivery = exactly_once).  $opts{extra_conf} goes to
# postgresql.conf.
sub real_fault_scenario
{
	my ($name, $fault, %opts) = @_;
	my $k = kafka_cluster();
	plan skip_all =>
	  'needs a real 3-node Kafka (test/kafka/kafka.sh start --nodes 3; run_all.sh suite e2e-kafka3)'
	  unless $k && $k->{nodes} >= 3;

	my $partitions = 6;
	my $keys = 20;
	my $topic = unique_topic($name);
	my $b = start_broker(topics => ["$topic:$partitions"]);
	my $node = new_relay_node($name, $b,
		kafka_properties => $opts{kafka_properties} // '',
		extra_conf => ($opts{exactly_once} ? "outbox.delivery = exactly_once\n" : '')
		  . ($opts{extra_conf} // ''));
	my %load;
	$load{ java_partition("key-$_", $partitions) }++ for 0 .. $keys - 1;
	my ($busiest) = sort { $load{$b} <=> $load{$a} || $a <=> $b } keys %load;

	my @writers = map {
		start_writer($node, $topic, events => 3, keys => $keys,
			pause => 0.005, name => "$name-$_")
	} 1 .. 2;
	ok(wait_for(sub { (relay_status($node)->{delivered} // 0) >= 300 }, 60),
		"$name: relay delivering before the fault");

	my $t0 = time();
	my $before = relay_status($node)->{delivered};
	$fault->({ broker => $b, kafka => $k, topic => $topic, node => $node,
		busiest => $busiest });
	diag(sprintf('%s: fault and repair took %.1f s; %d events delivered before',
		$name, time() - $t0, $before));

	# the relay delivers again after the repair
	my $mark = relay_status($node)->{delivered};
	my $t1 = time();
	ok(wait_for(sub { relay_status($node)->{delivered} > $mark + 100 }, 120),
		"$name: relay delivering after the repair");
	diag(sprintf('%s: 100 more events acknowledged %.1f s after the repair',
		$name, time() - $t1));
	sleep(2);
	my @res = map { $_->stop } @writers;
	diag(sprintf('%s: writer batches ok %d, failed %d', $name,
		(map { my $f = $_; my $s = 0; $s += $_->{$f} for @res; $s }
		  qw(batches_ok batches_failed))));
	ok(wait_relay_idle($node, 180), "$name: relay caught up");
	my $s = relay_status($node);
	is($s->{state}, 'streaming', "$name: still streaming");
	is($s->{dead_lettered}, 0, "$name: nothing dead-lettered");
	my $d = verify_topic($node, $b, $topic, $name, timeout_ms => 180_000,
		exactly_once => $opts{exactly_once});
	diag(sprintf('%s: RESULT lost %d, duplicates %d, per-key reorders %d',
		$name, scalar(@{ $d->{missing} }), $d->{duplicates},
		scalar(check_per_key_order(@{ $d->{records} }))));
	$node->stop;
	return $d;
}

# Can this test stop and start the broker?
sub broker_can_fail
{
	my ($b) = @_;
	return 1 unless $b->{real};
	return defined $ENV{OUTBOX_TEST_KAFKA_STOP_CMD}
	  && defined $ENV{OUTBOX_TEST_KAFKA_START_CMD};
}

# Send a control command to the mock broker ("down 1", "up 1", ...).  On a
# real Kafka, "down"/"up" of all brokers run the configured commands.
sub broker_ctl
{
	my ($b, @words) = @_;

	if ($b->{real})
	{
		my $cmd = $words[0] eq 'down' ? $ENV{OUTBOX_TEST_KAFKA_STOP_CMD}
		  : $words[0] eq 'up' ? $ENV{OUTBOX_TEST_KAFKA_START_CMD} : undef;
		die "broker command '@words' needs the mock broker" unless $cmd;
		system($cmd) == 0 or die "'$cmd' failed";
		return 'ok';
	}
	my ($out, $err);
	IPC::Run::run([ $BROKER, 'ctl', $b->{ctl}, @words ], '>', \$out, '2>',
		\$err)
	  or die "broker command '@words' failed: $out $err";
	chomp $out;
	return $out;
}

sub unique_topic
{
	my ($base) = @_;
	return sprintf('%s.%d.%d', $base, $$, int(rand(1_000_000)));
}

# A PostgreSQL node with the relay pointed at the broker, extension created.
sub new_relay_node
{
	my ($name, $b, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => 'logical');
	my $props = join(';', grep { $_ ne '' }
		  (_kafka_properties(), $opts{kafka_properties} // ()));
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'outbox'
output_plugin_libraries = '@{[ $opts{plugin_libraries} // 'pgoutput, test_decoding, outbox' ]}'
max_replication_slots = 10
max_wal_senders = 10
outbox.kafka_brokers = '$b->{bootstrap}'
outbox.kafka_properties = '$props'
outbox.databases = 'postgres'
outbox.retry_interval = '200ms'
log_min_messages = 'info'
});
	$node->append_conf('postgresql.conf', $opts{extra_conf})
	  if $opts{extra_conf};
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION outbox')
	  unless $opts{no_extension};
	wait_relay_state($node, 'streaming') unless $opts{no_wait};
	return $node;
}

# The relay's row of relay_status (of database $db where several are relayed).
sub relay_status
{
	my ($node, $db) = @_;
	my $where = defined $db ? " WHERE s.database = '$db'" : '';
	my $row = $node->safe_psql('postgres',
		"SELECT row_to_json(s) FROM outbox.relay_status s$where");
	return $row eq '' ? undef : decode_json($row);
}

sub relay_pid
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'}
	);
}

# Stop the relay and drop its slot before the launcher starts it again (it
# waits at least 5 s); true once dropped.
sub drop_relay_slot
{
	my ($node, $slot) = @_;
	return wait_for(
		sub {
			$node->safe_psql('postgres',
				q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				   WHERE backend_type = 'outbox relay'});
			my ($rc) = $node->psql('postgres',
				"SELECT pg_drop_replication_slot('$slot')");
			return $rc == 0;
		},
		30);
}

# Poll a code ref until it returns true; false on timeout.
sub wait_for
{
	my ($code, $timeout) = @_;
	my $deadline = time() + ($timeout // 60);
	while (time() < $deadline)
	{
		return 1 if $code->();
		usleep(100_000);
	}
	return 0;
}

sub wait_relay_state
{
	my ($node, $state, $timeout, $db) = @_;
	my $ok = wait_for(
		sub {
			my $s = relay_status($node, $db);
			return $s && $s->{state} eq $state;
		},
		$timeout // 60);
	my $s = relay_status($node, $db);
	die "relay did not reach state $state: " . encode_json($s // {})
	  unless $ok;
	return $s;
}

# Wait until everything committed so far is acknowledged and confirmed.
sub wait_relay_idle
{
	my ($node, $timeout) = @_;
	my $target = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	my $ok = wait_for(
		sub {
			return $node->safe_psql('postgres',
				qq{SELECT in_flight = 0 AND confirmed_lsn >= '$target'
				     FROM outbox.relay_status}) eq 't';
		},
		$timeout // 120);
	return $ok;
}

# Wait until the relay is idle and its confirmed position stays put for
# 2 s: the relay's own delivery watermark write (about a second after events
# were delivered) is WAL that moves an idle slot.
sub wait_relay_quiet
{
	my ($node, $timeout) = @_;
	my $deadline = time() + ($timeout // 120);
	while (time() < $deadline)
	{
		return 0 unless wait_relay_idle($node, $deadline - time());
		my $c1 = relay_status($node)->{confirmed_lsn};
		sleep 2;
		return 1 if relay_status($node)->{confirmed_lsn} eq $c1;
	}
	return 0;
}

# Consume a topic from the beginning.  Options: count (stop after that many),
# idle_ms, timeout_ms.  Returns a list of records: {topic, partition, offset,
# key, value, headers (hashref), headers_raw (the JSON object as printed, in
# the record's header order), recv_us}.
sub consume
{
	my ($b, $topic, %opts) = @_;
	my @cmd = _consume_command($b, $topic, %opts);
	my ($out, $err) = ('', '');
	IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
	my @records;
	for my $line (split /\n/, $out)
	{
		my ($t, $p, $o, $k, $v, $h, $us) = split /\t/, $line, -1;
		push @records,
		  {
			topic => $t,
			partition => $p,
			offset => $o,
			key => _unescape($k),
			value => _unescape($v),
			headers => decode_json($h),
			headers_raw => $h,
			recv_us => $us
		  };
	}
	return @records;
}

# The kafka_consume command line for consume() and consume_lines().
sub _consume_command
{
	my ($b, $topic, %opts) = @_;
	my @cmd = ($CONSUME, '-b', $b->{bootstrap}, '-t', $topic,
		'--idle-ms', $opts{idle_ms} // 2000,
		'--timeout-ms', $opts{timeout_ms} // 120_000);
	push @cmd, ('-n', $opts{count}) if defined $opts{count};
	push @cmd, map { ('-X', $_) } grep { $_ ne '' } split /;/,
	  _kafka_properties();
	return @cmd;
}

sub _unescape
{
	my ($s) = @_;
	return undef if $s eq '\N';
	$s =~ s/\\(x[0-9a-fA-F]{2}|.)/_unescape_one($1)/ge;
	return $s;
}

sub _unescape_one
{
	my ($e) = @_;
	return "\t" if $e eq 't';
	return "\n" if $e eq 'n';
	return "\r" if $e eq 'r';
	return "\\" if $e eq '\\';
	return chr(hex(substr($e, 1))) if $e =~ /^x/;
	return $e;
}

# Outbox ids of consumed records (outbox-id header), in consumption order.
sub consume_all_ids
{
	my (@records) = @_;
	return map { $_->{headers}{'outbox-id'} } @records;
}

# Kafka's murmur2 (the Java client's Utils.murmur2), as a signed 32-bit int.
sub murmur2
{
	use integer;
	my ($data) = @_;
	my @b = unpack('C*', $data);
	my $len = scalar @b;
	my $m = 0x5bd1e995;
	my $h = (0x9747b28c ^ $len) & 0xffffffff;
	my $i = 0;
	for (; $i + 4 <= $len; $i += 4)
	{
		my $k = $b[$i] | ($b[ $i + 1 ] << 8) | ($b[ $i + 2 ] << 16)
		  | ($b[ $i + 3 ] << 24);
		$k = ($k * $m) & 0xffffffff;
		$k ^= ($k >> 24);
		$k = ($k * $m) & 0xffffffff;
		$h = ($h * $m) & 0xffffffff;
		$h ^= $k;
	}
	my $rest = $len % 4;
	$h ^= $b[ $i + 2 ] << 16 if $rest >= 3;
	$h ^= $b[ $i + 1 ] << 8 if $rest >= 2;
	if ($rest >= 1)
	{
		$h ^= $b[$i];
		$h = ($h * $m) & 0xffffffff;
	}
	$h ^= ($h >> 13);
	$h = ($h * $m) & 0xffffffff;
	$h ^= ($h >> 15);
	$h &= 0xffffffff;
	return $h >= 0x80000000 ? $h - 4294967296 : $h;
}

# The partition the Java producer's default partitioner picks for a key.
sub java_partition
{
	my ($key, $partitions) = @_;
	return (murmur2($key) & 0x7fffffff) % $partitions;
}

# Check that, per key, the first occurrences of events arrive in commit
# order: commit LSN (outbox-lsn) never goes backwards, and within one
# transaction ids increase.  Returns a list of problems (empty if none).
sub check_per_key_order
{
	my (@records) = @_;
	my (%last, %seen, @problems);
	for my $r (@records)
	{
		my $id = $r->{headers}{'outbox-id'} // '';
		my $lsn = $r->{headers}{'outbox-lsn'};
		my $key = $r->{key} // '';
		my $uid = "$id/$lsn";
		next if $seen{$uid}++;
		my ($hi, $lo) = split m{/}, $lsn;
		my $pos = hex($hi) * 2**32 + hex($lo);
		if (my $prev = $last{$key})
		{
			push @problems,
			  "key $key: event $id (commit $lsn) after commit $prev->{lsn}"
			  if $pos < $prev->{pos}
			  || ($pos == $prev->{pos} && $id ne '' && $id < $prev->{id});
		}
		$last{$key} = { pos => $pos, lsn => $lsn, id => $id eq '' ? 0 : $id };
	}
	return @problems;
}

# Count distinct and duplicate events (by outbox-id and commit LSN).
sub summarize_duplicates
{
	my (@records) = @_;
	my %n;
	$n{ ($_->{headers}{'outbox-id'} // '') . '/' . $_->{headers}{'outbox-lsn'} }++
	  for @records;
	my $dups = 0;
	$dups += $_ - 1 for values %n;
	return (scalar(keys %n), $dups);
}

# ---------------------------------------------------------------------
# Helpers for the fault tests
# ---------------------------------------------------------------------

# Consume like consume(), but without building a record per line: the raw
# consumer lines go to a file that is read back line by line, and $cb gets
# (topic, partition, offset, key, value, headers-json) for each.  Good for
# a million records.  Returns the number of lines.
sub consume_lines
{
	my ($b, $topic, $cb, %opts) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my @cmd = _consume_command($b, $topic, %opts);
	my $err = '';
	IPC::Run::run(\@cmd, '>', "$dir/out", '2>', \$err);
	open my $fh, '<', "$dir/out" or die "could not read consumer output: $!";
	my $n = 0;
	while (my $line = <$fh>)
	{
		chomp $line;
		$cb->(split /\t/, $line, -1);
		$n++;
	}
	close $fh;
	unlink "$dir/out";
	return $n;
}

# Ids of outbox.messages rows (the database's truth), optionally filtered.
sub table_ids
{
	my ($node, $where) = @_;
	my $out = $node->safe_psql('postgres',
		'SELECT id FROM outbox.messages'
		  . (defined $where ? " WHERE $where" : '')
		  . ' ORDER BY id');
	return grep { $_ ne '' } split /\n/, $out;
}

# Compare consumed records with the ids that must have arrived.  Returns a
# hashref: expected, distinct, duplicates (extra copies of expected ids),
# missing and unexpected (arrayrefs of ids; records without an outbox-id
# are ignored here).
sub check_delivery
{
	my ($records, $truth) = @_;
	my %want = map { $_ => 1 } @$truth;
	my %got;
	$got{ $_->{headers}{'outbox-id'} }++
	  for grep { defined $_->{headers}{'outbox-id'} } @$records;
	my $dups = 0;
	$dups += $got{$_} - 1 for keys %got;
	return {
		expected => scalar(@$truth),
		distinct => scalar(keys %got),
		duplicates => $dups,
		missing => [ grep { !$got{$_} } @$truth ],
		unexpected => [ sort { $a <=> $b } grep { !$want{$_} } keys %got ],
	};
}

# Memory of a process from /proc/PID/status, in kB: RssAnon, VmHWM, VmRSS.
sub proc_memory
{
	my ($pid) = @_;
	my %m;
	open my $fh, '<', "/proc/$pid/status" or return undef;
	while (<$fh>)
	{
		$m{$1} = $2 if /^(RssAnon|VmHWM|VmRSS|RssShmem):\s+(\d+) kB/;
	}
	close $fh;
	return \%m;
}

# Byte offset of the end of a node's log, for log_since().
sub log_position
{
	my ($node) = @_;
	return -s $node->logfile // 0;
}

sub log_since
{
	my ($node, $offset) = @_;
	return slurp_file($node->logfile, $offset);
}

sub count_matches
{
	my ($text, $re) = @_;
	my $n = () = $text =~ /$re/g;
	return $n;
}

# Make the calling process (a child between fork and exec) die when its
# parent does: prctl(PR_SET_PDEATHSIG, SIGKILL) on Linux; a no-op where the
# call is unknown.  Used as IPC::Run's init and by spawn().
sub die_with_parent
{
	my $nr = eval { require 'syscall.ph'; &SYS_prctl() };
	$nr //= { x86_64 => 157, aarch64 => 167 }->{ (POSIX::uname())[4] };
	syscall($nr, 1, 9) if defined $nr;	# PR_SET_PDEATHSIG = 1, SIGKILL = 9
	return;
}

# Processes started with spawn() and not yet waited for.
my %spawned;

# Start a program in the background that cannot outlive this test: stdin
# from /dev/null, stdout and stderr to $log, the parent-death signal set,
# and nothing of the test's own code in it (exec right after the fork, so
# no END block, no copy of the TAP pipe).  Returns its pid; wait for it
# with waitpid and then forget_spawned($pid).
sub spawn
{
	my ($cmd, $log) = @_;
	my $pid = fork();
	die "fork failed: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>>', $log);
		open(STDERR, '>&', \*STDOUT);
		die_with_parent();
		exec { $cmd->[0] } @$cmd
		  or print STDERR "could not run $cmd->[0]: $!\n";
		POSIX::_exit(127);
	}
	$spawned{$pid} = 1;
	return $pid;
}

sub forget_spawned
{
	my ($pid) = @_;
	delete $spawned{$pid};
	return;
}

# A writer that survives server crashes: test/e2e/writer.pl in the
# background, running batches of transactions through psql and simply
# retrying when the server is gone.  Each transaction inserts
# $opts{events} (default 3) events into $topic over $opts{keys} (default
# 10) keys named "$opts{key_prefix}-N" (default "key"), then sleeps
# $opts{pause} (default 0.01 s).  With $opts{emit} every transaction also
# emits one event (outbox.emit(), WAL only) with payload {"w", "seq",
# "emitted": true}.  Returns an object; $w->stop returns {batches_ok,
# batches_failed}.
sub start_writer
{
	my ($node, $topic, %opts) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $name = $opts{name} // 'w';
	my $pid = spawn(
		[
			$^X, "$ROOT/test/e2e/writer.pl", $dir, $node->connstr('postgres'),
			$topic, $name, $opts{events} // 3, $opts{keys} // 10,
			$opts{pause} // 0.01, $opts{batch} // 20,
			$opts{key_prefix} // 'key', $opts{emit} ? 1 : 0
		],
		"$dir/writer.log");
	return bless { pid => $pid, dir => $dir, name => $name },
	  'OutboxTest::Writer';
}

package OutboxTest::Writer;

use Time::HiRes qw(time usleep);

# Tell the writer to stop and wait for its result (at most 120 s: a batch
# against a slow server).  Dies, with the writer's log, if it has none.
sub stop
{
	my ($self) = @_;
	return $self->{result} if $self->{result};
	open my $fh, '>', "$self->{dir}/stop" or die "could not write stop file: $!";
	close $fh;
	my $deadline = time() + 120;
	my $status;
	while (1)
	{
		my $r = waitpid($self->{pid}, POSIX::WNOHANG());
		if ($r == $self->{pid})
		{
			$status = $?;
			last;
		}
		# -1: not a child of ours any more; the result file tells
		last if $r == -1 && (-e "$self->{dir}/result" || !kill(0, $self->{pid}));
		if (time() > $deadline)
		{
			kill 'KILL', $self->{pid};
			waitpid($self->{pid}, 0);
			OutboxTest::forget_spawned($self->{pid});
			die "writer $self->{name} did not stop within 120 s; its log:\n"
			  . $self->log_tail;
		}
		usleep(50_000);
	}
	OutboxTest::forget_spawned($self->{pid});
	die "writer $self->{name} ended ("
	  . (defined $status ? "wait status $status" : 'reaped elsewhere')
	  . ") without a result; its log:\n" . $self->log_tail
	  unless -f "$self->{dir}/result";
	my ($ok, $failed) = split ' ',
	  PostgreSQL::Test::Utils::slurp_file("$self->{dir}/result");
	$self->{result} = { batches_ok => $ok, batches_failed => $failed };
	return $self->{result};
}

sub log_tail
{
	my ($self) = @_;
	my $log = "$self->{dir}/writer.log";
	return '' unless -f $log;
	my @lines = split /\n/, PostgreSQL::Test::Utils::slurp_file($log);
	splice(@lines, 0, @lines - 20) if @lines > 20;
	return join("\n", @lines) . "\n";
}

package OutboxTest;

# Run pgbench in the background with a custom script; returns the
# IPC::Run handle (finish it with ->finish; output in $$out / $$err).
sub start_pgbench
{
	my ($node, $script, $args, $out, $err) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	open my $fh, '>', "$dir/script.sql" or die $!;
	print $fh $script;
	close $fh;
	my @cmd = ('pgbench', '-n', '-f', "$dir/script.sql", @$args,
		'-h', $node->host, '-p', $node->port, 'postgres');
	return IPC::Run::start(\@cmd, init => \&die_with_parent, '<', \undef,
		'>', $out, '2>', $err);
}

# The standard end-of-test check for a topic written through outbox.messages
# only: consume it, compare with the rows of outbox.messages for that topic,
# check per-key order.  Asserts no loss, nothing unexpected and order; with
# exactly_once also no duplicates.  Returns check_delivery's hashref plus
# records.
sub verify_topic
{
	my ($node, $b, $topic, $label, %opts) = @_;
	my @truth = table_ids($node, "topic = '$topic'");
	my @recs = consume($b, $topic, idle_ms => $opts{idle_ms} // 2000,
		timeout_ms => $opts{timeout_ms} // 90_000);
	my $d = check_delivery(\@recs, \@truth);
	ok(@truth > 0, "$label: events were written (" . scalar(@truth) . ')');
	is(scalar(@{ $d->{missing} }), 0, "$label: nothing lost")
	  or diag("$label: " . scalar(@{ $d->{missing} })
		  . " missing, first: @{$d->{missing}}[0 .. 9]");
	is(scalar(@{ $d->{unexpected} }), 0, "$label: nothing unexpected")
	  or diag("$label: unexpected: @{$d->{unexpected}}[0 .. 9]");
	my @problems = check_per_key_order(@recs);
	if ($opts{mock_order_unreliable} && !$b->{real})
	{
		# The mock does not check idempotent sequence numbers: after a
		# request is rejected it still stores the next one for the
		# partition, which real Kafka refuses.  Order is asserted against
		# a real Kafka only; here deviations are reported.
		diag("$label: per-key order deviations on the mock: "
			  . scalar(@problems));
		diag(join("\n", @problems[ 0 .. 4 ])) if @problems;
	}
	else
	{
		is(scalar(@problems), 0, "$label: per-key order of first occurrences")
		  or diag(join("\n", @problems[ 0 .. 9 ]));
	}
	is($d->{duplicates}, 0, "$label: no duplicates") if $opts{exactly_once};
	diag(sprintf('%s: %d events, %d records consumed, %d duplicates',
		$label, scalar(@truth), scalar(@recs), $d->{duplicates}));
	$d->{records} = \@recs;
	return $d;
}

# A pgbench script: one transaction of $n events over $keys keys.
sub enqueue_script
{
	my ($topic, $n, $keys) = @_;
	my $s = '';
	$s .= "\\set k$_ random(0, " . (($keys // 10) - 1) . ")\n" for 1 .. $n;
	$s .= "BEGIN;\n";
	$s .= "SELECT outbox.enqueue('$topic', 'key-' || :k$_, jsonb_build_object('c', :client_id, 'n', $_));\n"
	  for 1 .. $n;
	$s .= "COMMIT;\n";
	return $s;
}

# A signal (run_test.pl's SIGTERM at its time limit, a ^C) ends the test
# through exit, so that the END blocks run: PostgreSQL::Test::Cluster's
# stops the nodes, ours the helpers.
my %signo = (HUP => 1, INT => 2, TERM => 15);
$SIG{$_} = sub { print STDERR "# test stopped by SIG$_[0]\n"; exit(128 + $signo{ $_[0] }); }
  for keys %signo;

END
{
	local $?;	# the test's exit status stays as it is

	# helpers still running (a test that died half-way)
	for my $pid (keys %spawned)
	{
		kill 'KILL', $pid;
		waitpid($pid, 0);
	}
	for my $b (@brokers_started)
	{
		next unless $b->{handle};
		eval { $b->{handle}->signal('TERM'); $b->{handle}->finish; };
	}
}


# Known librdkafka producer defects a fault test can meet (issue 23, point
# 9; docs/relay.md, "librdkafka versions"): id (librdkafka's PR number) =>
# [first version with the fix, what it does to the relay].
my %LIBRDKAFKA_DEFECTS = (
	4438 => [ '2.3.0',
		'after a possibly persisted send (a timeout or a disconnection) the '
		  . 'idempotent producer can fail fatally with "sequence desynchronization" '
		  . 'or "rewound sequence number"; the relay rebuilds its producer and '
		  . 'produces the unacknowledged events again' ],
	4970 => [ '2.10.0',
		'a metadata refresh queued on an unreachable broker blocks the lookup '
		  . 'of the controller and of the transaction coordinator until that '
		  . 'broker is back; with exactly_once the relay can stall until then' ],
);

# The librdkafka version the node's relay logged at start (undef if none).
sub librdkafka_version
{
	my ($node) = @_;
	my ($v) = slurp_file($node->logfile) =~ /runs with librdkafka (\d+(?:\.\d+)*)/;
	return $v;
}

# For each named defect the node's relay's librdkafka has, say so (diag):
# this test's result on that version does not show that the defect is
# absent, and a recovery the test sees may be the relay working around it.
# Also counts the fatal producer errors logged so far.  Returns the ids.
sub note_librdkafka_defects
{
	my ($node, @ids) = @_;
	my $v = librdkafka_version($node);
	return () unless defined $v;
	my $older = sub {
		my @a = split /\./, $_[0];
		my @b = split /\./, $_[1];
		for my $i (0 .. 2)
		{
			my ($x, $y) = ($a[$i] // 0, $b[$i] // 0);
			return $x < $y if $x != $y;
		}
		return 0;
	};
	my @hit = grep { $older->($v, $LIBRDKAFKA_DEFECTS{$_}[0]) } @ids;
	for my $id (@hit)
	{
		my ($fixed, $what) = @{ $LIBRDKAFKA_DEFECTS{$id} };
		diag("librdkafka $v has the defect fixed in $fixed (librdkafka #$id): $what;"
			  . ' on this version this test may pass only because the relay recovers from it');
	}
	diag(sprintf('librdkafka %s: the relay logged %d fatal producer error(s) so far',
		$v, count_matches(slurp_file($node->logfile), qr/fatal producer error/)))
	  if @hit;
	return @hit;
}

# Produce lines "key<TAB>value" to one partition of a topic of broker $b
# with kcat ("key<TAB>" alone: a null value, a tombstone), each record with
# the headers of @$headers ("name=value").  Called as
# OutboxTest::kcat_produce(...).
sub kcat_produce
{
	my ($b, $topic, $partition, $headers, @lines) = @_;
	my $in = join('', map { "$_\n" } @lines);
	my ($out, $err) = ('', '');
	my @x = map { ('-X', $_) } grep { $_ ne '' } split /;/,
	  ($ENV{OUTBOX_TEST_KAFKA_PROPERTIES} // '');
	IPC::Run::run([ 'kcat', '-P', '-b', $b->{bootstrap}, '-t', $topic,
		'-p', $partition, '-K', "\t", '-Z', (map { ('-H', $_) } @$headers), @x ],
		'<', \$in, '>', \$out, '2>', \$err)
	  or die "kcat failed: $err";
	return;
}

1;

# Produce records straight to a topic, bypassing the relay (a forger's
# view): each of @$lines is "KEY\tVALUE"; $opts{headers} is a list of
# "name=value".  Dies unless every record was delivered.
sub produce_raw
{
	my ($b, $topic, $lines, %opts) = @_;
	my @cmd = ("$ROOT/test/broker/kafka_produce", '-b', $b->{bootstrap},
		'-t', $topic);
	push @cmd, map { ('-H', $_) } @{ $opts{headers} // [] };
	push @cmd, map { ('-X', $_) } grep { $_ ne '' } split /;/,
	  _kafka_properties();
	my ($out, $err) = ('', '');
	my $in = join('', map { "$_\n" } @$lines);
	IPC::Run::run(\@cmd, '<', \$in, '>', \$out, '2>', \$err)
	  or die "kafka_produce failed: $err";
	return;
}
push @EXPORT, 'produce_raw';

1;
