#
# 110_adopt.pl
#    An adopted table of Debezium's outbox shape reaches Kafka through the
#    unchanged relay: topics routed by aggregatetype, key aggregateid,
#    value the payload as compact JSON, headers id and placed columns plus
#    the relay's own, per-key partitioning, rows deleted in their own
#    transaction delivered, rolled-back rows and updates not.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $prefix = unique_topic('adopt');
my $orders = "$prefix.Order";
my $customers = "$prefix.Customer";
my $broker = start_broker(topics => ["$orders:6", "$customers:2"]);
my $node = new_relay_node('adopt', $broker);

$node->safe_psql(
	'postgres', qq{
CREATE TABLE outboxevent (
    id            uuid NOT NULL PRIMARY KEY,
    aggregatetype varchar(255) NOT NULL,
    aggregateid   varchar(255) NOT NULL,
    type          varchar(255) NOT NULL,
    payload       jsonb
);
SELECT outbox.adopt('outboxevent', '{
    "route.topic.replacement": "$prefix.\${routedByValue}",
    "table.fields.additional.placement": "type:header:eventType"
}');
BEGIN;
INSERT INTO outboxevent VALUES
    ('4d47e190-0402-4048-bc2c-89dd54343cdc', 'Order', '1', 'OrderCreated', '{"id": 1, "total": 39.98}');
DELETE FROM outboxevent WHERE id = '4d47e190-0402-4048-bc2c-89dd54343cdc';
COMMIT;
INSERT INTO outboxevent VALUES
    ('b3a07c7e-1a53-4c1a-9c3e-0b3cb0d4b7a1', 'Customer', '123', 'CustomerCreated', '{"name": "alice"}');
BEGIN;
INSERT INTO outboxevent VALUES
    ('c0000000-0000-0000-0000-000000000001', 'Order', '2', 'OrderCreated', '{}');
ROLLBACK;
INSERT INTO outboxevent VALUES
    ('c0000000-0000-0000-0000-000000000002', 'Order', '1', 'OrderPaid', NULL);
UPDATE outboxevent SET type = 'x' WHERE aggregateid = '123';
});
ok(wait_relay_idle($node), 'relay caught up');

my @o = consume($broker, $orders);
is(scalar(@o), 2, 'two Order events, the rolled-back one absent');
my %by_type = map { $_->{headers}{eventType} => $_ } @o;
my $r = $by_type{OrderCreated};
is($r->{key}, '1', 'key is aggregateid');
is($r->{value}, '{"id":1,"total":39.98}', 'value is the payload as compact JSON');
is($r->{headers}{id}, '4d47e190-0402-4048-bc2c-89dd54343cdc',
	'header id is the event id, also for a row deleted in its transaction');
ok(!defined $r->{headers}{'outbox-id'}, 'no outbox-id: not a row of outbox.messages');
like($r->{headers}{'outbox-lsn'}, qr{^[0-9A-F]+/[0-9A-F]+$}, 'outbox-lsn header');
like($r->{headers}{'outbox-source'}, qr{^[0-9a-f-]{36}$}, 'outbox-source header');
is($r->{partition}, java_partition('1', 6), 'partitioned by key like the Java client');
ok(!defined $by_type{OrderPaid}{value}, 'null payload is a tombstone');
is($by_type{OrderPaid}{partition}, $r->{partition}, 'same key, same partition');

my @c = consume($broker, $customers);
is(scalar(@c), 1, 'one Customer event on its own topic; the update is not an event');
is($c[0]{value}, '{"name":"alice"}', 'customer payload');

$node->stop;
done_testing();
