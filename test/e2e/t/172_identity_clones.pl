#
# 172_identity_clones.pl
#    (outbox-source, outbox-id) is unique across clones (issue 23, point 5).
#    A database cloned with CREATE DATABASE ... TEMPLATE has the template's
#    outbox.installation row and the same next outbox id; so has a database
#    restored from pg_dump the same ids.  Through the relays into Kafka:
#    each database's events carry its own outbox-source, and no pair
#    (outbox-source, outbox-id) stands for two different events, so a
#    consumer that deduplicates by it drops nothing.  The clone's relay logs
#    that it re-drew the id, and outbox.installation holds the new id bound
#    to the clone.  (A copied data directory: 170_eos_history.pl, (b).)
#    The whole scenario runs twice: at least once, and exactly once, where
#    the clone's relay must not take the template's progress record for its
#    own (issue 23, point 1): the clone's new events are in Kafka for a
#    read_committed consumer.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;

# The scenario in delivery mode $mode (at_least_once, exactly_once).
sub scenario
{
	my ($mode) = @_;
	note("delivery = $mode");
	my $topic = unique_topic("clones_$mode");
	my $broker = start_broker(topics => ["$topic:3"]);
	my $node = new_relay_node("clones_$mode", $broker,
		extra_conf => "outbox.databases = '*'\nmax_worker_processes = 16\n"
		  . "outbox.delivery = $mode\n",
		no_extension => 1, no_wait => 1);

	my $relayed = sub
	{
		my ($db) = @_;
		return wait_for(
			sub {
				my $lsn = $node->safe_psql($db, 'SELECT pg_current_wal_lsn()');
				$node->safe_psql($db,
					qq{SELECT count(*) = 1 FROM outbox.relay_status
					    WHERE database = '$db' AND state = 'streaming' AND in_flight = 0
					      AND confirmed_lsn >= '$lsn'}) eq 't';
			},
			90);
	};

	my $enqueue = sub
	{
		my ($db, $tag, $n) = @_;
		return $node->safe_psql($db,
			"SELECT string_agg(outbox.enqueue('$topic', '$db', jsonb_build_object('p', '$tag-' || i))::text, ',') FROM generate_series(1, $n) i");
	};

	my $installation = sub
	{
		my ($db) = @_;
		return $node->safe_psql($db, 'SELECT id FROM outbox.installation');
	};

	$node->safe_psql('postgres', 'CREATE DATABASE a');
	$node->safe_psql('a', 'CREATE EXTENSION outbox');
	is($enqueue->('a', 'a-first', 3), '1,2,3', "$mode: a: ids 1 to 3");
	ok($relayed->('a'), "$mode: a: delivered");

	# Stop a's relay (a template must have no other connection), clone, dump.
	$node->append_conf('postgresql.conf', "outbox.databases = 'postgres'\n");
	$node->reload;
	ok( wait_for(
			sub {
				$node->safe_psql('postgres',
					q{SELECT count(*) FROM pg_stat_activity
					   WHERE backend_type = 'outbox relay' AND datname = 'a'}) eq '0';
			},
			60),
		"$mode: a: its relay stopped for the clone");
	$node->safe_psql('postgres', 'CREATE DATABASE c TEMPLATE a');
	my $dump = PostgreSQL::Test::Utils::tempdir() . '/a.sql';
	$node->command_ok([ 'pg_dump', '-d', $node->connstr('a'), '-f', $dump ], "$mode: pg_dump a");
	$node->safe_psql('postgres', 'CREATE DATABASE r');
	$node->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('r'), '-f', $dump ],
		"$mode: restore the dump into r");
	is($installation->('c'), $installation->('a'), "$mode: c: the clone has the template's installation row");

	my $pos = log_position($node);
	$node->append_conf('postgresql.conf', "outbox.databases = '*'\n");
	$node->reload;
	my %ids;
	$ids{$_} = $enqueue->($_, "$_-second", 3) for qw(a c r);
	is($ids{a}, '4,5,6', "$mode: a: ids 4 to 6");
	is($ids{c}, '4,5,6', "$mode: c: ids 4 to 6 as well");
	is($ids{r}, '4,5,6', "$mode: r: ids 4 to 6 as well");
	ok($relayed->($_), "$mode: $_: delivered") for qw(a c r);
	like(log_since($node, $pos), qr/installation id \Q@{[ $installation->('a') ]}\E was drawn for another database/,
		"$mode: c: its relay re-drew the id");
	isnt($installation->('c'), $installation->('a'), "$mode: c: outbox.installation holds the new id");
	is($node->safe_psql('c',
			q{SELECT database_oid = (SELECT oid FROM pg_database WHERE datname = 'c')
			    FROM outbox.installation}), 't',
		"$mode: c: bound to the clone");
	isnt($installation->('r'), $installation->('a'), "$mode: r: the restore has an id of its own");

	my @recs = grep { defined $_->{headers}{'outbox-id'} } consume($broker, $topic);
	my (%by_pair, %source_of);
	for my $r (@recs)
	{
		my $pair = ($r->{headers}{'outbox-source'} // 'none') . '/' . $r->{headers}{'outbox-id'};
		$by_pair{$pair}{ $r->{value} } = 1;
		$source_of{ $r->{headers}{'outbox-db'} }{ $r->{headers}{'outbox-source'} // 'none' } = 1;
	}
	my @clashes = grep { keys %{ $by_pair{$_} } > 1 } sort keys %by_pair;
	is(scalar(@clashes), 0, "$mode: (outbox-source, outbox-id) never stands for two events")
	  or diag("clashes: @clashes");
	for my $db (qw(a c r))
	{
		my %got = map { (($_->{value} =~ /"p":\s*"([^"]+)"/)[0] // '?') => 1 }
		  grep { $_->{headers}{'outbox-db'} eq $db } @recs;
		is(scalar(grep { $got{"$db-second-$_"} } 1 .. 3), 3, "$mode: $db: its 3 new events reached Kafka");
	}
	is(join(',', sort keys %{ $source_of{c} }), $installation->('c'),
		"$mode: c: every record of the clone carries the clone's id");
	my %all = map { (keys %{ $source_of{$_} })[0] => 1 } qw(a c r);
	is(scalar(keys %all), 3, "$mode: three databases, three sources");

	$node->stop;
	return;
}

scenario($_) for qw(at_least_once exactly_once);

done_testing();
