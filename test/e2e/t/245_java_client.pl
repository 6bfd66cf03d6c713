#
# 245_java_client.pl
#    Cross-client check on a real Apache Kafka (issue 7, point 3): the
#    records the relay produces are where, and what, Kafka's own Java
#    client says they should be.
#    - Partitions: every key is also produced by Kafka's Java producer
#      (kafka-console-producer of the kafka-tools/kafka-clients jars that
#      test/kafka resolved, default partitioner) to a second topic with the
#      same partition count; each key must land in the same partition in
#      both topics.  Null keys have no fixed partition in either client
#      (Java: sticky, the relay: random); they must land in a valid one.
#    - Records: Kafka's Java console consumer reads key, value and headers
#      exactly as docs/relay.md documents them: the event's headers in
#      their order, then outbox-id (absent for emit()), outbox-lsn (the
#      commit record's LSN, read back with pg_walinspect), outbox-xid,
#      outbox-source (outbox.installation) and outbox-db.
#    Needs a real cluster started by test/kafka/kafka.sh (suite e2e-kafka);
#    skips on the mock broker.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $k = kafka_cluster();
plan skip_all =>
  'needs a real Kafka started by test/kafka/kafka.sh and its Java clients (run_all.sh suite e2e-kafka)'
  unless $k;

my $partitions = 12;
my $topic = unique_topic('xclient');
my $jtopic = unique_topic('xclient_java');
my $b = start_broker(topics => [ "$topic:$partitions", "$jtopic:$partitions" ]);
my $node = new_relay_node('java_client', $b);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_walinspect');

# Keys: many distinct ones of every length from 0 to 40 bytes (all tails of
# murmur2), UTF-8, punctuation; no tab or newline (the console producer's
# separators).  The source is read as bytes, so these are UTF-8 bytes.
my @keys = ('', ' ', 'a', 'käse', '東京', "emoji-\xf0\x9f\x8e\x89", 'a b:c,d=e',
	'{"json":"key"}', 'null-ish', map({ 'x' x $_ } 2 .. 40),
	map({ "customer-$_" } 0 .. 199), map({ "order/$_/line" } 1 .. 60));
my %seen;
@keys = grep { !$seen{$_}++ } @keys;
my $n_keyed = scalar(@keys);
my $n_null = 24;

# Events in transactions of 25: one per key, payload {"n": i, "s": "..."},
# headers {"trace": "t-i", "tenant": "acme"}; then null-key events, half
# with enqueue(), half with emit().
my $start_lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my $sql = '';
my $i = 0;
for my $key (@keys)
{
	$sql .= "BEGIN;\n" if $i % 25 == 0;
	(my $q = $key) =~ s/'/''/g;
	$sql .= "SELECT outbox.enqueue('$topic', '$q', '{\"n\": $i, \"s\": \"v $i\"}', "
	  . "'{\"trace\": \"t-$i\", \"tenant\": \"acme\"}');\n";
	$sql .= "COMMIT;\n" if $i % 25 == 24;
	$i++;
}
$sql .= "COMMIT;\n" if $i % 25;
$sql .= "BEGIN;\n";
for my $j (0 .. $n_null - 1)
{
	my $fn = $j % 2 ? 'emit' : 'enqueue';
	$sql .= "SELECT outbox.$fn('$topic', NULL, '{\"null_key\": $j}', '{\"kind\": \"$fn\"}');\n";
}
$sql .= "COMMIT;\n";
$node->safe_psql('postgres', $sql);
ok(wait_relay_idle($node), 'relay caught up');

# What the records must be, from the database: per event its id, its
# transaction's commit record (pg_walinspect) and the installation.
my $source = $node->safe_psql('postgres',
	'SELECT installation_id FROM outbox.source');
like($source, qr/^[0-9a-f-]{36}$/, 'installation id');
my $end_lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_flush_lsn()');
$node->safe_psql('postgres', qq{
CREATE TABLE wal AS
SELECT start_lsn, xid, record_type, resource_manager
  FROM pg_get_wal_records_info('$start_lsn', '$end_lsn')
 WHERE (resource_manager = 'Transaction' AND record_type = 'COMMIT')
    OR resource_manager = 'LogicalMessage'});

