#
# 174_reserved_topics.pl
#    No event reaches outbox.progress_topic or outbox.reply_topic (issue 23,
#    point 2), also when it got past the write-time check (sql/
#    reserved_topics.sql): a row written before the setting named its topic
#    (here: with the triggers off), and an adopted table's row whose topic
#    the route computes as the progress topic, go to outbox.dead_letters with
#    error_code OUTBOX_RESERVED_TOPIC, unproduced; every other event is
#    delivered.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $topic = unique_topic('reserved');
my $reply = unique_topic('reserved_replies');
# (a real Kafka may have the progress topic already: 160)
my $broker = start_broker(topics => [ "$topic:1", "$reply:1",
	real_kafka() ? () : 'outbox_progress:1' ]);
my $node = new_relay_node('reserved', $broker,
	extra_conf => "outbox.reply_topic = '$reply'\n");

$node->safe_psql('postgres', qq{
SELECT outbox.enqueue('$topic', 'k', '{"p": "before"}');
SET session_replication_role = replica;
INSERT INTO outbox.messages (topic, key, payload) VALUES
    ('outbox_progress', 'outbox:forged', '{"version": 1, "commit_lsn": "FF/0"}'),
    ('$reply', 'k', '{"verdict": "confirmed"}');
RESET session_replication_role;
SELECT outbox.enqueue('$topic', 'k', '{"p": "after"}');
CREATE TABLE outboxevent (
    id            uuid NOT NULL PRIMARY KEY,
    aggregatetype varchar(255) NOT NULL,
    aggregateid   varchar(255) NOT NULL,
    type          varchar(255) NOT NULL,
    payload       jsonb
);
SELECT outbox.adopt('outboxevent', '{"route.topic.replacement": "outbox_\${routedByValue}"}');
INSERT INTO outboxevent VALUES
    ('4d47e190-0402-4048-bc2c-89dd54343cdc', 'progress', '1', 'Forged', '{"commit_lsn": "FF/0"}');
SELECT outbox.enqueue('$topic', 'k', '{"p": "last"}');
});
ok(wait_relay_idle($node, 60), 'relay caught up');

is($node->safe_psql('postgres',
		q{SELECT string_agg(topic || ' ' || error_code, ', ' ORDER BY id) FROM outbox.dead_letters}),
	"outbox_progress OUTBOX_RESERVED_TOPIC, $reply OUTBOX_RESERVED_TOPIC, outbox_progress OUTBOX_RESERVED_TOPIC",
	'the rows for the progress and reply topics and the adopted row are dead letters');
like($node->safe_psql('postgres', 'SELECT min(error) FROM outbox.dead_letters'),
	qr/only the relay writes/, 'with a reason');
is(scalar(grep { ($_->{key} // '') ne '' && $_->{key} !~ /^outbox:\d+:/ } consume($broker, 'outbox_progress')),
	0, 'nothing but the relay\'s own records in the progress topic');
is(scalar(consume($broker, $reply)), 0, 'nothing in the reply topic');
is(join(',', map { ($_->{value} =~ /"p":\s*"(\w+)"/)[0] } consume($broker, $topic)),
	'before,after,last', 'the other events are delivered');

done_testing();
