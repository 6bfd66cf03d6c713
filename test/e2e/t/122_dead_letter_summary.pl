#
# 122_dead_letter_summary.pl
#    The relay's summary of dead letters names the right topic even when the
#    memory SPI used is reused before the summary is written (issue 6,
#    point 9: first_topic was copied into SPI's procedure context and read
#    after SPI_finish()).
#
#    A server built without assertions does not wipe freed memory, so a
#    read after SPI_finish() usually still finds the topic.  Here a deferred
#    constraint trigger on outbox.dead_letters runs PL/pgSQL at the commit
#    of the relay's dead-letter transaction, after SPI_finish() and before
#    the summary: its memory contexts come from the freed ones (AllocSet
#    keeps freed contexts for reuse) and overwrite what was there.  The
#    summary (WARNING detail and relay_status.last_error) must still name
#    the topic exactly.  On 6c4eb75^ (before the fix) both said topic "";
#    without the trigger that code passes this test too.
#
# test/e2e/t/122_dead_letter_summary.pl
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $topic = unique_topic('summary');
my $b = start_broker(topics => ["$topic:1"]);
my $node = new_relay_node('dead_letter_summary', $b,
	kafka_properties => 'message.max.bytes=10000');

$node->safe_psql('postgres', q{
CREATE FUNCTION public.churn() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	s text := '';
BEGIN
	FOR i IN 1 .. 200 LOOP
		s := s || repeat(chr(65 + i % 26), 37) || i::text;
	END LOOP;
	PERFORM length(s), upper(s), md5(s);
	RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER churn AFTER INSERT ON outbox.dead_letters
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.churn();
});

my $pos = log_position($node);
my $small = $node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'k', '{\"n\": 1}')");
my $big = $node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'k', jsonb_build_object('fill', repeat('x', 20000)))");
ok(wait_relay_idle($node), 'relay caught up');
is($node->safe_psql('postgres',
	"SELECT error_code FROM outbox.dead_letters WHERE message_id = $big"),
	'MSG_SIZE_TOO_LARGE', 'the 20 kB event is a dead letter');

my $log = log_since($node, $pos);
ok($log =~ /Kafka rejected 1 event\(s\) permanently; written to outbox.dead_letters\n.*DETAIL:  First: message id (\d+) for topic "([^"\n]*)"/,
	'the summary was logged');
is($1, $big, 'the summary names the message id');
is($2, $topic, 'the summary names the topic');
like(relay_status($node)->{last_error}, qr/\(first: topic "\Q$topic\E": /,
	'relay_status.last_error names the topic');

$node->stop;
done_testing();
