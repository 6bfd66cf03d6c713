#
# 160_exactly_once.pl
#    outbox.delivery = exactly_once on a real Kafka (the mock broker does
#    not hide aborted transactions): a read_committed consumer must see
#    every event once, in per-key order, through
#      (a) SIGKILL of the relay while writers run (mid Kafka transaction);
#      (a2) both transactional producers committed Kafka transactions;
#      (b) an immediate shutdown while writers run;
#      (c) a poison record inside a Kafka transaction (too large for the
#          topic's max.message.bytes): it goes to outbox.dead_letters, the
#          records batched with it are delivered once; and a batch of
#          small events too large for that limit as a whole, one too
#          large event late in it: only that one goes to dead_letters
#          (produced again, the others are refused again if batched), every
#          other is delivered once, in order;
#      (d) a slot-loss replay interrupted by SIGKILL of the relay: the
#          progress record holds the replay's boundary and last id, the
#          next relay skips the rows replayed before;
#      (d2) the slot lost right after Kafka committed events that no
#          delivery watermark covers yet (its writes fail): the progress
#          record names their transactions, the replay skips their rows;
#      (e) a record under the relay's progress key that the relay did not
#          write (Kafka's console producer; no valid outbox-progress-mac),
#          claiming a commit LSN past the server's WAL and transactions it
#          has not started: ignored with a WARNING, new events are
#          delivered, not skipped;
#      (f) a copy of the stopped cluster (same system identifier, same
#          slot, same WAL) relays the same backlog at the same time as the
#          original: the copy draws a new incarnation, so its progress key
#          and transactional.id are its own; neither fences the other nor
#          skips by the other's progress: the backlog arrives from both,
#          each relay's records once, the copy's under its new
#          outbox-source (issue 23: they are two histories from here on).
#    Every scenario: 0 lost, 0 reordered per key; 0 duplicated except (f),
#    where each source is exactly once.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;
use Time::HiRes qw(time usleep);

plan skip_all => 'needs a real Kafka (run_all.sh suite e2e-kafka)'
  unless real_kafka();

my $eos_conf = "outbox.delivery = exactly_once\nrestart_after_crash = on\n";