# keyed events: key -> [id, value, user headers in stored order, lsn, xid]
my %want;
for my $row (split /\n/, $node->safe_psql('postgres', qq{
SELECT m.id, encode(convert_to(m.key, 'UTF8'), 'hex'), m.payload ->> 'n',
       (SELECT string_agg(h.key || '=' || h.value, ',' ORDER BY h.ord)
          FROM jsonb_each_text(m.headers) WITH ORDINALITY h(key, value, ord)),
       w.start_lsn, w.xid
  FROM outbox.messages m
  JOIN wal w ON w.record_type = 'COMMIT' AND w.xid = m.xmin
 WHERE m.topic = '$topic' AND m.key IS NOT NULL}))
{
	my ($id, $hexkey, $n, $hdrs, $lsn, $xid) = split /\|/, $row;
	$want{ pack('H*', $hexkey) } = {
		id => $id, value => qq({"n":$n,"s":"v $n"}),
		headers => [ map { [ split /=/, $_, 2 ] } split /,/, $hdrs ],
		lsn => $lsn, xid => $xid,
	};
}
is(scalar(keys %want), $n_keyed, "$n_keyed keyed events in the table, each with its commit record");

# null-key events of the one last transaction: enqueue() rows have ids,
# emit() ones a logical message record with the transaction's xid
my ($null_lsn, $null_xid) = split /\|/, $node->safe_psql('postgres', qq{
SELECT w.start_lsn, w.xid FROM outbox.messages m
  JOIN wal w ON w.record_type = 'COMMIT' AND w.xid = m.xmin
 WHERE m.topic = '$topic' AND m.key IS NULL LIMIT 1});
my %null_ids = map { my ($n, $id) = split /\|/; ($n => $id) }
  split /\n/, $node->safe_psql('postgres', qq{
SELECT payload ->> 'null_key', id FROM outbox.messages
 WHERE topic = '$topic' AND key IS NULL});
is(scalar(keys %null_ids), $n_null / 2, 'null-key enqueue() rows');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM wal WHERE resource_manager = 'LogicalMessage' AND xid = '$null_xid'"),
	$n_null / 2, 'emit() messages are in the same transaction');

