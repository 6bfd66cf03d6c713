#
# 097_kafka_properties.pl
#    outbox.kafka_properties: a value may carry ';' escaped as '\;' (and a
#    backslash as '\\'), and no property value, nor any fragment of the
#    setting, ever shows in the log or in relay_status: an invalid property
#    is reported by its name only.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $topic = unique_topic('props');
my $broker = start_broker(topics => ["$topic:3"]);
my $node = new_relay_node('props', $broker);

sub set_props
{
	my ($value) = @_;
	$node->safe_psql('postgres',
		"ALTER SYSTEM SET outbox.kafka_properties = '$value'; SELECT pg_reload_conf();");
}

# No secret may appear in the server log or in the status view.  The test
# node logs every statement, and PostgreSQL itself logs a changed setting's
# new value at reload ("parameter ... changed to"; see docs/relay.md): those
# lines are not the relay's and are left out.
sub no_leak
{
	my ($pos, $secret, $what) = @_;
	my $log = join("\n",
		grep { !/statement: |parameter "outbox\.kafka_properties" changed to/ }
		  split /\n/, log_since($node, $pos));
	my $s = relay_status($node);
	unlike($log, qr/\Q$secret\E/, "$what: the log does not show it");
	unlike($s->{last_error} // '', qr/\Q$secret\E/,
		"$what: last_error does not show it");
}

# ---------------------------------------------------------------------
# (a) A password with ';' in it, escaped: the relay accepts the setting and
# streams (sasl.password is unused with PLAINTEXT, but must parse).
# ---------------------------------------------------------------------
my $pos = log_position($node);
set_props('sasl.password=s3cr3t\;p4rt2;client.id=outbox\\\\relay');
is($node->safe_psql('postgres', 'SHOW outbox.kafka_properties'),
	'sasl.password=s3cr3t\;p4rt2;client.id=outbox\\\\relay',
	'the setting holds the escapes');
my $id = $node->safe_psql('postgres',
	"SELECT outbox.enqueue('$topic', 'k', '{\"n\": 1}')");
ok(wait_relay_idle($node, 30), 'relay streams with an escaped ";" in a value');
is(relay_status($node)->{state}, 'streaming', 'state streaming');
my @got = map { $_->{headers}{'outbox-id'} } consume($broker, $topic, count => 1);
is_deeply(\@got, [$id], 'the event arrived');
no_leak($pos, 'p4rt2', 'the password');
no_leak($pos, 's3cr3t', 'the password');

# ---------------------------------------------------------------------
# (b) An invalid value: misconfigured, naming the property only.
# ---------------------------------------------------------------------
$pos = log_position($node);
set_props('acks=s3cr3tvalue');
my $s = wait_relay_state($node, 'misconfigured', 30);
like($s->{last_error}, qr/"acks"/, 'last_error names the property');
diag("last_error: $s->{last_error}");
no_leak($pos, 's3cr3tvalue', 'an invalid value');

# ---------------------------------------------------------------------
# (c) An unescaped ';' in a password: the fragment after it is not a
# name=value item; it is reported by position, never shown.
# ---------------------------------------------------------------------
$pos = log_position($node);
set_props('client.id=x;sasl.password=abc;fr4gment');
$s = wait_relay_state($node, 'misconfigured', 30);
ok(wait_for(sub { (relay_status($node)->{last_error} // '') =~ /item 3/ }, 30),
	'last_error says which item is malformed');
no_leak($pos, 'fr4gment', 'a fragment of a password');

# ---------------------------------------------------------------------
# (d) Fixed: the relay streams again.
# ---------------------------------------------------------------------
$node->safe_psql('postgres',
	'ALTER SYSTEM RESET outbox.kafka_properties; SELECT pg_reload_conf();');
wait_relay_state($node, 'streaming', 30);
ok(wait_relay_idle($node, 30), 'relay caught up after the fix');

$node->stop;
done_testing();
