#
# 010_relay_basic.pl
#    The relay delivers every kind of event with the right Kafka record
#    (topic, key, value, headers), partitions keys like the Java client,
#    wakes on commit instead of a timer, and reports itself.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

# Our Perl murmur2 agrees with the Java client's test vectors.
is(murmur2('21'), -973932308, 'murmur2("21") as in Kafka');
is(murmur2('foobar'), -790332482, 'murmur2("foobar") as in Kafka');
is(murmur2('a-little-bit-long-string'), -985981536, 'murmur2 long key');
is(murmur2('a-little-bit-longer-string'), -1486304829,
	'murmur2 longer key');
is(murmur2('lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8'),
	-58897971, 'murmur2 48-byte key');
is(murmur2('abc'), 479470107, 'murmur2("abc") as in Kafka');

my $orders = unique_topic('orders');
my $audit = unique_topic('audit');
my $broker = start_broker(topics => ["$orders:8", "$audit:3"]);
my $node = new_relay_node('relay_basic', $broker);

is($node->safe_psql('postgres',
	q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'outbox relay'}),
	'1', 'relay shows in pg_stat_activity as "outbox relay"');

$node->safe_psql(
	'postgres', qq{
CREATE TABLE shop (id int PRIMARY KEY, item text);
SELECT outbox.capture('shop', '$audit');
BEGIN;
SELECT outbox.enqueue('$orders', 'customer-1', '{"n": 1, "s": "a\\tb"}', '{"trace": "t-1"}');
SELECT outbox.enqueue('$orders', 'customer-2', '{"n": 2}');
SELECT outbox.enqueue('$orders', 'customer-1', NULL);
SELECT outbox.emit('$orders', NULL, '[1, 2.50, "x"]', '{"kind": "emitted"}');
INSERT INTO shop VALUES (7, 'lamp');
COMMIT;
BEGIN;
SELECT outbox.enqueue('$orders', 'rolled-back', '{"n": 0}');
ROLLBACK;
});
ok(wait_relay_idle($node), 'relay caught up');

my @recs = consume($broker, $orders);
is(scalar(@recs), 4, 'four events on the orders topic, none rolled back');
my %by_id = map { ($_->{headers}{'outbox-id'} // 'emit') => $_ } @recs;

my $r = $by_id{1};
is($r->{key}, 'customer-1', 'key is the event key');
is($r->{value}, '{"n":1,"s":"a\\tb"}', 'value is compact JSON');
is($r->{headers}{trace}, 't-1', 'event headers become record headers');
like($r->{headers}{'outbox-lsn'}, qr{^[0-9A-F]+/[0-9A-F]+$},
	'outbox-lsn header is an LSN');
like($r->{headers}{'outbox-xid'}, qr{^\d+$}, 'outbox-xid header is an xid');
is($r->{headers}{'outbox-db'}, 'postgres', 'outbox-db header names the database');
is($r->{partition}, java_partition('customer-1', 8),
	'partition is murmur2(key) like the Java client');
is($by_id{2}{partition}, java_partition('customer-2', 8),
	'second key partitioned like the Java client');

ok(!defined $by_id{3}{value}, 'null payload is a tombstone');
is($by_id{3}{key}, 'customer-1', 'tombstone keeps its key');

my $e = $by_id{emit};
ok(!defined $e->{headers}{'outbox-id'}, 'emitted event has no outbox-id');
is($e->{value}, '[1,2.50,"x"]', 'emitted payload as compact JSON');
is($e->{headers}{kind}, 'emitted', 'emitted headers');
ok(!defined $e->{key}, 'emitted event with null key');

# The same transaction: same commit LSN and xid on all four.
my %lsns = map { $_->{headers}{'outbox-lsn'} => 1 } @recs;
is(scalar(keys %lsns), 1, 'events of one transaction share a commit LSN');

my @cap = consume($broker, $audit);
is(scalar(@cap), 1, 'captured row change delivered');
is($cap[0]{key}, '7', 'capture key is the primary key');
like($cap[0]{value}, qr/"op":"insert"/, 'capture payload names the operation');

# Wake on commit: a single event arrives well before the idle timer (1 s).
my $t0 = time();
$node->safe_psql('postgres',
	qq{SELECT outbox.enqueue('$orders', 'latency', '{}')});
my @one = consume($broker, $orders, count => 5, idle_ms => 5000,
	timeout_ms => 5000);
my $elapsed = time() - $t0;
is(scalar(@one), 5, 'the new event arrived');
cmp_ok($elapsed, '<', 0.9,
	sprintf('commit to consumer took %.0f ms, faster than the idle timer',
		$elapsed * 1000));

# delivered counts acknowledgements: a consumer can read a record before
# its producer has the broker's answer, so wait for the count, not a moment.
ok(wait_for(sub { relay_status($node)->{delivered} >= 6 }, 30),
	'relay_status counts delivered events');
my $s = relay_status($node);
is($s->{state}, 'streaming', 'relay_status state');
is($s->{slot_name}, 'outbox_5', 'relay_status slot: <outbox.slot_name>_<database OID>');
is($s->{in_flight}, 0, 'nothing in flight');
is($s->{errors}, 0, 'no errors');
ok(defined $s->{last_delivered_commit_time}, 'last delivered commit time');
ok(defined $s->{wal_retained_bytes}, 'WAL retained is reported');
# (status is published every 100 ms; the slot may just have moved past the
# relay's own watermark write)
ok(wait_for(sub { $node->safe_psql('postgres',
	q{SELECT confirmed_flush_lsn = (SELECT confirmed_lsn FROM outbox.relay_status)
	    FROM pg_replication_slots WHERE slot_name = 'outbox_5'}) eq 't' }, 10),
	'relay_status confirmed LSN is the slot\'s');

# Ordinary roles cannot read the Kafka properties setting.
$node->safe_psql('postgres', 'CREATE ROLE app LOGIN');
is($node->safe_psql('postgres',
	q{SET ROLE app; SELECT count(*) FROM pg_settings WHERE name = 'outbox.kafka_properties'}),
	'0', 'outbox.kafka_properties is hidden from ordinary roles');
my ($ret, $out, $err) = $node->psql('postgres',
	q{SET ROLE app; SHOW outbox.kafka_properties});
isnt($ret, 0, 'SHOW outbox.kafka_properties is refused for ordinary roles');

$node->stop;
done_testing();
