#
# 135_standby_promotion.pl
#    A primary with a streaming standby made by pg_basebackup; writers
#    commit events (table rows, and on every transaction one emit()) while
#    the primary is killed with SIGKILL; the standby is promoted.  The relay
#    on the standby does nothing while it is in recovery (state standby),
#    then streams after promotion.  Every table event committed on the
#    standby reaches Kafka (0 lost).
#
#    On 15 and 16 the standby has no copy of the logical slot: the relay
#    creates one and republishes the rows the watermark does not cover;
#    emitted events that Kafka had not acknowledged before the failover are
#    lost (counted and reported, as docs/relay.md says).  On 17 and later
#    the slot is a failover slot synchronised to the standby
#    (sync_replication_slots) and the primary lists the standby in
#    synchronized_standby_slots: the promoted standby goes on from the
#    synchronised slot, emitted events are not lost either, and no event of
#    a transaction the standby never received reaches Kafka.
#
#    Events are told apart by their payload (writer, sequence, number), not
#    by message id: ids drawn on the old primary after the standby's last
#    copy of the sequence are drawn again after promotion.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $topic = unique_topic('failover');
my $broker = start_broker(topics => ["$topic:4"]);
my $primary = new_relay_node('primary', $broker,
	extra_conf => "wal_keep_size = 512MB\nhot_standby_feedback = on\n");
my $version = $primary->safe_psql('postgres', 'SHOW server_version_num');
my $failover_slots = $version >= 170000;

if ($failover_slots)
{
	$primary->safe_psql('postgres',
		q{SELECT pg_create_physical_replication_slot('standby_1')});
	$primary->append_conf('postgresql.conf',
		"synchronized_standby_slots = 'standby_1'\n");
	$primary->reload;
}

$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
if ($failover_slots)
{
	my $conninfo = 'host=' . $primary->host . ' port=' . $primary->port . ' dbname=postgres';
	$standby->append_conf('postgresql.conf', qq{
primary_slot_name = 'standby_1'
primary_conninfo = '$conninfo application_name=standby'
sync_replication_slots = on
hot_standby_feedback = on
# copied from the primary; the standby has no standby of its own
synchronized_standby_slots = ''
});
}
$standby->start;

my $s = wait_relay_state($standby, 'standby', 60);
ok($s, 'the relay on the standby waits in state standby');
my $pid = $s->{pid};

my @writers = map {
	start_writer($primary, $topic, name => "w$_", key_prefix => "w$_", keys => 5,
		pause => 0.005, emit => 1)
} 1 .. 2;
sleep 4;
if ($failover_slots)
{
	ok(wait_for(sub {
		$standby->safe_psql('postgres',
			q{SELECT count(*) FROM pg_replication_slots
			   WHERE slot_name = 'outbox_5' AND synced AND failover}) eq '1' }, 60),
		'the relay\'s failover slot is synchronised to the standby');
	sleep 2;
}

# The primary dies mid-stream.
$primary->kill9;
my @results = map { $_->stop } @writers;
diag("writer $_: $results[$_ - 1]{batches_ok} batches ok, $results[$_ - 1]{batches_failed} failed")
  for 1 .. 2;
is(relay_status($standby)->{pid}, $pid, 'still the same waiting relay on the standby');
is(relay_status($standby)->{state}, 'standby', 'still in state standby');

my $log_pos = log_position($standby);
$standby->promote;
wait_relay_state($standby, 'streaming', 90);
my $log = log_since($standby, $log_pos);
if ($failover_slots)
{
	unlike($log, qr/creating logical replication slot/,
		'the promoted standby goes on from the synchronised slot');
}
else
{
	like($log, qr/creating logical replication slot "outbox_5"/,
		'the promoted standby creates a new slot');
	like($log, qr/published \d+ row\(s\) of outbox\.messages again after the slot change/,
		'and publishes the rows the watermark does not cover');
}

# Writing goes on on the new primary.
$standby->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'after', jsonb_build_object('after', g)) FROM generate_series(1, 20) g"
);
ok(wait_relay_idle($standby), 'relay on the promoted standby caught up');

# The truth: the events the new primary has.
my %truth;
for my $row (split /\n/, $standby->safe_psql('postgres',
	"SELECT payload::text FROM outbox.messages WHERE topic = '$topic'"))
{
	$truth{ event_name(decode_json($row)) } = 1;
}
my %writer_txn;	# (writer, seq) of every transaction the new primary has
for my $e (keys %truth)
{
	$writer_txn{"$1/$2"} = 1 if $e =~ /^(w\d+)\/(\d+)\//;
}

my @recs = consume($broker, $topic, idle_ms => 2000, timeout_ms => 90_000);
my (%got, %emitted, %phantom);
for my $r (@recs)
{
	next unless defined $r->{value};
	my $p = decode_json($r->{value});
	if ($p->{emitted})
	{
		$emitted{"$p->{w}/$p->{seq}"}++;
		next;
	}
	my $name = event_name($p);
	$got{$name}++;
	$phantom{$name} = 1 unless $truth{$name};
}
my @missing = grep { !$got{$_} } sort keys %truth;
my $dups = 0;
$dups += $got{$_} - 1 for keys %got;
my @emit_missing = grep { !$emitted{$_} } sort keys %writer_txn;
ok(scalar(keys %truth) > 100, scalar(keys %truth) . ' table events on the new primary');
is(scalar(@missing), 0, 'every table event committed on the standby reached Kafka')
  or diag("missing: @missing[0 .. 9]");
diag(sprintf('table events %d, records %d, duplicates %d, events of transactions the standby never received %d; emitted events missing %d of %d',
	scalar(keys %truth), scalar(@recs), $dups, scalar(keys %phantom),
	scalar(@emit_missing), scalar(keys %writer_txn)));
# Per key, the first copy of each event comes in the writer's order (each
# writer commits one transaction after the other, on keys of its own).
my (%first, %last_seq, @order);
for my $r (@recs)
{
	next unless defined $r->{value} && defined $r->{key} && $r->{key} =~ /^w\d+-\d+$/;
	my $p = decode_json($r->{value});
	next if $first{ event_name($p) }++;
	push @order, "key $r->{key}: seq $p->{seq} after $last_seq{$r->{key}}"
	  if defined $last_seq{ $r->{key} } && $p->{seq} < $last_seq{ $r->{key} };
	$last_seq{ $r->{key} } = $p->{seq};
}
is(scalar(@order), 0, 'per-key order of first occurrences')
  or diag(join("\n", @order[0 .. 9]));
if ($failover_slots)
{
	is(scalar(@emit_missing), 0, 'every emitted event of a transaction the standby has reached Kafka');
	is(scalar(keys %phantom), 0,
		'no event of a transaction the standby never received reached Kafka (synchronized_standby_slots)');
}

$standby->stop;
done_testing();

# "writer/seq/e" for writer events, "after/N" for the later ones.
sub event_name
{
	my ($p) = @_;
	return defined $p->{after} ? "after/$p->{after}" : "$p->{w}/$p->{seq}/$p->{e}";
}
