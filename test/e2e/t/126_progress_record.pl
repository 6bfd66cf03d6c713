#
# 126_progress_record.pl
#    The exactly-once progress record's value (src/eos.c), checked by the
#    unit program test/unit/sink_check with the argument "progress": the
#    delivered set is written and read back, ranges included; a record
#    without it, or with only a list, is read; values a relay must not
#    trust (an id past 64 bits, a signed snapshot, an unsorted list) name
#    no transaction; a range ending at the largest id ends (the program
#    has 10 s); a set naming ids from the server's next one on is told
#    apart (issue 11, point 4).
#
# test/e2e/t/126_progress_record.pl
#
use strict;
use warnings;

use FindBin;
use IPC::Run;
use Test::More;

my $prog = "$FindBin::RealBin/../../unit/sink_check";
ok(-x $prog, 'test/unit/sink_check is built') or BAIL_OUT("$prog is missing: run make");

my ($out, $err) = ('', '');
my $ok = IPC::Run::run([ $prog, 'progress' ], '<', \undef, '>', \$out, '2>', \$err);
diag($err) if $err ne '';
ok($ok, 'sink_check progress exits 0');

my %line = map { /^(?:not )?ok \d+ - (.*)$/ ? ($1 => $_) : () } split /\n/, $out;
for my $what (
	'progress: the delivered set is written, consecutive ids as ranges',
	'progress: read back as written',
	'progress: in Kafka: below xmin, complete in the snapshot, or listed; nothing else',
	"progress: a set naming ids from the server's next one on is told apart",
	'progress: a record without the set is read, naming no transaction',
	'progress: a list without a snapshot is read',
	'progress: a range ending at the largest id ends',
	'progress: an id past 64 bits names nothing',
	'progress: a signed snapshot names nothing',
	'progress: an unsorted list makes the whole set name nothing',
	'progress: members nested in an object or quoted in a string are not read',
	'progress: a value whose commit_lsn is only nested is refused',
	'progress: a member given twice makes the value invalid',
	'progress: text after the object makes the value invalid',
	'progress: a version 1 value (no authentication) is not read',
	'progress: the code depends on the secret, the key and the whole value')
{
	like($line{$what} // 'missing', qr/^ok /, $what);
}
done_testing();
