#
# 100_event_identity.pl
#    Every record carries header outbox-source, the installation's uuid from
#    outbox.installation, so that (outbox-source, outbox-id) stays unique
#    when DROP/CREATE EXTENSION starts the ids at 1 again.  Events written
#    before the re-creation but decoded after it keep the old installation's
#    id: the relay reads it under the decoded transaction's snapshot.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $topic = unique_topic('identity');
my $broker = start_broker(topics => ["$topic:1"]);
my $node = new_relay_node('identity', $broker);

sub installation
{
	return $node->safe_psql('postgres', 'SELECT id FROM outbox.installation');
}

sub set_brokers
{
	my ($value) = @_;
	my $sql = defined $value
	  ? "ALTER SYSTEM SET outbox.kafka_brokers = '$value'"
	  : 'ALTER SYSTEM RESET outbox.kafka_brokers';
	$node->safe_psql('postgres', "$sql; SELECT pg_reload_conf();");
}

my $first = installation();
like($first, qr/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
	'CREATE EXTENSION drew an installation uuid');
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'a', '{\"n\": 1}'); SELECT outbox.emit('$topic', 'e', '{\"n\": 1}');");
ok(wait_relay_idle($node), 'relay caught up');

# Keep the relay from decoding while the extension is dropped and created
# again, so that both installations' events are decoded in one go.
set_brokers('');
wait_relay_state($node, 'disabled', 30);
$node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'a', '{\"n\": 2}');");
$node->safe_psql('postgres', 'DROP EXTENSION outbox; CREATE EXTENSION outbox;');
my $second = installation();
isnt($second, $first, 'CREATE EXTENSION again: another installation id');
is($node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'b', '{\"n\": 3}')"), '1',
	'message ids start at 1 again');
$node->safe_psql('postgres',
	"SELECT outbox.emit('$topic', 'e', '{\"n\": 3}')");
set_brokers($broker->{bootstrap});
wait_relay_state($node, 'streaming', 60);
ok(wait_relay_idle($node), 'relay caught up after the re-creation');

my @recs = consume($broker, $topic, count => 5);
is(scalar(@recs), 5, 'five records');
my @seen = map {
	[ $_->{value}, $_->{headers}{'outbox-id'} // '-', $_->{headers}{'outbox-source'} // 'none' ]
} @recs;
is_deeply(
	\@seen,
	[
		[ '{"n":1}', '1', $first ],
		[ '{"n":1}', '-', $first ],
		[ '{"n":2}', '2', $first ],
		[ '{"n":3}', '1', $second ],
		[ '{"n":3}', '-', $second ],
	],
	'each record names the installation it was written in, also when decoded after a re-creation'
) or diag(explain(\@seen));

my %pairs = map { ("$_->[2]/$_->[1]" => 1) } grep { $_->[1] ne '-' } @seen;
is(scalar(keys %pairs), 3, '(outbox-source, outbox-id) is unique although outbox-id 1 repeats');

done_testing();
