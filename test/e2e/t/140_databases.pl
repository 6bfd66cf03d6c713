#
# 140_databases.pl
#    One relay per database (issue 10, point 1).  With outbox.databases = '*'
#    every database where the extension is installed is relayed, each with
#    its own slot, producer and relay_status row, and with the outbox-db
#    header on its records.  A database that gets the extension later
#    (CREATE EXTENSION, or CREATE DATABASE from a template that has it) is
#    relayed without a restart; DROP EXTENSION stops its relay and drops its
#    slot, so the database can be dropped.  A reload to a list of names stops
#    the other relays and leaves the named one running.  Too few
#    max_worker_processes is a clear state naming the setting.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP qw(decode_json);
use Time::HiRes qw(sleep);

my $topic = unique_topic('dbs');
my $broker = start_broker(topics => ["$topic:3"]);
my $node = new_relay_node('dbs', $broker,
	extra_conf => "outbox.databases = '*'\nmax_worker_processes = 16\n",
	no_extension => 1, no_wait => 1);

sub rows
{
	return $node->safe_psql('shop',
		q{SELECT string_agg(database || ':' || state, ' ' ORDER BY database)
		    FROM outbox.relay_status});
}

# A database's relay_status row, read in shop.
sub st
{
	my ($db) = @_;
	my $row = $node->safe_psql('shop',
		"SELECT row_to_json(s) FROM outbox.relay_status s WHERE s.database = '$db'");
	return $row eq '' ? undef : decode_json($row);
}

sub relay_backends
{
	return $node->safe_psql('postgres',
		q{SELECT coalesce(string_agg(datname, ' ' ORDER BY datname), '')
		    FROM pg_stat_activity WHERE backend_type = 'outbox relay'});
}

sub db_oid
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		"SELECT oid FROM pg_database WHERE datname = '$db'");
}

# Databases without the extension are not relayed: their relays look and go.
$node->safe_psql('postgres', "CREATE DATABASE $_") for qw(shop billing plain);
$node->safe_psql($_, 'CREATE EXTENSION outbox') for qw(shop billing);
ok(wait_for(sub { rows() eq 'billing:streaming shop:streaming' }, 30),
	'both databases with the extension are streaming, one row each')
  or diag(rows());
ok(wait_for(sub { relay_backends() eq 'billing shop' }, 30),
	'one relay process per relayed database, none elsewhere')
  or diag(relay_backends());
my %st = map { $_ => st($_) } qw(shop billing);
is($st{shop}{slot_name}, 'outbox_' . db_oid('shop'), 'shop: slot outbox_<oid>');
is($st{billing}{slot_name}, 'outbox_' . db_oid('billing'), 'billing: its own slot');
is($node->safe_psql('postgres',
	q{SELECT string_agg(d.datname, ' ' ORDER BY d.datname)
	    FROM pg_replication_slots s JOIN pg_database d ON d.oid = s.datoid
	   WHERE s.plugin = 'outbox'}),
	'billing shop', 'no slot in databases without the extension');
isnt($st{shop}{pid}, $st{billing}{pid}, 'separate processes');

# Events of each database, with the database's name in outbox-db.
$node->safe_psql('shop', "SELECT outbox.enqueue('$topic', 's$_', '{\"db\":\"shop\"}') FROM generate_series(1, 20)");
$node->safe_psql('billing', "SELECT outbox.enqueue('$topic', 'b$_', '{\"db\":\"billing\"}') FROM generate_series(1, 30)");
my @recs;
ok(wait_for(sub { @recs = consume($broker, $topic); @recs >= 50 }, 30),
	'events of both databases delivered') or diag(scalar @recs);
