#
# 115_adopt_vs_debezium.pl
#    The records outbox sends for an adopted table, compared record by
#    record with the ones Debezium's Outbox Event Router makes from the
#    same rows (Debezium 3.6.1.Final, embedded, from the Maven artifacts of
#    bench/peers/debezium; real Kafka and Java only, so the e2e-kafka
#    suite).  Debezium's documented table (uuid id) with insert-and-delete
#    and insert-only writers, two aggregate types on two topics, a custom
#    route.topic.replacement, header placements, a rolled-back transaction
#    and savepoint, an update and a delete; a bigint-id table with a regex
#    route, a null placed column and table.field.event.timestamp.  Three
#    Debezium connectors read them in one JVM, each from its own slot and
#    publication made before the rows: "string" (StringConverter for key and
#    value, SimpleHeaderConverter), "json" (JsonConverter without schemas,
#    table.expand.json.payload=true) and "big" (the bigint table).
#    Topic, key, value, per-key order, partition and headers must be equal;
#    every difference that remains is one of docs/adopt.md's list and is
#    asserted exactly.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(time);

plan skip_all => 'needs a real Kafka and Java (suite e2e-kafka)'
  unless real_kafka();
my $libs = $ENV{OUTBOX_TEST_DEBEZIUM_LIBS};
plan skip_all =>
  'Debezium not resolved: set OUTBOX_TEST_DEBEZIUM_LIBS to the output of bench/peers/debezium/debezium.sh fetch'
  unless $libs;
BAIL_OUT("OUTBOX_TEST_DEBEZIUM_LIBS=$libs holds no complete build")
  unless -f "$libs/.complete";

my $t_start = time();
my $ROOT = "$FindBin::RealBin/../../..";
# Everything is compared as bytes: consume() and psql give bytes, so the
# JSON texts are decoded without ->utf8.
my $json = JSON::PP->new->canonical->allow_nonref;

# ---------------------------------------------------------------------
# Topics, node, tables, adoption, Debezium's slots
# ---------------------------------------------------------------------

my $p = unique_topic('dbz');
my %parts = (
	"$p.Order.events" => 3,
	"$p.Customer.events" => 1,
	"$p.big.Invoice.1" => 2,
	"$p.big.Invoice.2" => 1,
	"$p.plain" => 1);
my $b = start_broker();
my ($out, $err) = ('', '');
IPC::Run::run([ "$ROOT/test/broker/kafka_admin", '-b', $b->{bootstrap},
	map { "$_:$parts{$_}" } sort keys %parts ], '>', \$out, '2>', \$err)
  or die "kafka_admin: $err";
ok(wait_for(sub { _leaders() == scalar(keys %parts) }, 30), 'topics have leaders');