# Kafka's Java tools, from the jars test/kafka resolved (kafka-clients 4.1.1).
my $dir = PostgreSQL::Test::Utils::tempdir();
sub java_tool
{
	my ($stdin, $main, @args) = @_;
	my ($out, $err) = ('', '');
	my $t0 = time();
	IPC::Run::run([ 'bash', "$FindBin::RealBin/../../kafka/kafka.sh", 'run-class',
		$main, @args ], '<', $stdin, '>', \$out, '2>', \$err)
	  or die "$main failed: $err";
	diag(sprintf('%s took %.1f s', $main =~ s/.*\.//r, time() - $t0));
	return $out;
}

# The same keys through the Java producer's default partitioner.
open my $fh, '>', "$dir/keys.txt" or die $!;
print $fh "$_\tjava\n" for @keys;
close $fh;
java_tool("$dir/keys.txt", 'org.apache.kafka.tools.ConsoleProducer',
	'--bootstrap-server', $b->{bootstrap}, '--topic', $jtopic,
	'--property', 'parse.key=true', '--property', "key.separator=\t",
	'--producer-property', 'acks=all');

# Console consumer: "Partition:P<TAB>Offset:O<TAB>h1:v1,h2:v2<TAB>key<TAB>value"
sub console_consume
{
	my ($t, $count) = @_;
	my $out = java_tool(\undef, 'org.apache.kafka.tools.consumer.ConsoleConsumer',
		'--bootstrap-server', $b->{bootstrap}, '--topic', $t,
		'--from-beginning', '--max-messages', $count, '--timeout-ms', 30000,
		'--property', 'print.partition=true', '--property', 'print.offset=true',
		'--property', 'print.headers=true', '--property', 'print.key=true',
		'--property', "key.separator=\t");
	my @recs;
	for my $line (split /\n/, $out)
	{
		my ($p, $o, $h, $key, $value) = split /\t/, $line, -1;
		($p) = $p =~ /^Partition:(\d+)$/ or die "unexpected line: $line";
		push @recs, { partition => $p, headers => $h, key => $key, value => $value };
	}
	return @recs;
}

my @java = console_consume($jtopic, $n_keyed);
is(scalar(@java), $n_keyed, 'Java producer: every key arrived');
my %java_part = map { $_->{key} => $_->{partition} } @java;

my @recs = console_consume($topic, $n_keyed + $n_null);
diag("a record as the console consumer prints it: partition $recs[0]{partition}, "
	  . "headers '$recs[0]{headers}', key '$recs[0]{key}', value '$recs[0]{value}'");
is(scalar(@recs), $n_keyed + $n_null, 'Java console consumer read every relayed record');

my ($same, $other, $bad_rec, $perl_same, %parts) = (0, 0, 0, 0);
my (@null_enq, @null_emit);
for my $r (@recs)
{
	if ($r->{key} eq 'null' && $r->{value} =~ /^\{"null_key":(\d+)\}$/)
	{
		my $j = $1;
		my $fn = $j % 2 ? 'emit' : 'enqueue';
		my $hdr = "kind:$fn"
		  . ($fn eq 'enqueue' ? ",outbox-id:$null_ids{$j}" : '')
		  . ",outbox-lsn:$null_lsn,outbox-xid:$null_xid,outbox-source:$source,outbox-db:postgres";
		if ($r->{headers} ne $hdr)
		{
			diag("null-key event $j: headers '$r->{headers}', want '$hdr'");
			$bad_rec++;
		}
		$bad_rec++, diag("null-key event $j in partition $r->{partition}")
		  unless $r->{partition} >= 0 && $r->{partition} < $partitions;
		push @{ $fn eq 'emit' ? \@null_emit : \@null_enq }, $r->{partition};
		next;
	}
	my $w = $want{ $r->{key} };
	if (!$w)
	{
		diag("unexpected record: key '$r->{key}' value '$r->{value}'");
		$bad_rec++;
		next;
	}
	my $hdr = join(',', map { "$_->[0]:$_->[1]" } @{ $w->{headers} },
		[ 'outbox-id', $w->{id} ], [ 'outbox-lsn', $w->{lsn} ],
		[ 'outbox-xid', $w->{xid} ], [ 'outbox-source', $source ],
		[ 'outbox-db', 'postgres' ]);
	if ($r->{value} ne $w->{value} || $r->{headers} ne $hdr)
	{
		diag("key '$r->{key}': value '$r->{value}' headers '$r->{headers}', "
			  . "want '$w->{value}' '$hdr'");
		$bad_rec++;
	}
	$parts{ $r->{partition} }++;
	if (defined $java_part{ $r->{key} } && $java_part{ $r->{key} } == $r->{partition})
	{
		$same++;
	}
	else
	{
		diag("key '$r->{key}': relay partition $r->{partition}, Java "
			  . ($java_part{ $r->{key} } // 'none'));
		$other++;
	}
	$perl_same++ if java_partition($r->{key}, $partitions) == $r->{partition};
}
is($bad_rec, 0, 'key, value and headers of every record exactly as documented');
is($same, $n_keyed, "all $n_keyed keys in the partition the Java producer chose");
is($other, 0, 'no key in another partition');
is($perl_same, $n_keyed, 'and where the tests\' murmur2 model puts them');
is(scalar(keys %parts), $partitions, "keys spread over all $partitions partitions");
is(scalar(@null_enq) + scalar(@null_emit), $n_null, 'every null-key event read with key null');
diag('null-key partitions: enqueue() ' . join(',', @null_enq) . '; emit() ' . join(',', @null_emit));

$node->stop;
done_testing();
