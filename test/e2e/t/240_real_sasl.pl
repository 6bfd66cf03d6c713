#
# 240_real_sasl.pl
#    The relay streams to a SASL_SSL listener (SASL/PLAIN over TLS, a
#    throw-away CA made by test/kafka/kafka.sh) with its credentials in
#    outbox.kafka_config_file.  A wrong password gives a clear state and
#    error, no crash loop, and neither password appears in any log line,
#    relay_status column or error.  Real Kafka only (started with
#    --sasl-ssl, as the e2e-kafka suite does).
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Cwd qw(abs_path);
use Time::HiRes qw(sleep);

my $k = kafka_cluster();
plan skip_all => 'needs a real Kafka started by test/kafka/kafka.sh --sasl-ssl'
  unless $k && -r "$k->{dir}/bootstrap_sasl" && -r "$k->{dir}/client.properties";

my $sasl = slurp_file("$k->{dir}/bootstrap_sasl");
chomp $sasl;
my $props = slurp_file("$k->{dir}/client.properties");
my ($password) = $props =~ /^sasl\.password=(.+)$/m;
ok(defined $password && length($password) >= 8, 'the cluster has a SASL password');
my $wrong = 'not-' . reverse($password);

my $topic = unique_topic('sasl');
my $plain = start_broker(topics => ["$topic:2"]);	# topic made over PLAINTEXT

my $cfgdir = abs_path(PostgreSQL::Test::Utils::tempdir());
my $cfg = "$cfgdir/outbox-kafka.conf";
sub write_config
{
	my ($pw) = @_;
	(my $text = $props) =~ s/^sasl\.password=.*$/sasl.password=$pw/m;
	open(my $fh, '>', $cfg) or die "$cfg: $!";
	print $fh "# librdkafka settings of the relay\n$text";
	close $fh;
	chmod 0600, $cfg;
}
write_config($password);

my $node = new_relay_node('sasl', { bootstrap => $sasl, real => 1 },
	extra_conf => "outbox.kafka_config_file = '$cfg'\n");
my $pid = relay_pid($node);

$node->safe_psql('postgres', "SELECT outbox.enqueue('$topic', 'k', '{\"over\": \"sasl\"}')");
ok(wait_relay_idle($node, 60), 'the relay delivers over SASL_SSL');
my @recs = consume($plain, $topic);
is(scalar(@recs), 1, 'the record is in Kafka');

# A wrong password: a clear state and error, no restart, no secret shown.
write_config($wrong);
my $pos = log_position($node);
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
$node->safe_psql('postgres', "SELECT outbox.enqueue('$topic', 'k', '{\"after\": \"wrong\"}')");
ok(wait_for(sub {
	my $s = relay_status($node);
	$s->{state} eq 'kafka_unreachable' && ($s->{last_error} // '') =~ /auth|SASL/i }, 60),
	'a wrong password: state kafka_unreachable, last_error names the authentication failure');
my $s = relay_status($node);
diag("state $s->{state}, last_error: $s->{last_error}");
sleep(3);
is(relay_pid($node), $pid, 'no restart, no crash loop');

my $log = slurp_file($node->logfile);
unlike($log, qr/\Q$password\E/, 'the password is in no log line');
unlike($log, qr/\Q$wrong\E/, 'nor is the wrong one');
my $status = $node->safe_psql('postgres', 'SELECT row_to_json(s)::text FROM outbox.relay_status s');
unlike($status, qr/\Q$password\E|\Q$wrong\E/, 'nor any relay_status column');
my $settings = $node->safe_psql('postgres',
	q{SELECT string_agg(name || '=' || setting, ',') FROM pg_settings WHERE name LIKE 'outbox.%'});
unlike($settings, qr/\Q$password\E|\Q$wrong\E/, 'nor pg_settings (the file holds the secret)');

# Fixed: streaming again, the waiting event delivered.
write_config($password);
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok(wait_relay_idle($node, 90), 'streaming again with the right password');
@recs = consume($plain, $topic);
is(scalar(@recs), 2, 'the event written meanwhile is delivered');
is(relay_pid($node), $pid, 'still the same relay');

done_testing();
