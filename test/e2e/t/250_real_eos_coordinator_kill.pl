#
# 250_real_eos_coordinator_kill.pl
#    Real 3-node Kafka only: outbox.delivery = exactly_once, and SIGKILL of
#    the broker that is the transaction coordinator of the relay's
#    transactional.id (the leader of its __transaction_state partition)
#    while the relay streams; the node is started again once another broker
#    took over.  A read_committed consumer sees nothing lost, nothing
#    duplicated, no per-key reorder.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use Test::More;
use Time::HiRes qw(time);

# The coordinator of a transactional.id, from Kafka's own admin tool.
sub coordinator
{
	my ($dir, $txn_id) = @_;
	my $bootstrap = PostgreSQL::Test::Utils::slurp_file("$dir/bootstrap");
	chomp $bootstrap;
	my $out = eval {
		kafka_sh('run-class', 'org.apache.kafka.tools.TransactionsCommand',
			'--bootstrap-server', $bootstrap, 'describe',
			'--transactional-id', $txn_id);
	} // '';
	for my $line (split /\n/, $out)
	{
		return $1 if $line =~ /^\s*(\d+)\s+\Q$txn_id\E\s/;
	}
	return undef;
}

real_fault_scenario(
	'eos_coordinator_kill',
	sub {
		my ($c) = @_;
		my $dir = $c->{kafka}{dir};
		my $node = $c->{node};
		my $txn_id = $node->safe_psql('postgres',
			q{SELECT 'outbox:' || system_identifier || ':' || d.oid || ':' || s.slot_name
			           || ':' || outbox._incarnation()
			    FROM pg_control_system(), outbox.relay_status s
			    JOIN pg_database d ON d.datname = s.database});
		my $coord = coordinator($dir, $txn_id);
		ok(defined $coord, "the coordinator of $txn_id is known")
		  or return;
		diag("SIGKILL node $coord, transaction coordinator of $txn_id");
		kafka_sh('kill-node', $dir, $coord);
		my $t0 = time();
		my $new;
		ok( wait_for(
				sub {
					$new = coordinator($dir, $txn_id);
					defined $new && $new != $coord;
				},
				180),
			'another broker became the coordinator');
		diag(sprintf('new coordinator %s after %.1f s', $new // '?', time() - $t0));
		sleep(3);
		kafka_sh('start-node', $dir, $coord);
		# possibly persisted sends, and the lookup of the new coordinator
		OutboxTest::note_librdkafka_defects($c->{node}, 4438, 4970);
	},
	exactly_once => 1);

done_testing();
