#
# 106_launcher.pl
#    The launcher starts the relay.  A database named by outbox.database
#    that does not exist is a calm misconfigured state (one log line, no
#    restart loop), and the relay starts by itself once the database is
#    created.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);

my $topic = unique_topic('launcher');
my $broker = start_broker(topics => ["$topic:2"]);
my $node = new_relay_node('launcher', $broker,
	extra_conf => "outbox.database = 'shop'\n", no_wait => 1);

ok(wait_for(sub { $node->safe_psql('postgres',
	q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'outbox launcher'}) eq '1' }, 20),
	'the launcher runs and shows as "outbox launcher"');
ok(wait_for(sub { (relay_status($node) // {})->{state} eq 'misconfigured' }, 20),
	'a missing database is a misconfigured state');
like(relay_status($node)->{last_error}, qr/database "shop" .* does not exist/,
	'last_error names the database');
sleep(7);
my $log = slurp_file($node->logfile);
is(count_matches($log, qr/database "shop" named by outbox.database does not exist/), 1,
	'said once in the log, not in a loop');
unlike($log, qr/FATAL/, 'no FATAL: no connection attempts, no launcher restarts');

$node->safe_psql('postgres', 'CREATE DATABASE shop');
$node->safe_psql('shop', 'CREATE EXTENSION outbox');
ok(wait_for(sub { (relay_status($node) // {})->{state} eq 'streaming' }, 30),
	'the relay starts once the database exists');
is($node->safe_psql('postgres',
	q{SELECT datname FROM pg_stat_activity WHERE backend_type = 'outbox relay'}),
	'shop', 'connected to database shop');
$node->safe_psql('shop', "SELECT outbox.enqueue('$topic', 'k', '{\"n\": 1}')");
my @recs;
ok(wait_for(sub { @recs = consume($broker, $topic); @recs == 1 }, 30),
	'an event of database shop is delivered');

done_testing();
