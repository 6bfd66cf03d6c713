#
# 105_dead_letter_settings.pl
#    The relay forces its own session settings.  A database set read-only
#    (ALTER DATABASE ... SET default_transaction_read_only = on) no longer
#    makes dead letter writes fail and the worker crash-loop; a write that
#    does fail (table locked away, here: dead_letters made unwritable) puts
#    the relay into a calm dead_letters_blocked state with retries, nothing
#    confirmed past the event, and it recovers by itself.  With an inherited
#    synchronous_commit = off, the dead letter is still durable before the
#    slot passes it: an immediate shutdown right after keeps it.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $t_big = unique_topic('big');
my $broker = start_broker(topics => ["$t_big:3"]);
my $node = new_relay_node('dl_settings', $broker,
	extra_conf => "wal_writer_delay = 10000ms\n");

sub poison
{
	my ($tag) = @_;
	return $node->safe_psql('postgres', qq{
SET outbox.max_message_size = '4MB';
SET default_transaction_read_only = off;
SELECT outbox.enqueue('$t_big', '$tag', jsonb_build_object('n', '$tag', 'fill', repeat('x', 2 * 1024 * 1024)));
});
}
sub dead_count
{
	return $node->safe_psql('postgres', 'SELECT count(*) FROM outbox.dead_letters');
}

# Settings the relay inherits from the database: read-only, async commit,
# a tiny idle-in-transaction timeout.  The relay picks them up at its next start.
$node->safe_psql('postgres', q{
ALTER DATABASE postgres SET default_transaction_read_only = on;
ALTER DATABASE postgres SET synchronous_commit = off;
ALTER DATABASE postgres SET idle_in_transaction_session_timeout = '1ms';
});
$node->restart;
wait_relay_state($node, 'streaming');
my $pid = relay_pid($node);

my $id1 = poison('ro');
ok(wait_for(sub { dead_count() >= 1 }, 30),
	'dead letter written although the database defaults to read-only');
is(relay_pid($node), $pid, 'the relay did not restart');

# Durable before the slot passes it: crash right after the confirmation.
my $id2 = poison('async');
ok(wait_for(sub { dead_count() >= 2 }, 30), 'second dead letter written');
my $commit = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
ok(wait_relay_idle($node), 'slot confirmed past it');
$node->stop('immediate');
$node->start;
is($node->safe_psql('postgres',
	"SELECT count(*) FROM outbox.dead_letters WHERE message_id = $id2"),
	'1', 'the dead letter survived an immediate shutdown (its commit was synchronous)');

# A write that fails: the relay waits calmly and retries.
wait_relay_state($node, 'streaming');
$pid = relay_pid($node);
$node->safe_psql('postgres', q{
SET default_transaction_read_only = off;
ALTER TABLE outbox.dead_letters ADD CONSTRAINT no_more CHECK (false) NOT VALID;
});
my $id3 = poison('blocked');
ok(wait_for(sub { relay_status($node)->{state} eq 'dead_letters_blocked' }, 30),
	'state dead_letters_blocked while the write fails');
like(relay_status($node)->{last_error}, qr/dead letters/, 'last_error says so');
my $confirmed = relay_status($node)->{confirmed_lsn};
sleep(3);
is(relay_pid($node), $pid, 'no crash loop');
is(relay_status($node)->{confirmed_lsn}, $confirmed,
	'nothing is confirmed past the unwritten dead letter');
$node->safe_psql('postgres', 'SET default_transaction_read_only = off; ALTER TABLE outbox.dead_letters DROP CONSTRAINT no_more');
ok(wait_for(sub { $node->safe_psql('postgres',
	"SELECT count(*) FROM outbox.dead_letters WHERE message_id = $id3") eq '1' }, 60),
	'written once the table accepts it again');
ok(wait_relay_idle($node), 'and the relay moves on');
is(relay_status($node)->{state}, 'streaming', 'streaming again');

done_testing();
