#
# 098_message_size.pl
#    outbox.max_message_size counts what Kafka counts: an event accepted at
#    the default limit (1000000, librdkafka's message.max.bytes default) is
#    never too large for the producer, and an event whose JSON text is much
#    larger than its jsonb form (escaped control characters) is refused when
#    it is written, instead of becoming a MSG_SIZE_TOO_LARGE dead letter.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $topic = unique_topic('size');
my $broker = start_broker(topics => ["$topic:1"]);
my $node = new_relay_node('size', $broker);

is($node->safe_psql('postgres', 'SHOW outbox.max_message_size'), '1000000B',
	'the default limit');

# {"s":"xxx..."} is 8 + N bytes of JSON; key 'k' is 1; header {"h": "v"} is
# 10 + 1 + 1; 285 bytes of overhead: N = 1000000 - 306 is exactly the limit.
my $n = 1000000 - 306;
my $id = $node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'k', jsonb_build_object('s', repeat('x', $n)), '{\"h\": \"v\"}')");
ok($id =~ /^\d+$/, 'an event exactly at the limit is accepted');
my ($ret, $out, $err) = $node->psql('postgres',
	"SELECT outbox.enqueue('$topic', 'k', jsonb_build_object('s', repeat('x', $n + 1)), '{\"h\": \"v\"}')");
like($err, qr/outbox message is too large/, 'one byte more is refused');

# 200000 control characters: about 200 kB in jsonb, 1.2 MB as JSON text.
($ret, $out, $err) = $node->psql('postgres',
	"SELECT outbox.enqueue('$topic', 'k', jsonb_build_object('s', repeat(chr(1), 200000)))");
like($err, qr/outbox message is too large/,
	'an event whose JSON text is too large is refused when written');
like($err, qr/would take up to 1200294 bytes/, 'the error gives the size Kafka would see');

ok(wait_relay_idle($node), 'relay caught up');
is($node->safe_psql('postgres', 'SELECT count(*) FROM outbox.dead_letters'), '0',
	'nothing was dead-lettered');
my @recs = consume($broker, $topic, count => 1);
is(scalar(@recs), 1, 'the event at the limit arrived');
is($recs[0]{headers}{'outbox-id'}, $id, 'it is the event');
is(length($recs[0]{value}), 8 + $n, 'with its whole value');

$node->stop;
done_testing();