sub _leaders
{
	my $n = 0;
	for my $t (keys %parts)
	{
		my ($o, $e) = ('', '');
		IPC::Run::run([ 'kcat', '-L', '-b', $b->{bootstrap}, '-t', $t, '-J' ],
			'>', \$o, '2>', \$e);
		my $j = eval { decode_json($o) } or next;
		my ($tt) = grep { $_->{topic} eq $t && !$_->{error} } @{ $j->{topics} };
		$n++ if $tt && @{ $tt->{partitions} } == $parts{$t}
		  && !grep { ($_->{leader} // -1) < 0 } @{ $tt->{partitions} };
	}
	return $n;
}

# Debezium connects over TCP.
my $node = new_relay_node('adopt_dbz', $b,
	extra_conf => "listen_addresses = '127.0.0.1'\n");
$node->append_conf('pg_hba.conf',
	"host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n");
$node->reload;

my %opt_uuid = (
	'route.topic.replacement' => "$p.\${routedByValue}.events",
	'table.fields.additional.placement' => 'type:header:eventType,aggregateid:header:aggId');
my %opt_big = (
	'route.topic.regex' => '(?<kind>[^-]+)-v(?<ver>[0-9]+)',
	'route.topic.replacement' => "$p.big.\${kind}.\${ver}",
	'table.fields.additional.placement' => 'type:header',
	'table.field.event.timestamp' => 'created_at');
my $opt_uuid = encode_json(\%opt_uuid);
my $opt_big = encode_json(\%opt_big);

$node->safe_psql('postgres', qq{
CREATE TABLE outboxevent (
    id            uuid NOT NULL PRIMARY KEY,
    aggregatetype varchar(255) NOT NULL,
    aggregateid   varchar(255) NOT NULL,
    type          varchar(255) NOT NULL,
    payload       jsonb
);
CREATE TABLE outbox_big (
    id            bigint PRIMARY KEY,
    aggregatetype text NOT NULL,
    aggregateid   text NOT NULL,
    type          text,
    payload       jsonb,
    created_at    timestamp NOT NULL
);
SELECT outbox.adopt('outboxevent', '$opt_uuid');
SELECT outbox.adopt('outbox_big', '$opt_big');
CREATE PUBLICATION dbz_string FOR TABLE outboxevent;
CREATE PUBLICATION dbz_json FOR TABLE outboxevent;
CREATE PUBLICATION dbz_big FOR TABLE outbox_big;
SELECT pg_create_logical_replication_slot(s, 'pgoutput')
  FROM unnest(ARRAY['dbz_string', 'dbz_json', 'dbz_big']) s;
});

# ---------------------------------------------------------------------
# The writers
# ---------------------------------------------------------------------

$node->safe_psql('postgres', qq{
-- insert-and-delete: the table stays empty
BEGIN;
INSERT INTO outboxevent VALUES
    ('4d47e190-0402-4048-bc2c-89dd54343cdc', 'Order', '1', 'OrderCreated', '{"id": 1, "total": 39.98, "lines": [{"sku": "A-1", "qty": 2}]}'),
    ('4d47e190-0402-4048-bc2c-89dd54343cdd', 'Order', '2', 'OrderCreated', '{"id": 2, "total": 5}'),
    ('4d47e190-0402-4048-bc2c-89dd54343cde', 'Customer', '7', 'CustomerCreated', '{"name": "Zoë \\"the\\" first", "tags": ["a", "b"], "vip": true, "score": 1.50, "note": null, "empty": {}, "none": []}');
DELETE FROM outboxevent;
COMMIT;
-- insert-only
INSERT INTO outboxevent VALUES
    ('b3a07c7e-1a53-4c1a-9c3e-0b3cb0d4b7a1', 'Customer', '8', 'CustomerScored', '42');
-- rolled back
BEGIN;
INSERT INTO outboxevent VALUES ('c0000000-0000-0000-0000-000000000001', 'Order', '3', 'OrderCreated', '{"id": 3}');
ROLLBACK;
-- a savepoint rolled back, a null payload
BEGIN;
INSERT INTO outboxevent VALUES ('c0000000-0000-0000-0000-000000000002', 'Order', '1', 'OrderPaid', '{"id": 1, "paid": 39.98}');
SAVEPOINT s;
INSERT INTO outboxevent VALUES ('c0000000-0000-0000-0000-000000000003', 'Order', '4', 'OrderCreated', '{"id": 4}');
ROLLBACK TO s;
INSERT INTO outboxevent VALUES ('c0000000-0000-0000-0000-000000000004', 'Order', '2', 'OrderCancelled', NULL);
COMMIT;
-- an update and a delete: no event on either side
UPDATE outboxevent SET type = 'Changed' WHERE aggregateid = '8';
DELETE FROM outboxevent WHERE aggregateid = '8';
-- many events over four keys in one transaction, deleted at once
BEGIN;
INSERT INTO outboxevent
    SELECT gen_random_uuid(), 'Order', (g % 4 + 1)::text, 'OrderLine',
           jsonb_build_object('n', g, 'price', g * 1.25)
      FROM generate_series(1, 20) g;
DELETE FROM outboxevent;
COMMIT;

-- the bigint table: insert-only
INSERT INTO outbox_big VALUES
    (1, 'Invoice-v1', 'inv-1', 'InvoiceIssued', '{"amount": 10}', '2020-01-02 03:04:05.678'),
    (2, 'Invoice-v2', 'inv-1', NULL, '[1, 2, 3]', '2020-01-02 03:04:06'),
    (3, '$p.plain', 'p', 'Plain', '"just a string"', '2021-06-30 23:59:59.999');
BEGIN;
INSERT INTO outbox_big VALUES (4, 'Invoice-v1', 'inv-2', 'InvoiceIssued', '{}', now());
ROLLBACK;
});
ok(wait_relay_idle($node, 60), 'outbox relay caught up');
my %expect = (string => 26, json => 26, big => 3);

# ---------------------------------------------------------------------
# Debezium: three connectors in one JVM
# ---------------------------------------------------------------------

my $dir = PostgreSQL::Test::Utils::tempdir();
my $port = $node->port;
my $dbuser = getpwuid($<);
sub connector_config
{
	my ($name, $table, $opts, %conv) = @_;
	my $c = <<"EOF";
name=$name
connector.class=io.debezium.connector.postgresql.PostgresConnector
offset.storage=org.apache.kafka.connect.storage.FileOffsetBackingStore
offset.storage.file.filename=$dir/$name.offsets
offset.flush.interval.ms=1000
database.hostname=127.0.0.1
database.port=$port
database.user=$dbuser
database.dbname=postgres
topic.prefix=$name
plugin.name=pgoutput
slot.name=dbz_$name
publication.name=dbz_$name
publication.autocreate.mode=disabled
table.include.list=public.$table
snapshot.mode=no_data
transforms=outbox
transforms.outbox.type=io.debezium.transforms.outbox.EventRouter
key.converter.class=$conv{key}
value.converter.class=$conv{value}
header.converter.class=org.apache.kafka.connect.storage.SimpleHeaderConverter
peer.sink=file
peer.file=$dir/$name.jsonl
peer.expect=$expect{$name}
peer.timeout.s=80
EOF
	$c .= "key.converter.schemas.enable=false\nvalue.converter.schemas.enable=false\n"
	  if $conv{value} =~ /Json/;
	$c .= "transforms.outbox.$_=$opts->{$_}\n" for sort keys %$opts;
	my $f = "$dir/$name.properties";
	open my $fh, '>', $f or die "$f: $!";
	print $fh $c;
	close $fh;
	return $f;
}
my $string = 'org.apache.kafka.connect.storage.StringConverter';
my $jsonc = 'org.apache.kafka.connect.json.JsonConverter';
my @configs = (
	connector_config('string', 'outboxevent', \%opt_uuid,
		key => $string, value => $string),
	connector_config('json', 'outboxevent',
		{ %opt_uuid, 'table.expand.json.payload' => 'true' },
		key => $jsonc, value => $jsonc),
	connector_config('big', 'outbox_big', \%opt_big,
		key => $string, value => $string));

my $t_jvm = time();
my ($jout, $jerr) = ('', '');
my $ok = IPC::Run::run(
	[ 'bash', "$ROOT/bench/peers/debezium/debezium.sh", 'run', @configs ],
	'<', \undef, '>', \$jout, '2>', \$jerr,
	init => sub { $ENV{OUTBOX_DEBEZIUM_LIBS} = $libs;
		$ENV{OUTBOX_DEBEZIUM_HEAP} = '-Xms32m -Xmx256m' });
ok($ok, 'Debezium delivered every expected record')
  or diag("stdout:\n$jout\nstderr (warnings):\n"
	  . join("\n", grep { !/ INFO / } split /\n/, $jerr));
diag(sprintf('Debezium JVM ran %.1f s', time() - $t_jvm));

sub read_jsonl
{
	my ($f) = @_;
	return () unless -f $f;
	return map { $json->decode($_) } grep { /\S/ } split /\n/, slurp_file($f);
}
my %dbz = map { $_ => [ read_jsonl("$dir/$_.jsonl") ] } qw(string json big);
is(scalar(@{ $dbz{$_} }), $expect{$_}, "Debezium $_: $expect{$_} records")
  for qw(string json big);

# ---------------------------------------------------------------------
# outbox's records, with headers in their order and the record timestamps
# ---------------------------------------------------------------------

# A flat JSON object of strings and nulls as [[name, value], ...] in order.
sub ordered_headers
{
	my ($text) = @_;
	my @h;
	while ($text =~ /("(?:[^"\\]|\\.)*"):(null|"(?:[^"\\]|\\.)*")/g)
	{
		my ($k, $v) = ($1, $2);
		push @h, [ $json->decode($k),
			$v eq 'null' ? undef : $json->decode($v) ];
	}
	return \@h;
}

my %ob;		# topic -> [records in per-partition order]
for my $t (sort keys %parts)
{
	my %ts;
	my ($o, $e) = ('', '');
	IPC::Run::run([ 'kcat', '-C', '-b', $b->{bootstrap}, '-t', $t, '-o',
		'beginning', '-e', '-q', '-f', '%p %o %T\n' ], '>', \$o, '2>', \$e);
	$ts{"$1/$2"} = $3 while $o =~ /^(\d+) (\d+) (\d+)$/mg;
	for my $r (consume($b, $t, idle_ms => 1500, timeout_ms => 30_000))
	{
		$r->{headers} = ordered_headers($r->{headers_raw});
		$r->{timestamp} = $ts{"$r->{partition}/$r->{offset}"};
		push @{ $ob{$t} }, $r;
	}
}
my @outbox = map { @{ $ob{$_} // [] } } sort keys %parts;
is(scalar(@outbox), 29, 'outbox: 29 records on the five topics');

sub hval
{
	my ($h, $name) = @_;
	my ($x) = grep { $_->[0] eq $name } @$h;
	return $x ? $x->[1] : undef;
}
my %ob_by_id = map { (hval($_->{headers}, 'id') => $_) } @outbox;

# Remove the white space between JSON tokens (outside strings).
sub compact
{
	my ($s) = @_;
	my ($r, $in, $esc) = ('', 0, 0);
	for my $c (split //, $s)
	{
		if ($in)
		{
			if ($esc) { $esc = 0; }
			elsif ($c eq '\\') { $esc = 1; }
			elsif ($c eq '"') { $in = 0; }
		}
		elsif ($c eq '"') { $in = 1; }
		elsif ($c =~ /\s/) { next; }
		$r .= $c;
	}
	return $r;
}

# PostgreSQL's own text of a jsonb value (what Debezium receives).
sub jsonb_text
{
	my ($v) = @_;
	(my $q = $v) =~ s/'/''/g;
	return $node->safe_psql('postgres', "SELECT '$q'::jsonb::text");
}

# Expected header order: Debezium puts id first, then the placements in
# configuration order; outbox sends jsonb key order (shorter names first).
sub jsonb_order
{
	return sort { length($a) <=> length($b) || $a cmp $b } @_;
}

my @ctx = map { "__debezium.context.$_" }
  qw(connectorLogicalName taskId connectorName runId);

# ---------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------

# $placed: header names of the placements, in configuration order.
sub compare
{
	my ($name, $placed, $check_value) = @_;
	my @d = @{ $dbz{$name} };
	my (%seen, %order_d, %order_o);
	my %bad;
	for my $r (@d)
	{
		my @dh = @{ $r->{headers} };
		my @dctx = map { $_->[0] } grep { $_->[0] =~ /^__debezium\.context\./ } @dh;
		@dh = grep { $_->[0] !~ /^__debezium\.context\./ } @dh;
		my $id = hval(\@dh, 'id');
		my $o = $ob_by_id{ $id // '' };
		if (!$o)
		{
			push @{ $bad{'no outbox record for Debezium\'s'} }, $id // 'null';
			next;
		}
		$seen{$id}++;
		my @oh = @{ $o->{headers} };
		my @own = sort map { $_->[0] } grep { $_->[0] =~ /^outbox-/ } @oh;
		@oh = grep { $_->[0] !~ /^outbox-/ } @oh;

		push @{ $bad{topic} }, $id if $r->{topic} ne $o->{topic};
		push @{ $bad{'Debezium context headers'} }, $id
		  unless "@dctx" eq "@ctx";
		push @{ $bad{'outbox own headers'} }, "$id (@own)"
		  unless "@own" eq 'outbox-db outbox-lsn outbox-source outbox-xid';
		# the same headers (null-valued ones dropped on both sides) ...
		my %dm = map { ($_->[0] => $_->[1]) } @dh;
		my %om = map { ($_->[0] => $_->[1]) } @oh;
		push @{ $bad{'headers'} }, $id
		  unless $json->encode(\%dm) eq $json->encode(\%om);
		# ... in each side's documented order
		my @names = ('id', grep { exists $dm{$_} } @$placed);
		push @{ $bad{'Debezium header order'} }, $id
		  unless join(',', map { $_->[0] } @dh) eq join(',', @names);
		push @{ $bad{'outbox header order'} }, $id
		  unless join(',', map { $_->[0] } @oh) eq join(',', jsonb_order(@names));
		$check_value->($r, $o, \%bad);
		my $k = $r->{topic} . '/' . ($o->{key} // '');
		push @{ $order_d{$k} }, $id;
	}
	for my $o (@outbox)
	{
		my $id = hval($o->{headers}, 'id');
		next unless $seen{$id};
		push @{ $order_o{ $o->{topic} . '/' . ($o->{key} // '') } }, $id;
	}
	for my $what (sort keys %bad)
	{
		fail("$name: $what differs");
		diag("$name: $what: @{ $bad{$what} }[0 .. 4]");
	}
	pass("$name: every record has its counterpart; topic, headers, header orders as documented")
	  unless %bad;
	is($json->encode(\%order_o), $json->encode(\%order_d),
		"$name: per-key order the same");
	return;
}

# "string": key and value bytes through StringConverter.
compare('string', [qw(eventType aggId)], sub {
	my ($r, $o, $bad) = @_;
	my $id = hval($o->{headers}, 'id');
	push @{ $bad->{key} }, $id if ($r->{key} // '') ne ($o->{key} // '');
	push @{ $bad->{'partition (key hash)'} }, $id
	  if $o->{partition} != java_partition($r->{key}, $parts{ $o->{topic} });
	if (!defined $r->{value} || !defined $o->{value})
	{
		push @{ $bad->{tombstone} }, $id
		  if defined $r->{value} || defined $o->{value};
		return;
	}
	# difference 2: Debezium sends PostgreSQL's jsonb text, outbox the
	# same without white space between tokens; the same JSON
	push @{ $bad->{'value text (Debezium = jsonb text)'} }, $id
	  if $r->{value} ne jsonb_text($o->{value});
	push @{ $bad->{'value text (outbox = compact)'} }, $id
	  if compact($r->{value}) ne $o->{value};
	push @{ $bad->{'value JSON'} }, $id
	  if $json->encode($json->decode($r->{value}))
	  ne $json->encode($json->decode($o->{value}));
});

# "json": JsonConverter (schemas.enable=false), expand.json.payload=true.
my %json_diff;
compare('json', [qw(eventType aggId)], sub {
	my ($r, $o, $bad) = @_;
	my $id = hval($o->{headers}, 'id');
	# difference 1: the key is a JSON string, so other bytes and hash
	push @{ $bad->{'key (JSON string of outbox key)'} }, $id
	  if $r->{key} ne $json->encode($o->{key});
	$json_diff{partition}++
	  if java_partition($r->{key}, $parts{ $o->{topic} }) != $o->{partition};
	if (!defined $o->{value})
	{
		# a null payload: JsonConverter writes the JSON text null, a
		# record with a value, where outbox sends a tombstone
		push @{ $bad->{'null payload as JSON null'} }, $id
		  unless ($r->{value} // '') eq 'null';
		$json_diff{tombstone}++;
		return;
	}
	my $dv = $json->decode($r->{value});
	my $ov = $json->decode($o->{value});
	if (!ref $ov)
	{
		# a payload that is not an object or array is not expanded: a
		# JSON string holding its text
		push @{ $bad->{'scalar payload as a JSON string'} }, $id
		  if !defined $dv || ref $dv || $dv ne jsonb_text($o->{value});
		$json_diff{scalar}++;
		return;
	}
	# expansion drops null members and empty arrays, and turns numbers
	# into Java doubles or longs (1.50 becomes 1.5)
	my $want = _expanded($ov);
	push @{ $bad->{'expanded value'} }, $id
	  if $json->encode($dv) ne $json->encode($want);
	$json_diff{value}++ if $json->encode($dv) ne $json->encode($ov);
});

# What Debezium's JSON expansion makes of a JSON value (as observed and
# documented in docs/adopt.md, difference 2).
sub _expanded
{
	my ($v) = @_;
	if (ref $v eq 'HASH')
	{
		my %h;
		for my $k (keys %$v)
		{
			next if !defined $v->{$k};
			next if ref $v->{$k} eq 'ARRAY' && !@{ $v->{$k} };
			$h{$k} = _expanded($v->{$k});
		}
		return \%h;
	}
	return [ map { _expanded($_) } @$v ] if ref $v eq 'ARRAY';
	return $v if ref $v;		# booleans
	return 0 + $v if $v =~ /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/;
	return $v;
}
# numbers are re-encoded from doubles: 1.50 becomes 1.5
my ($c7) = grep { hval($_->{headers}, 'id') eq '4d47e190-0402-4048-bc2c-89dd54343cde' } @{ $dbz{json} };
like($c7->{value}, qr/"score":1\.5[,}]/, 'json: 1.50 is sent as 1.5 after expansion');
like($ob_by_id{'4d47e190-0402-4048-bc2c-89dd54343cde'}{value}, qr/"score":1\.50[,}]/,
	'outbox sends 1.50 as stored');
diag("json: Debezium's expanded value: $c7->{value}");
diag(sprintf('json: %d values differ from outbox\'s as documented, %d scalar payloads as strings, %d keys on another partition',
	$json_diff{value} // 0, $json_diff{scalar} // 0, $json_diff{partition} // 0));
ok(($json_diff{value} // 0) >= 1 && ($json_diff{scalar} // 0) == 1
	  && ($json_diff{tombstone} // 0) == 1,
	'json: the documented value differences occurred');

# "big": bigint id, regex route, a null placed column, the event timestamp.
compare('big', [qw(type)], sub {
	my ($r, $o, $bad) = @_;
	my $id = hval($o->{headers}, 'id');
	push @{ $bad->{key} }, $id if ($r->{key} // '') ne ($o->{key} // '');
	push @{ $bad->{'value JSON'} }, $id
	  if $json->encode($json->decode($r->{value}))
	  ne $json->encode($json->decode($o->{value}));
	# difference 4: Debezium's record time is the timestamp column,
	# outbox's the time the relay produced the record
	my $col = $node->safe_psql('postgres',
		"SELECT (extract(epoch FROM created_at) * 1000)::bigint FROM outbox_big WHERE id = $id");
	push @{ $bad->{'Debezium timestamp = column'} }, $id
	  if $r->{timestamp} != $col;
	push @{ $bad->{'outbox timestamp = produce time'} }, $id
	  if !$o->{timestamp} || $o->{timestamp} < int($t_start * 1000) - 1000;
});
my ($nohdr) = grep { hval($_->{headers}, 'id') eq '2' } @outbox;
ok($nohdr && !grep({ $_->[0] eq 'type' } @{ $nohdr->{headers} }),
	'a null placed column gives no header (on both sides: the embedded engine drops null-valued headers)');
is(join(' ', sort map { $_->{topic} } grep { $_->{topic} =~ /big|plain/ } @outbox),
	"$p.big.Invoice.1 $p.big.Invoice.2 $p.plain",
	'regex groups route, a value the regex does not match is the topic itself');

my @ids = map { hval($_->{headers}, 'id') } @outbox;
ok(!grep({ /^c0000000-0000-0000-0000-00000000000[13]$/ || $_ eq '4' } @ids),
	'rolled-back rows appear nowhere');

$node->stop;
diag(sprintf('115 took %.1f s', time() - $t_start));
done_testing();
