#
# 170_eos_history.pl
#    Exactly-once progress records are trusted only when they are provably
#    the relay's own and of this history (issue 23, points 1 and 2):
#      (a) forged: records under the relay's progress key produced straight
#          to the progress topic (a version 1 value as the relay used to
#          write, and a version 2 value with a made-up code) that claim a
#          commit LSN past three undelivered events: ignored with a
#          WARNING, the events are delivered;
#      (b) copy: the stopped cluster copied (cp -a) to a second cluster;
#          the original goes on and commits progress; the copy, with Kafka
#          unreachable, writes three events and moves its WAL past the
#          original's progress, then reaches Kafka: its relay has drawn a
#          new incarnation, reads no progress of the original's, and
#          delivers its three events;
#      (c) point-in-time restore: a base backup restored to a restore point
#          before the last progress record (a new timeline); with Kafka
#          unreachable it writes three events past that record's LSN, then
#          reaches Kafka: they are delivered;
#      (d) an asynchronous standby promoted after the primary was lost: the
#          primary had delivered transactions the standby never received,
#          and its progress record names their ids as delivered; the
#          promoted standby writes three events (reusing those ids) before
#          its relay creates a new slot and replays the rows no watermark
#          covers: the three are replayed, not taken for delivered.
#    Each: 0 lost in a read_committed consumer.  Runs on the mock broker:
#    no Kafka transaction is aborted here, so what a read_committed
#    consumer sees is what was committed.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Cwd qw(abs_path);
use Time::HiRes qw(sleep);

my $t_forged = unique_topic('hist_forged');
my $t_orig = unique_topic('hist_orig');
my $t_copy = unique_topic('hist_copy');
my $t_pitr = unique_topic('hist_pitr');
my $t_sb = unique_topic('hist_standby');
# On the mock the progress topic is made here with one partition, as the
# relay makes it (the mock would otherwise auto-create it with four on the
# first metadata request): forged records land where the relay reads.  A
# real Kafka (auto creation off) gets it from the relay, or has it already.
my $b = start_broker(topics => [ "$t_forged:1", "$t_orig:1", "$t_copy:1", "$t_pitr:1", "$t_sb:1",
	real_kafka() ? () : 'outbox_progress:1' ]);
my $bootstrap = $b->{bootstrap};

# The relay's progress key, from the log line it writes on starting.
sub progress_key
{
	my ($node, $since) = @_;
	my $key;
	wait_for(
		sub {
			($key) = log_since($node, $since) =~
			  /exactly-once: (?:the last committed progress record|no progress record) of "([^"]+)"/;
			return defined $key;
		},
		60);
	return $key;
}

sub kafka_off
{
	my ($node) = @_;
	$node->append_conf('postgresql.conf', "outbox.kafka_brokers = ''\n");
	$node->reload;
	wait_relay_state($node, 'disabled');
}

sub kafka_on
{
	my ($node) = @_;
	$node->append_conf('postgresql.conf', "outbox.kafka_brokers = '$bootstrap'\n");
	$node->reload;
}

# Payloads ("p") of the records of a topic.
sub payloads
{
	my ($topic) = @_;
	return map { ($_->{value} =~ /"p":\s*"([^"]+)"/)[0] // '?' } consume($b, $topic);
}

# WAL archive for (c), by absolute path (the server runs in its data
# directory).
my $archive = abs_path(PostgreSQL::Test::Utils::tempdir());
my $node = PostgreSQL::Test::Cluster->new('hist');
$node->init(allows_streaming => 'logical');
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'outbox'
output_plugin_libraries = 'pgoutput, test_decoding, outbox'
max_replication_slots = 10
max_wal_senders = 10
outbox.kafka_brokers = '$bootstrap'
outbox.kafka_properties = '@{[ $ENV{OUTBOX_TEST_KAFKA_PROPERTIES} // '' ]}'
outbox.databases = 'postgres'
outbox.retry_interval = '200ms'
outbox.delivery = exactly_once
log_min_messages = 'info'
archive_mode = on
archive_command = 'cp "%p" "$archive/%f"'
});
my $pos = 0;
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION outbox');
wait_relay_state($node, 'streaming');

