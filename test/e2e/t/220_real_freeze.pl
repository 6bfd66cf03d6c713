#
# 220_real_freeze.pl
#    Real 3-node Kafka only: freeze (SIGSTOP) the leader of the busiest
#    partition for 10 s while the relay streams, then resume it.  Nothing
#    lost, no per-key reorder; duplicates reported.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use Test::More;

real_fault_scenario(
	'freeze',
	sub {
		my ($c) = @_;
		my $dir = $c->{kafka}{dir};
		my $leader = kafka_sh('leader', $dir, $c->{topic}, $c->{busiest});
		diag("SIGSTOP node $leader, leader of partition $c->{busiest}, for 10 s");
		kafka_sh('freeze-node', $dir, $leader);
		sleep(10);
		kafka_sh('resume-node', $dir, $leader);
		# sends that timed out against the frozen leader are possibly persisted
		OutboxTest::note_librdkafka_defects($c->{node}, 4438);
	});

done_testing();
