#
# 106_launcher.pl
#    The launcher starts the relay.  A database named by outbox.databases
#    that does not exist is a calm misconfigured state (one log line, no
#    restart loop), and the relay starts by itself once the database is
#    created.  A slot that cannot be created is calm too.
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
	extra_conf => "outbox.databases = 'shop'\n", no_wait => 1);

ok(wait_for(sub { $node->safe_psql('postgres',
	q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'outbox launcher'}) eq '1' }, 20),
	'the launcher runs and shows as "outbox launcher"');
ok(wait_for(sub { (relay_status($node) // {})->{state} eq 'misconfigured' }, 20),
	'a missing database is a misconfigured state');
like(relay_status($node)->{last_error}, qr/database "shop" .* does not exist/,
	'last_error names the database');
sleep(7);
my $log = slurp_file($node->logfile);
is(count_matches($log, qr/database "shop" named by outbox.databases does not exist/), 1,
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

# A slot that cannot be created (no replication slots at all) is a calm
# misconfigured state too, not a worker exiting every 5 s.
my $noslots = new_relay_node('launcher_noslots', $broker,
	extra_conf => "max_replication_slots = 0\n", no_wait => 1);
ok(wait_for(sub { (relay_status($noslots) // {})->{state} eq 'misconfigured' }, 30),
	'a slot that cannot be created: misconfigured');
like(relay_status($noslots)->{last_error}, qr/could not create replication slot .*max_replication_slots/,
	'last_error says why, naming max_replication_slots');
my $pid = relay_pid($noslots);
sleep(7);
is(relay_pid($noslots), $pid, 'the relay keeps its process (no crash loop)');
is(count_matches(slurp_file($noslots->logfile), qr/could not create replication slot/), 1,
	'logged once');
$noslots->stop;

done_testing();
