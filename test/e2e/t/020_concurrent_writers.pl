#
# 020_concurrent_writers.pl
#    Concurrent writers commit and roll back transactions with several
#    events each (table events, emitted events, rolled-back and released
#    savepoints).  Every committed event arrives exactly once, nothing of a
#    rolled-back transaction or savepoint arrives, and per key the events
#    arrive in commit order.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use JSON::PP;
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $topic = unique_topic('writers');
my $broker = start_broker(topics => ["$topic:6"]);
my $node = new_relay_node('writers', $broker,
	extra_conf => "max_connections = 30\n");

# emitted: one row per outbox.emit() call of a committed transaction; its id
# travels in the emitted payload, so both sides can be compared exactly.
$node->safe_psql('postgres',
	'CREATE TABLE emitted (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, client int)'
);

# ~20% of the transactions roll back; ~30% also roll back a savepoint; every
# transaction has a released savepoint (a committed subtransaction).  Every
# event that must not arrive carries "rb": true.
my $script = <<"EOS";
\\set r random(1, 100)
\\set sp random(1, 100)
\\set k1 random(0, 9)
\\set k2 random(0, 9)
\\set k3 random(0, 9)
BEGIN;
SELECT outbox.enqueue('$topic', 'key-' || :k1, jsonb_build_object('rb', :r <= 20, 'c', :client_id, 'n', 1));
SELECT outbox.enqueue('$topic', 'key-' || :k2, jsonb_build_object('rb', :r <= 20, 'c', :client_id, 'n', 2));
\\if :sp <= 30
SAVEPOINT s1;
SELECT outbox.enqueue('$topic', 'key-' || :k3, jsonb_build_object('rb', true, 'sp', true));
SELECT outbox.emit('$topic', 'key-' || :k3, jsonb_build_object('rb', true, 'sp', true));
ROLLBACK TO SAVEPOINT s1;
\\endif
INSERT INTO emitted (client) VALUES (:client_id) RETURNING id AS eid \\gset
SELECT outbox.emit('$topic', 'key-' || :k3, jsonb_build_object('rb', :r <= 20, 'eid', :eid));
SAVEPOINT s2;
SELECT outbox.enqueue('$topic', 'key-' || :k3, jsonb_build_object('rb', :r <= 20, 'c', :client_id, 'n', 3));
RELEASE SAVEPOINT s2;
\\if :r <= 20
ROLLBACK;
\\else
COMMIT;
\\endif
EOS

my $t0 = time();
my ($out, $err) = ('', '');
my $h = start_pgbench($node, $script, [ '-c', 6, '-j', 2, '-T', 8, '-R', 800 ],
	\$out, \$err);
$h->finish;
is($h->result(0), 0, 'pgbench ran without errors') or diag($err);
my ($tps) = $out =~ /tps = ([\d.]+)/;
my ($txns) = $out =~ /number of transactions actually processed: (\d+)/;
diag(sprintf('pgbench: %d transactions, %.0f tps, 6 clients (rate-limited to 800 tps%s)',
	$txns // 0, $tps // 0,
	$broker->{real} ? ', on a real Kafka' : ': the mock keeps ~5 MiB per partition'));

ok(wait_relay_idle($node), 'relay caught up');
my $caught_up = time() - $t0;

# The database's truth.
my @table_ids = table_ids($node);
my @emitted_ids = split /\n/, $node->safe_psql('postgres',
	'SELECT id FROM emitted ORDER BY id');
my $seq_last = $node->safe_psql('postgres',
	q{SELECT last_value FROM pg_sequences WHERE schemaname = 'outbox' AND sequencename LIKE 'messages_id%'}
);
my $rolled_back_rows = $seq_last - scalar(@table_ids);
diag(sprintf('committed: %d table events, %d emitted; %d table rows rolled back',
	scalar(@table_ids), scalar(@emitted_ids), $rolled_back_rows));
cmp_ok(scalar(@table_ids), '>', 500, 'a substantial number of events committed');
cmp_ok($rolled_back_rows, '>', 100, 'a substantial number of rows rolled back');
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM outbox.messages WHERE (payload->>'rb')::boolean}),
	'0', 'no rolled-back event is in outbox.messages (the markers are right)');

my $expected = scalar(@table_ids) + scalar(@emitted_ids);
my $t1 = time();
# Everything is acknowledged already: read the topic until it is idle.
my @recs = consume($broker, $topic, idle_ms => 2000, timeout_ms => 60_000);
diag(sprintf('consumed %d records in %.1f s; relay caught up %.1f s after start',
	scalar(@recs), time() - $t1, $caught_up));

my $d = check_delivery(\@recs, \@table_ids);
is(scalar(@{ $d->{missing} }), 0, 'every committed table event arrived')
  or diag("missing ids: @{$d->{missing}}[0 .. 19]");
is(scalar(@{ $d->{unexpected} }), 0, 'no event that was not committed arrived')
  or diag("unexpected ids: @{$d->{unexpected}}[0 .. 19]");
is($d->{duplicates}, 0, 'no table event arrived twice');

my @emitted_recs = grep { !defined $_->{headers}{'outbox-id'} } @recs;
my (%eid, $rb_arrived);
for my $r (@recs)
{
	my $v = decode_json($r->{value});
	$rb_arrived++ if $v->{rb};
	$eid{ $v->{eid} }++ if defined $v->{eid};
}
ok(!$rb_arrived, 'no event of a rolled-back transaction or savepoint arrived')
  or diag("$rb_arrived rolled-back events arrived");
is(scalar(@emitted_recs), scalar(@emitted_ids),
	'as many emitted events arrived as were committed');
is(scalar(grep { ($eid{$_} // 0) == 1 } @emitted_ids), scalar(@emitted_ids),
	'every committed emitted event arrived exactly once');

my @problems = check_per_key_order(@recs);
is(scalar(@problems), 0, 'per key, events arrive in commit order')
  or diag(join("\n", @problems[ 0 .. 9 ]));

# The headers tell the truth: one commit LSN per xid (and vice versa), and
# the xid of the events outside subtransactions is their row's xmin.
my (%lsn_of_xid, %xid_of_lsn, $mixed);
for my $r (@recs)
{
	my ($x, $l) = @{ $r->{headers} }{qw(outbox-xid outbox-lsn)};
	$mixed++ if ($lsn_of_xid{$x} //= $l) ne $l or ($xid_of_lsn{$l} //= $x) ne $x;
}
ok(!$mixed, 'each transaction has exactly one commit LSN');
my %xmin = map { split /\|/ } split /\n/, $node->safe_psql('postgres',
	q{SELECT id, xmin FROM outbox.messages WHERE payload->>'n' IN ('1', '2')});
my $bad_xid = grep {
	my $id = $_->{headers}{'outbox-id'};
	defined $id && defined $xmin{$id} && $xmin{$id} ne $_->{headers}{'outbox-xid'}
} @recs;
is($bad_xid, 0, 'outbox-xid is the writing transaction\'s xid');

my $s = relay_status($node);
is($s->{state}, 'streaming', 'relay still streaming');
is($s->{in_flight}, 0, 'nothing in flight');
cmp_ok($s->{delivered}, '>=', $expected, 'relay_status counts every delivery');

$node->stop;
done_testing();
