#
# 200_real_leader_kill.pl
#    Real 3-node Kafka only (RF 3, min.insync.replicas 2, acks all): SIGKILL
#    the leader of the busiest partition while the relay streams, restart it
#    5 s later.  Nothing lost, no per-key reorder; duplicates reported.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use Test::More;

real_fault_scenario(
	'leader_kill',
	sub {
		my ($c) = @_;
		my $dir = $c->{kafka}{dir};
		my $leader = kafka_sh('leader', $dir, $c->{topic}, $c->{busiest});
		diag("SIGKILL node $leader, leader of partition $c->{busiest}");
		kafka_sh('kill-node', $dir, $leader);
		sleep(5);
		my $new = kafka_sh('leader', $dir, $c->{topic}, $c->{busiest});
		isnt($new, $leader, "partition $c->{busiest} has a new leader ($new)");
		kafka_sh('start-node', $dir, $leader);
	});

done_testing();