my %by_db;
$by_db{ $_->{headers}{'outbox-db'} // '' }{ $_->{value} }++ for @recs;
is_deeply([ sort keys %by_db ], [qw(billing shop)], 'outbox-db names the database');
is($by_db{shop}{'{"db":"shop"}'}, 20, 'shop: 20 records, each from shop');
is($by_db{billing}{'{"db":"billing"}'}, 30, 'billing: 30 records, each from billing');
ok(wait_for(sub { (st('shop')->{delivered} // 0) == 20
	  && (st('billing')->{delivered} // 0) == 30 }, 20),
	'independent counters: shop 20, billing 30');

# A database gets the extension at runtime: relayed without a restart.
my $pos = log_position($node);
$node->safe_psql('plain', 'CREATE EXTENSION outbox');
ok(wait_for(sub { (st('plain') // {})->{state} eq 'streaming' }, 15),
	'CREATE EXTENSION in another database: its relay streams within seconds');
$node->safe_psql('plain', "SELECT outbox.enqueue('$topic', 'p', '{\"db\":\"plain\"}')");
ok(wait_for(sub { grep { ($_->{headers}{'outbox-db'} // '') eq 'plain' } consume($broker, $topic) }, 30),
	'its event is delivered');

# A database made from a template that has the extension: found by the
# launcher's look at pg_database, no CREATE EXTENSION involved.
$node->safe_psql('template1', 'CREATE EXTENSION outbox');
$node->safe_psql('postgres', 'CREATE DATABASE cloned');
ok(wait_for(sub { (st('cloned') // {})->{state} eq 'streaming' }, 30),
	'a database created from a template with the extension is relayed');
ok(!defined st('template1'), 'templates are not relayed');

# A launcher that is terminated comes back without starting a second relay
# for any database: the relays of the old one are stopped first.
$node->safe_psql('postgres',
	q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'outbox launcher'});
ok(wait_for(sub { $node->safe_psql('postgres',
	q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'outbox launcher'}) eq '1'
	  && rows() eq 'billing:streaming cloned:streaming plain:streaming shop:streaming' }, 30),
	'launcher restarted; every database streaming again') or diag(rows());
sleep(2);
is(relay_backends(), 'billing cloned plain shop', 'one relay per database, no duplicates');

# DROP EXTENSION and CREATE EXTENSION again at once (a migration): the slot
# stays.  DROP EXTENSION for good: after a grace period, and once all it
# decoded is delivered, the relay drops its slot and stops; the database can
# then be dropped.
my $cloned_slot = st('cloned')->{slot_name};
$node->safe_psql('cloned', 'DROP EXTENSION outbox');
$node->safe_psql('cloned', 'CREATE EXTENSION outbox');
my $billing_slot = $st{billing}{slot_name};
$node->safe_psql('billing', 'DROP EXTENSION outbox');
ok(wait_for(sub { !defined st('billing') }, 30),
	'DROP EXTENSION: the row disappears');
ok(wait_for(sub { $node->safe_psql('postgres',
	"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$billing_slot'") eq '0' }, 15),
	'and its slot is dropped');
ok(wait_for(sub { relay_backends() !~ /billing/ }, 15), 'and its relay is gone');
like(slurp_file($node->logfile), qr/dropping its replication slot "$billing_slot"/, 'logged');
my ($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE billing');
is($rc, 0, 'the database can be dropped') or diag($err);
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$cloned_slot'"), '1',
	'an extension dropped and created again at once keeps its slot');
is((st('cloned') // {})->{state}, 'streaming', 'and streams');

# A reload to a list of names: the others stop, the named ones go on, and a
# listed database without the extension (looked at before, under '*') gets
# a relay holding a slot for it.
my $shop_pid = st('shop')->{pid};
$node->append_conf('postgresql.conf', "outbox.databases = 'shop, postgres, nosuchdb'\n");
$node->reload;
ok(wait_for(sub { relay_backends() eq 'postgres shop' }, 20),
	'reload to a list: only the named databases have relays') or diag(relay_backends());
is(st('shop')->{pid}, $shop_pid, 'the relay of a database still relayed was not restarted');
ok(wait_for(sub { (st('postgres') // {})->{state} eq 'waiting_for_extension' }, 15),
	'a listed database without the extension: waiting_for_extension');
ok(wait_for(sub { $node->safe_psql('postgres',
	"SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'outbox_5'") eq '1' }, 15),
	'with its slot created');
ok(wait_for(sub { (st('nosuchdb') // {})->{state} eq 'misconfigured' }, 15),
	'a listed database that does not exist: misconfigured row');
like(st('nosuchdb')->{last_error},
	qr/database "nosuchdb" named by outbox\.databases does not exist/, 'naming it');
ok(!defined st('plain'), 'unlisted databases have no row');
$node->safe_psql('shop', "SELECT outbox.enqueue('$topic', 'after-reload', '{}')");
ok(wait_for(sub { grep { $_->{key} eq 'after-reload' } consume($broker, $topic) }, 30),
	'shop still delivers');

# The relay started under '*' follows the reload: a named database keeps
# its slot when the extension goes.
my $shop_slot = st('shop')->{slot_name};
$node->safe_psql('shop', 'DROP EXTENSION outbox');
$node->safe_psql('postgres', 'CREATE EXTENSION outbox');
sleep(12);
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$shop_slot'"), '1',
	'named database: DROP EXTENSION keeps the slot');
is($node->safe_psql('postgres',
	"SELECT state FROM outbox.relay_status WHERE database = 'shop'"),
	'waiting_for_extension', 'and the relay waits for the extension');
unlike(slurp_file($node->logfile), qr/TRAP|terminated by signal|server process .* exited with exit code [^0]/,
	'no crash in the log');
$node->stop;

# Too few worker processes: a clear state naming the setting.
my $small = new_relay_node('dbs_small', $broker,
	extra_conf => "outbox.databases = 'postgres, a1, a2'\nmax_worker_processes = 2\n",
	no_wait => 1);
$small->safe_psql('postgres', "CREATE DATABASE $_") for qw(a1 a2);
ok(wait_for(sub { $small->safe_psql('postgres',
	q{SELECT count(*) FROM outbox.relay_status
	   WHERE state = 'misconfigured' AND last_error ~ 'max_worker_processes'}) ne '0' }, 30),
	'too few max_worker_processes: misconfigured, naming the setting');
my $slog = slurp_file($small->logfile);
cmp_ok(count_matches($slog, qr/raise max_worker_processes/), '<=', 3,
	'logged once per database, not in a loop');
$small->stop;

done_testing();
