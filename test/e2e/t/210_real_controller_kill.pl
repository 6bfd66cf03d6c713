#
# 210_real_controller_kill.pl
#    Real 3-node Kafka only: SIGKILL the active KRaft controller while the
#    relay streams, restart it 5 s later.  Nothing lost, no per-key
#    reorder; duplicates reported.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use Test::More;

real_fault_scenario(
	'controller_kill',
	sub {
		my ($c) = @_;
		my $dir = $c->{kafka}{dir};
		my $ctl = kafka_sh('controller', $dir);
		like($ctl, qr/^\d+$/, "active controller is node $ctl");
		kafka_sh('kill-node', $dir, $ctl);
		sleep(5);
		kafka_sh('start-node', $dir, $ctl);
	});

done_testing();
