#
# 165_inventory_example.pl
#    The demo's inventory service (examples/inventory/inventory.c) on a real
#    Apache Kafka, fed by the relay, without the relay's reply consumer:
#    - each order event gets one reply on the reply topic, keyed like the
#      order, {"db", "id", "source", "status", "detail"}: confirmed when there is
#      stock (and the stock is reserved), failed with the reason when there
#      is not, when the sku is unknown or when the payload is no order;
#    - a record without the outbox headers is skipped, not answered;
#    - --ignore-first ID processes the first delivery of ID but sends no
#      reply;
#    - a message delivered again (outbox.redeliver()) is answered with the
#      stored verdict: the same reply, nothing reserved twice;
#    - offsets are committed: after SIGTERM (exit status 0) and a restart in
#      the same group nothing is processed again, and new orders are;
#    - a message id answered before, from another installation (header
#      outbox-source), is a new message.
#    Needs a real cluster started by test/kafka/kafka.sh (suite e2e-kafka):
#    consumer groups are what the mock broker does poorly.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

my $k = kafka_cluster();
plan skip_all =>
  'needs a real Kafka started by test/kafka/kafka.sh (run_all.sh suite e2e-kafka)'
  unless $k;

my $inventory = "$FindBin::RealBin/../../../examples/inventory/inventory";
my $schema = "$FindBin::RealBin/../../../examples/inventory/schema.sql";
my $orders = unique_topic('inv_orders');
my $replies = unique_topic('inv_replies');
my $group = unique_topic('inventory');
my $broker = start_broker(topics => [ "$orders:3", "$replies:3" ]);
my $node = new_relay_node('inventory', $broker);
my @props = map { ('-X', $_) } grep { $_ ne '' } split /;/,
  ($ENV{OUTBOX_TEST_KAFKA_PROPERTIES} // '');

# The inventory service's database in the same cluster.
$node->safe_psql('postgres', 'CREATE DATABASE inventory');
$node->safe_psql('inventory', slurp_file($schema));
$node->safe_psql('inventory',
	q{INSERT INTO stock VALUES ('apple', 10), ('pear', 1), ('plum', 4)});

# Orders: [key, payload, expected status, expected detail].
my @orders = (
	[ 'alice', '{"event":"order_placed","order":1,"sku":"apple","qty":3}',
		'confirmed', 'sku apple: 3 reserved, 7 left' ],
	[ 'bob', '{"event":"order_placed","order":2,"sku":"pear","qty":3}',
		'failed', 'sku pear: 1 on hand, 3 ordered' ],
	[ 'carol', '{"event":"order_placed","order":3,"sku":"plum","qty":2}',
		'confirmed', 'sku plum: 2 reserved, 2 left' ],
	[ 'dave', '{"event":"order_placed","order":4,"qty":1}',
		'failed', 'order has no sku' ],
	[ 'erin', '{"event":"order_placed","order":5,"sku":"kiwi","qty":1}',
		'failed', 'sku kiwi: not stocked' ],);
my %want;
for my $o (@orders)
{
	my $id = $node->safe_psql('postgres',
		"SELECT outbox.enqueue('$orders', '$o->[0]', '$o->[1]')");
	$want{$id} = { key => $o->[0], status => $o->[2], detail => $o->[3] };
	$o->[4] = $id;
}
my $ignored = $orders[2][4];
ok(wait_relay_idle($node), 'relay published the orders');

# A record that is not an outbox message (no outbox-id, outbox-db headers).
my ($kout, $kerr) = ('', '');
IPC::Run::run([ 'kcat', '-P', '-b', $broker->{bootstrap}, '-t', $orders, '-k', 'zed', @props ],
	'<', \'{"event":"order_placed","order":99,"sku":"apple","qty":1}',
	'>', \$kout, '2>', \$kerr)
  or die "kcat failed: $kerr";

my $dir = PostgreSQL::Test::Utils::tempdir();
my $run = 0;
my @started;

# A test that dies half-way leaves no service running.
END
{
	local $?;
	for my $h (@started)
	{
		$h->kill_kill if $h->pumpable;
	}
}

# Start the service; returns [handle, stdout file, stderr file].
sub start_inventory
{
	my (@extra) = @_;
	$run++;
	my @cmd = ($inventory, '--brokers', $broker->{bootstrap}, '--topic', $orders,
		'--reply-topic', $replies, '--group', $group,
		'--conninfo', $node->connstr('inventory'), @props, @extra);
	my $h = IPC::Run::start(\@cmd, '<', \undef, '>', "$dir/out$run",
		'2>', "$dir/err$run");
	push @started, $h;
	return [ $h, "$dir/out$run", "$dir/err$run" ];
}

sub stop_inventory
{
	my ($inv) = @_;
	$inv->[0]->signal('TERM');
	$inv->[0]->finish;
	return ($inv->[0]->full_results)[0];
}

# Lines of the service's stdout that report a verdict.
sub verdicts
{
	my ($inv) = @_;
	return grep { /^inventory: \S+ order \S+: (confirmed|failed)/ }
	  split /\n/, slurp_file($inv->[1]);
}

# The replies so far, by outbox id: lists of {key, value (decoded), raw}.
sub replies
{
	my %r;
	for my $rec (consume($broker, $replies, idle_ms => 1500, timeout_ms => 60_000))
	{
		my $v = decode_json($rec->{value});
		push @{ $r{ $v->{id} } }, { key => $rec->{key}, value => $v,
			raw => $rec->{value} };
	}
	return %r;
}

sub stock
{
	return $node->safe_psql('inventory',
		q{SELECT string_agg(sku || '=' || on_hand, ' ' ORDER BY sku) FROM stock});
}

# The installation the replies answer ("source", from header outbox-source).
my $installation = $node->safe_psql('postgres',
	'SELECT installation_id FROM outbox.source');

# 1. First deliveries.
my $inv = start_inventory('--ignore-first', $ignored);
ok(wait_for(sub { scalar(verdicts($inv)) >= 5 }, 90),
	'the service processed the five orders')
  or diag(slurp_file($inv->[1]) . slurp_file($inv->[2]));
ok(wait_for(sub { slurp_file($inv->[2]) =~ /no valid outbox-id and outbox-db headers/ }, 30),
	'the record without outbox headers was reported');
my %r = replies();
is_deeply([ sort { $a <=> $b } keys %r ],
	[ sort { $a <=> $b } grep { $_ != $ignored } keys %want ],
	'one reply per order, none for the --ignore-first id (nor the headerless record)');
for my $id (sort { $a <=> $b } keys %r)
{
	my $w = $want{$id};
	is(scalar(@{ $r{$id} }), 1, "id $id: one reply");
	is($r{$id}[0]{key}, $w->{key}, "id $id: keyed like the order");
	is_deeply($r{$id}[0]{value},
		{ db => 'postgres', id => $id + 0, source => $installation,
			status => $w->{status}, detail => $w->{detail} },
		"id $id: $w->{status}, $w->{detail}");
}
is(stock(), 'apple=7 pear=1 plum=2', 'stock reserved for the two confirmed orders');
is($node->safe_psql('inventory', 'SELECT count(*) FROM processed'), '5',
	'five verdicts stored');
like(slurp_file($inv->[1]), qr/order 3: confirmed .*reply dropped \(--ignore-first\)/,
	'the dropped reply is logged');

# 2. Everything delivered again: the stored verdicts answer.
is($node->safe_psql('postgres', q{SELECT outbox.redeliver('0', 10)}), '5',
	'outbox.redeliver() re-published the five messages');
ok(wait_for(sub { scalar(verdicts($inv)) >= 10 }, 90),
	'the service processed the five redeliveries')
  or diag(slurp_file($inv->[1]) . slurp_file($inv->[2]));
is(scalar(grep { /delivered again: the stored verdict/ } verdicts($inv)), 5,
	'each answered from its stored verdict');
my %r2 = replies();
is_deeply([ sort { $a <=> $b } keys %r2 ], [ sort { $a <=> $b } keys %want ],
	'now every order has a reply, the --ignore-first one too');
for my $id (sort { $a <=> $b } keys %r2)
{
	my @values = map { $_->{raw} } @{ $r2{$id} };
	is(scalar(@values), $id == $ignored ? 1 : 2, "id $id: replies after redelivery");
	is(scalar(grep { $_ eq $values[0] } @values), scalar(@values),
		"id $id: the same reply each time");
	is($r2{$id}[0]{value}{status}, $want{$id}{status}, "id $id: $want{$id}{status}");
}
is(stock(), 'apple=7 pear=1 plum=2', 'nothing reserved twice');
is(stop_inventory($inv), 0, 'SIGTERM: exit status 0, no signal');
like(slurp_file($inv->[1]), qr/^inventory: stopped: replies sent 3 confirmed, 6 failed \(5 of them stored verdicts\); 1 dropped \(--ignore-first\), 1 records skipped$/m,
	'the closing line counts the replies');

# 3. A restart in the same group resumes after the committed offsets.
my $inv2 = start_inventory();
my $new = $node->safe_psql('postgres',
	qq{SELECT outbox.enqueue('$orders', 'frank', '{"event":"order_placed","order":6,"sku":"apple","qty":7}')});
ok(wait_for(sub { scalar(verdicts($inv2)) >= 1 }, 90),
	'the restarted service processed the new order')
  or diag(slurp_file($inv2->[1]) . slurp_file($inv2->[2]));
sleep 2;
my @v = verdicts($inv2);
is(scalar(@v), 1, 'and nothing else: the offsets were committed');
like($v[0], qr{^inventory: postgres/$new order 6: confirmed \(sku apple: 7 reserved, 0 left\)$},
	'the new order is confirmed');

# 4. The id of an answered message, from another installation (header
# outbox-source; after DROP and CREATE EXTENSION ids start at 1 again): a
# new message, not the stored verdict.
my $first = $orders[0][4];
my $source = $node->safe_psql('postgres',
	'SELECT installation_id FROM outbox.source');
my $other = '00000000-0000-4000-8000-000000000001';
isnt($source, $other, 'the installation has another identity');
IPC::Run::run([ 'kcat', '-P', '-b', $broker->{bootstrap}, '-t', $orders, '-k', 'gina',
		'-H', "outbox-id=$first", '-H', 'outbox-db=postgres',
		'-H', "outbox-source=$other", @props ],
	'<', \'{"event":"order_placed","order":7,"sku":"plum","qty":1}',
	'>', \$kout, '2>', \$kerr)
  or die "kcat failed: $kerr";
ok(wait_for(sub { scalar(verdicts($inv2)) >= 2 }, 90),
	'the service processed the message of the other installation')
  or diag(slurp_file($inv2->[1]) . slurp_file($inv2->[2]));
like((verdicts($inv2))[1],
	qr{^inventory: postgres/$first order 7: confirmed \(sku plum: 1 reserved, 1 left\)$},
	'as a new message');
is($node->safe_psql('inventory',
		"SELECT source FROM processed WHERE db = 'postgres' AND outbox_id = $first"),
	$other, 'its verdict replaced the earlier installation\'s');

my %r3 = replies();
is(scalar(map { @$_ } values %r3), 11, 'eleven replies in all');
is(stock(), 'apple=0 pear=1 plum=1', 'stock after the new orders');
is(stop_inventory($inv2), 0, 'second SIGTERM: exit status 0, no signal');

$node->stop;
done_testing();
