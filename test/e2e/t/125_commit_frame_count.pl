#
# 125_commit_frame_count.pl
#    The sink refuses a commit frame whose event count differs from the
#    events it received for that transaction (issue 6, point 16), checked by
#    the unit program test/unit/sink_check (built by make; see its header
#    for why it is a unit check and what it stands in for).  Without the
#    check, its refusals fail.
#
# test/e2e/t/125_commit_frame_count.pl
#
use strict;
use warnings;

use FindBin;
use IPC::Run;
use Test::More;

my $prog = "$FindBin::RealBin/../../unit/sink_check";
ok(-x $prog, 'test/unit/sink_check is built') or BAIL_OUT("$prog is missing: run make");

my ($out, $err) = ('', '');
my $ok = IPC::Run::run([$prog], '<', \undef, '>', \$out, '2>', \$err);
diag($err) if $err ne '';
ok($ok, 'sink_check exits 0');

my %line = map { /^(?:not )?ok \d+ - (.*)$/ ? ($1 => $_) : () } split /\n/, $out;
for my $what (
	'3 events and a commit frame counting 3: accepted',
	'the 3 events are in flight',
	'2 events and a commit frame counting 3: refused',
	'refused as data corrupted (XX001)',
	'the error names both counts',
	'4 events and a commit frame counting 1: refused')
{
	like($line{$what} // 'missing', qr/^ok /, $what);
}
like($out, qr/^# error: outbox relay received 2 events for the transaction committed at 0\/2000000, but its commit frame counts 3$/m,
	'the error as the relay reports it');
done_testing();