# Writers, a crash, writers again; then everything once.
sub crash_run
{
	my ($node, $b, $topic, $label, $crash) = @_;

	my @writers = map { start_writer($node, $topic, name => "w$_", pause => 0.005) } 1 .. 2;
	ok(wait_for(sub { ((relay_status($node) // {})->{delivered} // 0) >= 300 }, 60),
		"$label: events flow before the crash");
	my $pid_before = relay_pid($node);
	my $log_pos = log_position($node);
	$crash->($pid_before);
	ok( wait_for(
			sub {
				my $s = eval { relay_status($node) };
				return $s && $s->{pid} && $s->{pid} != $pid_before
				  && $s->{state} eq 'streaming' && $s->{delivered} > 100;
			},
			90),
		"$label: relay back and delivering");
	sleep(1);
	$_->stop for @writers;
	ok(wait_relay_idle($node, 120), "$label: relay caught up");
	my $log = log_since($node, $log_pos);
	ok($log =~ /exactly-once: the last committed progress record of "outbox:\d+:\d+:\w+:[0-9a-f]{32}" covers commit LSN/,
		"$label: the new relay read its progress record");
	my $skipped = 0;
	$skipped += $1 while $log =~ /skipped (\d+) event\(s\) that the last committed progress record covers/g;
	diag("$label: $skipped event(s) after the slot's confirmed position were in Kafka already and skipped");
	my $d = verify_topic($node, $b, $topic, $label, exactly_once => 1);
	return $skipped;
}

my $t_kill = unique_topic('eos_kill');
my $t_stop = unique_topic('eos_stop');
my $t_poison = unique_topic('eos_poison');
my $t_batch = unique_topic('eos_batch');
my $t_zombie = unique_topic('eos_zombie');
my $t_replay = unique_topic('eos_replay');
my $t_history = unique_topic('eos_history');
my $t_gap = unique_topic('eos_gap');
my $b = start_broker(topics => [ "$t_kill:6", "$t_stop:6",
	"$t_poison:3:max.message.bytes=4096", "$t_batch:1:max.message.bytes=4096", "$t_zombie:6", "$t_replay:6", "$t_history:3", "$t_gap:3" ]);
my $node = new_relay_node('eos', $b, extra_conf => $eos_conf);
is($node->safe_psql('postgres', 'SHOW outbox.delivery'), 'exactly_once',
	'exactly_once mode');

# (a) SIGKILL of the relay, three times: the slot's saved position lags
# what Kafka committed, so the new relay finds committed events to skip.
my $skipped = 0;
for my $i (1 .. 3)
{
	$skipped += crash_run($node, $b, $t_kill, "relay SIGKILL $i",
		sub { kill 'KILL', $_[0]; });
}
ok($skipped > 0, "relay SIGKILL: committed events past the slot were skipped ($skipped)");

# (a2) Two transactional producers take turns (the second one's id is the
# first one's with ":2"): since the last restart, each has committed Kafka
# transactions, as two different producer ids.  Kafka's own admin tool says.
{
	my $key = $node->safe_psql('postgres',
		q{SELECT 'outbox:' || system_identifier || ':' || d.oid || ':' || s.slot_name
		           || ':' || outbox._incarnation()
		    FROM pg_control_system(), outbox.relay_status s
		    JOIN pg_database d ON d.datname = s.database});
	my %pid;
	for my $id ($key, "$key:2")
	{
		my $out = eval {
			kafka_sh('run-class', 'org.apache.kafka.tools.TransactionsCommand',
				'--bootstrap-server', $b->{bootstrap}, 'describe',
				'--transactional-id', $id);
		} // "describe failed: $@";
		my ($producer, $state) = $out =~ /^\s*\d+\s+\Q$id\E\s+(\d+)\s+\d+\s+(\w+)/m;
		$pid{$id} = $producer;
		is($state // $out, 'CompleteCommit',
			"two producers: transactional.id $id committed Kafka transactions");
	}
	ok(defined $pid{$key} && defined $pid{"$key:2"} && $pid{$key} != $pid{"$key:2"},
		'two producers: with two producer ids');
}

# (b) immediate shutdown
crash_run($node, $b, $t_stop, 'immediate shutdown',
	sub { $node->stop('immediate'); $node->start; });

# (c) a poison record inside a Kafka transaction: transactions of 5 events
# over 3 keys; one event of one of them is too large for the topic.
{
	my $sql = '';
	for my $t (1 .. 40)
	{
		$sql .= "BEGIN;\n";
		for my $e (1 .. 5)
		{
			my $payload = ($t == 20 && $e == 3)
			  ? "jsonb_build_object('pad', repeat('x', 8000))"
			  : "jsonb_build_object('t', $t, 'e', $e)";
			$sql .= "SELECT outbox.enqueue('$t_poison', 'key-' || ($e % 3), $payload);\n";
		}
		$sql .= "COMMIT;\n";
	}
	my $log_pos = log_position($node);
	$node->safe_psql('postgres', $sql);
	ok(wait_relay_idle($node, 120), 'poison: relay caught up');
	my $dead = $node->safe_psql('postgres',
		"SELECT count(*), min(error_code) FROM outbox.dead_letters WHERE topic = '$t_poison'");
	is($dead, '1|MSG_SIZE_TOO_LARGE', 'poison: the one event too large is in dead_letters');
	my $log = log_since($node, $log_pos);
	ok($log =~ /Kafka refused an event inside a Kafka transaction \(MSG_SIZE_TOO_LARGE\)/,
		'poison: its Kafka transaction was aborted');
	my @truth = table_ids($node,
		"topic = '$t_poison' AND id NOT IN (SELECT message_id FROM outbox.dead_letters WHERE message_id IS NOT NULL)");
	my @recs = consume($b, $t_poison, idle_ms => 2000, timeout_ms => 60_000);
	my $d = check_delivery(\@recs, \@truth);
	is(scalar(@truth), 199, 'poison: 199 events to deliver');
	is(scalar(@{ $d->{missing} }), 0, 'poison: nothing lost');
	is(scalar(@{ $d->{unexpected} }), 0, 'poison: nothing unexpected (the poison is not in Kafka)');
	is($d->{duplicates}, 0, 'poison: no duplicates');
	is(scalar(check_per_key_order(@recs)), 0, 'poison: per-key order');
}

# (c2) a batch at fault: 100 events of one key in one transaction make a
# record batch far over the topic's 4096 bytes, and event 90 is too large
# by itself.  The events refused with the batch are produced alone, every
# time (batched again they would be refused again, though not at fault),
# until event 90, refused alone, is known to be the one at fault.
{
	my $log_pos = log_position($node);
	$node->safe_psql('postgres',
		"SELECT outbox.enqueue('$t_batch', 'one-key', jsonb_build_object('i', i, 'pad', repeat('y', CASE WHEN i = 90 THEN 8000 ELSE 100 END))) FROM generate_series(1, 100) i");
	ok(wait_relay_idle($node, 120), 'batch: relay caught up');
	my $log = log_since($node, $log_pos);
	my $aborts = () = $log =~ /Kafka refused an event inside a Kafka transaction \(MSG_SIZE_TOO_LARGE\)/g;
	diag("batch: $aborts Kafka transaction(s) aborted on a size error");
	ok($aborts >= 2, 'batch: the batch and then the event were refused');
	is($node->safe_psql('postgres',
		"SELECT count(*), min(payload->>'i') FROM outbox.dead_letters WHERE topic = '$t_batch'"),
		'1|90', 'batch: only event 90 is in dead_letters');
	my @truth = table_ids($node,
		"topic = '$t_batch' AND id NOT IN (SELECT message_id FROM outbox.dead_letters WHERE message_id IS NOT NULL)");
	my @recs = consume($b, $t_batch, idle_ms => 2000, timeout_ms => 60_000);
	my $d = check_delivery(\@recs, \@truth);
	is(scalar(@recs), 99, 'batch: 99 records consumed');
	is(scalar(@{ $d->{missing} }), 0, 'batch: nothing lost');
	is($d->{duplicates}, 0, 'batch: no duplicates');
	is(scalar(check_per_key_order(@recs)), 0, 'batch: in order');
}
is(relay_status($node)->{state}, 'streaming', 'still streaming');

# (d) a slot-loss replay, interrupted.  Rows written while Kafka is not
# configured, then the slot dropped: the new slot's replay publishes them.
{
	ok(wait_relay_quiet($node, 60), 'replay: relay quiet (the watermark covers what was delivered)');
	$node->append_conf('postgresql.conf', "outbox.kafka_brokers = ''\n");
	$node->reload;
	wait_relay_state($node, 'disabled');
	$node->safe_psql('postgres',
		"SELECT outbox.enqueue('$t_replay', 'key-' || (i % 10), jsonb_build_object('i', i)) FROM generate_series(1, 500) i")
	  for 1 .. 120;
	ok(drop_relay_slot($node, 'outbox_5'), 'replay: slot dropped');
	$node->append_conf('postgresql.conf', "outbox.kafka_brokers = '$b->{bootstrap}'\n");
	$node->reload;
	my ($pid, $delivered);
	ok( wait_for(
			sub {
				my $s = relay_status($node);
				($pid, $delivered) = ($s->{pid}, $s->{delivered} // 0);
				return $s->{state} eq 'recovering' && $delivered >= 3000;
			},
			60),
		'replay: the new slot replays rows');
	my $log_pos = log_position($node);
	kill 'KILL', $pid;
	diag("replay: SIGKILL of the relay after $delivered rows");
	ok(wait_for(sub { my $s = eval { relay_status($node) }; $s && $s->{pid} && $s->{pid} != $pid && $s->{state} eq 'streaming' }, 120),
		'replay: a new relay finished the replay and streams');
	ok(wait_relay_idle($node, 120), 'replay: relay caught up');
	my $log = log_since($node, $log_pos);
	ok($log =~ /covers commit LSN [0-9A-F\/]+ and replayed rows up to id \d+ of the replay from/,
		'replay: the progress record fenced the replay');
	my ($skipped) = $log =~ /skipped (\d+) event\(s\) that the last committed progress record covers/;
	ok(($skipped // 0) > 0, 'replay: rows replayed before the kill were skipped (' . ($skipped // 0) . ')');
	verify_topic($node, $b, $t_replay, 'replay', exactly_once => 1);
}

# (d2) the slot lost while the delivery watermark lags what Kafka has.
# A trigger makes the relay's watermark writes fail (a replay's own writes
# pass), so no watermark covers the events written next; Kafka commits
# them; then the slot is dropped.  Only the progress record knows that they
# are in Kafka: the replay must not publish them again.
{
	ok(wait_relay_quiet($node, 60), 'gap: relay quiet');
	$node->safe_psql('postgres', q{
		CREATE FUNCTION public.no_watermark() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.replay_snapshot IS NULL THEN
				RAISE EXCEPTION 'test: no watermark now';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER no_watermark BEFORE INSERT ON outbox.relay_watermark
			FOR EACH ROW EXECUTE FUNCTION public.no_watermark();});
	my $log_pos = log_position($node);
	for my $t (1 .. 20)
	{
		$node->safe_psql('postgres',
			"SELECT outbox.enqueue('$t_gap', 'key-' || (i % 7), jsonb_build_object('t', $t, 'i', i)) FROM generate_series(1, 100) i");
	}
	ok(wait_relay_idle($node, 60), 'gap: relay caught up');
	ok(wait_for(sub { log_since($node, $log_pos) =~ /could not write its delivery watermark: test: no watermark now/ }, 30),
		'gap: the watermark could not be written');
	ok(drop_relay_slot($node, 'outbox_5'), 'gap: slot dropped');
	ok(wait_for(sub { my $s = eval { relay_status($node) }; $s && $s->{state} eq 'streaming' && log_since($node, $log_pos) =~ /published \d+ row\(s\) of outbox.messages again/ }, 120),
		'gap: the new slot replayed and streams');
	ok(wait_relay_idle($node, 60), 'gap: relay caught up again');
	my $log = log_since($node, $log_pos);
	# Rows of earlier scenarios that the last watermark may not cover yet
	# were delivered too: every row the replay looks at is in Kafka.
	my ($in_kafka) = $log =~ /exactly-once: (\d+) of those row\(s\) are in Kafka by the last committed progress record/;
	my ($again) = $log =~ /published (\d+) row\(s\) of outbox.messages again/;
	ok(($in_kafka // 0) >= 2000, 'gap: the 2000 rows were in Kafka by the progress record (' . ($in_kafka // 'none') . ')');
	is($again, 0, 'gap: the replay published no row again');
	$node->safe_psql('postgres',
		'DROP TRIGGER no_watermark ON outbox.relay_watermark; DROP FUNCTION public.no_watermark()');
	verify_topic($node, $b, $t_gap, 'gap', exactly_once => 1);
}

# (e) a progress record from another history, written with Kafka's console
# producer (a plain record is visible to read_committed readers).
SKIP:
{
	skip 'needs the cluster of test/kafka/kafka.sh', 10 unless $b->{kafka};
	my $key = $node->safe_psql('postgres',
		q{SELECT 'outbox:' || system_identifier || ':' || d.oid || ':' || s.slot_name
		           || ':' || outbox._incarnation()
		    FROM pg_control_system(), outbox.relay_status s
		    JOIN pg_database d ON d.datname = s.database});
	my $value = qq({"version":2,"key":"$key","commit_lsn":"FF/0","end_lsn":"FF/30","replay_boundary":null,"replay_last_id":null,"delivered_snapshot":"99999999999:99999999999:","delivered_xids":"99999999999-100000000010"});
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'bash', "$FindBin::RealBin/../../kafka/kafka.sh", 'run-class',
			'org.apache.kafka.tools.ConsoleProducer', '--bootstrap-server', $b->{bootstrap},
			'--topic', 'outbox_progress', '--property', 'parse.key=true',
			'--property', "key.separator=\t" ],
		'<', \"$key\t$value\n", '>', \$out, '2>', \$err)
	  or diag("console producer: $err");
	my $log_pos = log_position($node);
	my $old_pid = relay_pid($node);
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($old_pid)");
	ok( wait_for(
			sub {
				my $s = relay_status($node);
				$s && $s->{pid} && $s->{pid} != $old_pid && $s->{state} eq 'streaming';
			},
			60),
		'history: a new relay streams');
	$node->safe_psql('postgres',
		"SELECT outbox.enqueue('$t_history', 'key-' || (i % 5), jsonb_build_object('i', i)) FROM generate_series(1, 100) i");
	ok(wait_relay_idle($node, 60), 'history: relay caught up');
	ok(log_since($node, $log_pos) =~ /ignored 1 record\(s\) under the progress key "\Q$key\E" in topic "outbox_progress" that this relay did not write/,
		'history: the record the relay did not write was ignored');
	ok(log_since($node, $log_pos) !~ /skipped \d+ event\(s\) that the last committed progress record covers/,
		'history: nothing was skipped by it');
	my $d = verify_topic($node, $b, $t_history, 'history', exactly_once => 1);
	is($d->{distinct}, 100, 'history: the new events were delivered, not skipped');
}

# (f) a copy of the stopped cluster relays the same backlog as the
# original, at the same time.  Hold a backlog in the WAL (Kafka not
# configured), copy the stopped cluster, then let both relay it at once;
# afterwards only the original gets new events.
$node->append_conf('postgresql.conf', "outbox.kafka_brokers = ''\n");
$node->reload;
wait_relay_state($node, 'disabled');
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$t_zombie', 'key-' || (i % 10), jsonb_build_object('i', i)) FROM generate_series(1, 200) i")
  for 1 .. 150;
$node->stop('fast');
$node->backup_fs_cold('zombie');
my $copy = PostgreSQL::Test::Cluster->new('eos_copy');
$copy->init_from_backup($node, 'zombie');
for my $n ($node, $copy)
{
	$n->append_conf('postgresql.conf',
		"outbox.kafka_brokers = '$b->{bootstrap}'\noutbox.transaction_max_events = 2000\n");
}
$node->start;
ok(wait_for(sub { ((relay_status($node) // {})->{delivered} // 0) >= 2000 }, 60),
	'copy: the original delivers the backlog');
$copy->start;
ok(wait_relay_idle($node, 180), 'copy: the original caught up');
ok(wait_relay_idle($copy, 180), 'copy: the copy caught up');
my $w = start_writer($node, $t_zombie, name => 'after', pause => 0.01);
sleep(3);
$w->stop;
ok(wait_relay_idle($node, 120), 'copy: the original delivered the new events');
ok(slurp_file($copy->logfile) =~ /drawing a new incarnation id: this data directory is a copy/,
	'copy: the copy drew a new incarnation');
my $fenced = 0;
for my $n ($node, $copy)
{
	$fenced += count_matches(slurp_file($n->logfile),
		qr/fenced: a newer producer with transactional\.id/);
}
is($fenced, 0, 'copy: neither relay fenced the other (transactional.ids of their own)');
my $d = verify_topic($node, $b, $t_zombie, 'copy');
my $orig_source = $node->safe_psql('postgres', 'SELECT id FROM outbox.installation');
my $copy_source = $copy->safe_psql('postgres', 'SELECT id FROM outbox.installation');
isnt($copy_source, $orig_source, 'copy: the copy re-drew its installation id');
my %per_source;
$per_source{ $_->{headers}{'outbox-source'} // 'none' }{ $_->{headers}{'outbox-id'} }++
  for grep { defined $_->{headers}{'outbox-id'} } @{ $d->{records} };
for my $src ($orig_source, $copy_source)
{
	my $dups = 0;
	$dups += $_ - 1 for values %{ $per_source{$src} // {} };
	is($dups, 0, "copy: records of source $src are each delivered once");
}
is(join(',', sort grep { $_ ne $orig_source && $_ ne $copy_source } keys %per_source), '',
	'copy: every record carries one of the two sources');
$copy->stop;
$node->stop;
done_testing();