$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$t_forged', 'k', jsonb_build_object('p', 'before-' || i)) FROM generate_series(1, 10) i");
ok(wait_relay_idle($node, 60), 'progress: first events delivered');
my $key = progress_key($node, $pos);
like($key // '', qr/^outbox:\d+:\d+:outbox_\d+:[0-9a-f]{32}$/,
	'the progress key names system, database, slot and incarnation');
is(substr($key, rindex($key, ':') + 1),
	$node->safe_psql('postgres', 'SELECT outbox._incarnation()'),
	'... the incarnation of pg_outbox/incarnation');

# (a) forged records straight to the progress topic
kafka_off($node);
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$t_forged', 'k', jsonb_build_object('p', 'forged-' || i)) FROM generate_series(1, 3) i");
my $forged_lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$node->safe_psql('postgres', 'CREATE TABLE filler AS SELECT i FROM generate_series(1, 1000) i');
$node->safe_psql('postgres', 'SELECT pg_switch_wal()');
my $v2 = qq({"version":2,"key":"$key","commit_lsn":"$forged_lsn","end_lsn":null,"replay_boundary":null,"replay_last_id":null,"delivered_snapshot":null,"delivered_xids":null});
my $v1 = qq({"version":1,"key":"$key","commit_lsn":"$forged_lsn","end_lsn":null,"replay_boundary":null,"replay_last_id":null,"zzzzzzzzzzzzzzzz":{"end_lsn":null}});
produce_raw($b, 'outbox_progress', ["$key\t$v2"],
	headers => [ 'outbox-progress-mac=' . ('ab' x 32) ]);
produce_raw($b, 'outbox_progress', ["$key\t$v1"]);
$pos = log_position($node);
kafka_on($node);
ok(wait_relay_idle($node, 60), 'forged: relay caught up');
my $log = log_since($node, $pos);
like($log, qr/ignored 2 record\(s\) under the progress key "\Q$key\E" in topic "outbox_progress" that this relay did not write/,
	'forged: both records were ignored with a WARNING');
unlike($log, qr/skipped \d+ event\(s\) that the last committed progress record covers/,
	'forged: nothing was skipped');
my %got = map { $_ => 1 } payloads($t_forged);
is(scalar(grep { $got{"forged-$_"} } 1 .. 3), 3, 'forged: the 3 events reached Kafka');
verify_topic($node, $b, $t_forged, 'forged', exactly_once => 1);

# (b) a copy of the stopped cluster
$node->stop('fast');
$node->backup_fs_cold('copy');
my $copy = PostgreSQL::Test::Cluster->new('hist_copy');
$copy->init_from_backup($node, 'copy');
$copy->append_conf('postgresql.conf', "outbox.kafka_brokers = ''\narchive_mode = off\n");
$node->start;
wait_relay_state($node, 'streaming');
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$t_orig', 'k-' || (i % 7), jsonb_build_object('p', 'orig-' || i)) FROM generate_series(1, 300) i");
ok(wait_relay_idle($node, 60), 'copy: the original delivered and committed progress');
my $orig_source = $node->safe_psql('postgres', 'SELECT id FROM outbox.installation');

$copy->start;
wait_relay_state($copy, 'disabled');
$copy->safe_psql('postgres',
	"SELECT outbox.enqueue('$t_copy', 'k', jsonb_build_object('p', 'copy-' || i)) FROM generate_series(1, 3) i");
