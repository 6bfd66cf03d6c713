#
# test/packaging.pl
#    Packaging checks: META.json is valid PGXN metadata (spec 1.0.0) and
#    carries the version of outbox.control; the control file, install script
#    and upgrade scripts form a chain the Makefile installs.
#
use strict;
use warnings;

use FindBin;
use JSON::PP;
use Test::More;

my $root = "$FindBin::RealBin/..";

sub slurp
{
	my ($f) = @_;
	open(my $fh, '<', "$root/$f") or die "$f: $!";
	local $/;
	return <$fh>;
}

my $control = slurp('outbox.control');
my ($version) = $control =~ /^default_version\s*=\s*'([^']+)'/m;
ok(defined $version, "outbox.control has a default_version");
like($control, qr/^module_pathname\s*=\s*'\$libdir\/outbox'/m,
	'module_pathname is $libdir/outbox');
like($control, qr/^relocatable\s*=\s*false/m, 'not relocatable');

my $meta = eval { decode_json(slurp('META.json')) };
ok($meta, 'META.json is valid JSON') or diag($@);
for my $k (qw(name abstract version maintainer license provides meta-spec))
{
	ok(exists $meta->{$k}, "META.json has required key $k");
}
is($meta->{name}, 'outbox', 'distribution name');
is($meta->{'meta-spec'}{version}, '1.0.0', 'PGXN meta spec 1.0.0');
is($meta->{version}, $version, 'META.json version equals outbox.control');
is($meta->{provides}{outbox}{version}, $version,
	'provided extension version equals outbox.control');
like($meta->{version}, qr/^\d+\.\d+\.\d+$/, 'semantic version');
ok(-f "$root/$meta->{provides}{outbox}{file}", 'provided file exists');
ok(-f "$root/$meta->{provides}{outbox}{docfile}", 'doc file exists');

# Every upgrade script is listed in the Makefile and starts with the guard.
my $makefile = slurp('Makefile');
my ($upgrades) = $makefile =~ /^UPGRADE_SCRIPTS\s*=(.*)$/m;
for my $script (split ' ', $upgrades // '')
{
	ok(-f "$root/$script", "$script exists");
	like(slurp($script), qr/^\\echo Use "ALTER EXTENSION outbox UPDATE TO/m,
		"$script starts with the ALTER EXTENSION guard");
}
like(slurp('src/sql/outbox.sql'),
	qr/^\\echo Use "CREATE EXTENSION outbox" to load this file\. \\quit/m,
	'install script has the CREATE EXTENSION guard');

done_testing();
