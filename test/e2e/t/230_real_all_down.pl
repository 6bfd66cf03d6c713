#
# 230_real_all_down.pl
#    Real 3-node Kafka only: SIGKILL every node while the relay streams,
#    keep the cluster down for 30 s (writers go on), start all three again.
#    Nothing lost, no per-key reorder; duplicates reported.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use Test::More;

real_fault_scenario(
	'all_down',
	sub {
		my ($c) = @_;
		my $dir = $c->{kafka}{dir};
		kafka_sh('kill-node', $dir, 1, 2, 3);
		sleep(30);
		my $s = relay_status($c->{node});
		diag("after 30 s down: state $s->{state}, in flight $s->{in_flight}, last error: "
			  . ($s->{last_error} // ''));
		kafka_sh('start-node', $dir, 1, 2, 3);
		# in-flight sends of the killed cluster are possibly persisted
		OutboxTest::note_librdkafka_defects($c->{node}, 4438);
	});

done_testing();