$copy->safe_psql('postgres', 'CREATE TABLE filler2 AS SELECT i FROM generate_series(1, 1000) i');
$copy->safe_psql('postgres', 'SELECT pg_switch_wal()');
$copy->safe_psql('postgres', 'CREATE TABLE filler3 AS SELECT i FROM generate_series(1, 1000) i');
$copy->safe_psql('postgres', 'SELECT pg_switch_wal()');
$pos = log_position($copy);
kafka_on($copy);
my $copy_key = progress_key($copy, $pos);
ok(wait_relay_idle($copy, 60), 'copy: the copy caught up');
$log = log_since($copy, 0);
like($log, qr/drawing a new incarnation id: this data directory is a copy/,
	'copy: the copy drew a new incarnation');
isnt($copy_key, $key, 'copy: its progress key is not the original\'s');
unlike(log_since($copy, $pos), qr/skipped \d+ event\(s\) that the last committed progress record covers/,
	'copy: nothing was skipped by the original\'s progress');
my @copy_recs = consume($b, $t_copy);
my %cp = map { (($_->{value} =~ /"p":\s*"([^"]+)"/)[0] // '?') => 1 } @copy_recs;
is(scalar(grep { $cp{"copy-$_"} } 1 .. 3), 3, 'copy: the copy\'s 3 events reached Kafka');
verify_topic($copy, $b, $t_copy, 'copy', exactly_once => 1);
verify_topic($node, $b, $t_orig, 'copy: original', exactly_once => 1);
my $copy_source = $copy->safe_psql('postgres', 'SELECT id FROM outbox.installation');
isnt($copy_source, $orig_source, 'copy: the copy re-drew the installation id');
is(scalar(grep { ($_->{headers}{'outbox-source'} // '') eq $copy_source } @copy_recs),
	scalar(@copy_recs), 'copy: its records carry the new id as outbox-source');
$copy->stop;

# (c) point-in-time restore to before the last progress record
$node->backup('pitr');
$node->safe_psql('postgres', "SELECT pg_create_restore_point('before_progress')");
$node->safe_psql('postgres', 'SELECT pg_switch_wal()');
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$t_orig', 'k-' || (i % 7), jsonb_build_object('p', 'late-' || i)) FROM generate_series(1, 300) i");
ok(wait_relay_idle($node, 60), 'pitr: the original committed progress past the restore point');
my $archived = $node->safe_psql('postgres', 'SELECT pg_walfile_name(pg_current_wal_lsn())');
$node->safe_psql('postgres', 'SELECT pg_switch_wal()');
ok( wait_for(
		sub {
			$node->safe_psql('postgres',
				"SELECT coalesce(last_archived_wal, '') >= '$archived' FROM pg_stat_archiver") eq 't';
		},
		60),
	'pitr: WAL archived');
$node->stop('fast');

my $pitr = PostgreSQL::Test::Cluster->new('hist_pitr');
$pitr->init_from_backup($node, 'pitr');
$pitr->set_recovery_mode;
$pitr->append_conf('postgresql.conf', qq{
restore_command = 'cp "$archive/%f" "%p"'
outbox.kafka_brokers = ''
archive_mode = off
recovery_target_name = 'before_progress'
recovery_target_action = 'promote'
});
$pitr->start;
ok( wait_for(
		sub { $pitr->safe_psql('postgres', 'SELECT NOT pg_is_in_recovery()') eq 't' }, 60),
	'pitr: restored and promoted');
wait_relay_state($pitr, 'disabled');
$pitr->safe_psql('postgres',
	"SELECT outbox.enqueue('$t_pitr', 'k', jsonb_build_object('p', 'pitr-' || i)) FROM generate_series(1, 3) i");
for my $i (1 .. 3)
{
	$pitr->safe_psql('postgres', "CREATE TABLE pfill$i AS SELECT i FROM generate_series(1, 1000) i");
	$pitr->safe_psql('postgres', 'SELECT pg_switch_wal()');
}
$pos = log_position($pitr);
kafka_on($pitr);
ok(wait_relay_idle($pitr, 60), 'pitr: the restored cluster caught up');
like(log_since($pitr, 0), qr/drawing a new incarnation id: this server runs on timeline 2/,
	'pitr: a new incarnation for the new timeline');
unlike(log_since($pitr, $pos), qr/skipped \d+ event\(s\) that the last committed progress record covers/,
	'pitr: nothing was skipped by the old timeline\'s progress');
my %pp = map { $_ => 1 } payloads($t_pitr);
is(scalar(grep { $pp{"pitr-$_"} } 1 .. 3), 3, 'pitr: the 3 events reached Kafka');
verify_topic($pitr, $b, $t_pitr, 'pitr', exactly_once => 1);
$pitr->stop;

# (d) a promoted asynchronous standby that missed the primary's last
# delivered transactions
$node->start;
wait_relay_state($node, 'streaming');
$node->backup('sb');
my $sb = PostgreSQL::Test::Cluster->new('hist_sb');
$sb->init_from_backup($node, 'sb', has_streaming => 1);
$sb->append_conf('postgresql.conf', "archive_mode = off\n");
$sb->start;
$node->wait_for_catchup($sb);
$sb->stop('fast');
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$t_orig', 'k', jsonb_build_object('p', 'lost-' || i)) FROM generate_series(1, 50) i")
  for 1 .. 20;
ok(wait_relay_idle($node, 60), 'standby: the primary delivered what the standby never got');
# a few more Kafka transactions, so that the last progress record's
# delivered set (a snapshot of the relay's, taken while events flow) shows
# those transactions
for my $i (1 .. 5)
{
	sleep(0.3);
	$node->safe_psql('postgres',
		"SELECT outbox.enqueue('$t_orig', 'k', jsonb_build_object('p', 'tail-$i'))");
	wait_relay_idle($node, 30);
}
$node->stop('immediate');
# Kafka not configured on the promoted standby: its relay holds the slot it
# creates; that slot is lost below, so that the events precede the next one
$sb->append_conf('postgresql.conf', "outbox.kafka_brokers = ''\n");
$sb->start;
$sb->promote;
ok( wait_for(
		sub { $sb->safe_psql('postgres', 'SELECT NOT pg_is_in_recovery()') eq 't' }, 60),
	'standby: promoted');
$sb->safe_psql('postgres',
	"SELECT outbox.enqueue('$t_sb', 'k', jsonb_build_object('p', 'sb-' || i)) FROM generate_series(1, 3) i");
# past the transaction ids and the WAL of the old primary, so that its
# progress record is not told apart by ids or LSNs from the future
$sb->safe_psql('postgres', q{
CREATE TABLE burn (i int);
DO $$ BEGIN FOR i IN 1 .. 200 LOOP BEGIN INSERT INTO burn VALUES (i); EXCEPTION WHEN others THEN NULL; END; END LOOP; END $$;
});
for my $i (1 .. 3)
{
	$sb->safe_psql('postgres', "CREATE TABLE sfill$i AS SELECT i FROM generate_series(1, 1000) i");
	$sb->safe_psql('postgres', 'SELECT pg_switch_wal()');
}
my $sb_slot = $sb->safe_psql('postgres', 'SELECT slot_name FROM outbox.relay_status');
ok(drop_relay_slot($sb, $sb_slot), 'standby: its slot lost');
$pos = log_position($sb);
kafka_on($sb);
wait_relay_state($sb, 'streaming', 90);
ok(wait_relay_idle($sb, 90), 'standby: the new primary caught up');
like(log_since($sb, 0), qr/drawing a new incarnation id: this server runs on timeline 2/,
	'standby: a new incarnation for the new timeline');
unlike(log_since($sb, $pos), qr/are in Kafka by the last committed progress record and are not published again/,
	'standby: no replayed row was taken for delivered by the old primary\'s progress');
my %sp = map { $_ => 1 } payloads($t_sb);
is(scalar(grep { $sp{"sb-$_"} } 1 .. 3), 3, 'standby: the 3 events reached Kafka');
verify_topic($sb, $b, $t_sb, 'standby');
$sb->stop;

done_testing();
