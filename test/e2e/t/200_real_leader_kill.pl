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
use Time::HiRes qw(time);

real_fault_scenario(
	'leader_kill',
	sub {
		my ($c) = @_;
		my $dir = $c->{kafka}{dir};
		my $leader = kafka_sh('leader', $dir, $c->{topic}, $c->{busiest});
		diag("SIGKILL node $leader, leader of partition $c->{busiest}");
		kafka_sh('kill-node', $dir, $leader);
		# the controller fences the dead broker when its session times out
		# (broker.session.timeout.ms, 9 s by default), then moves leadership
		my $t0 = time();
		my $new;
		ok( wait_for(
				sub {
					$new = eval { kafka_sh('leader', $dir, $c->{topic}, $c->{busiest}) };
					defined $new && $new =~ /^\d+$/ && $new != $leader;
				},
				60),
			"partition $c->{busiest} got a new leader");
		diag(sprintf('new leader %s after %.1f s', $new // '?', time() - $t0));
		sleep(3);
		kafka_sh('start-node', $dir, $leader);
		# in-flight sends to the killed leader are possibly persisted
		OutboxTest::note_librdkafka_defects($c->{node}, 4438);
	});

done_testing();
