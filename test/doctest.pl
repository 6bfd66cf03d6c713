#
# test/doctest.pl
#    Executable documentation: runs the marked code blocks of README.md and
#    docs/*.md, in document order, against a fresh PostgreSQL cluster and the
#    project's mock Kafka broker, and checks the outputs the documents show.
#    Prints TAP (one test per block); run it as root with prove.
#
#    A block runs only when an HTML comment (invisible on GitHub) marks it,
#    on the line before its opening fence:
#
#      <!-- doctest: sh [user=postgres] [retry=N] -->   a shell block, run by
#          bash -e as root (or as the postgres OS user) in a copy of the
#          source tree
#      <!-- doctest: psql DB [retry=N] -->   an SQL block, run by
#          psql -X -q -v ON_ERROR_STOP=1 -d DB as the postgres OS user
#      <!-- doctest: output -->   what the previous block printed (stdout
#          and stderr; psql's "psql:FILE:LINE: " prefixes removed).  "..."
#          in a line matches any text; a line that is just "..." matches any
#          number of lines.  Trailing blanks are ignored.
#      <!-- doctest: packages -->   an apt-get install line: every package
#          it names must be installed (test/lib.sh installs them; the test
#          never runs apt-get)
#      retry=N re-runs the block, once a second for up to N seconds, until it
#          succeeds and its output matches (for events on their way to Kafka)
#      at=end runs the block (and its output check) after all others, e.g.
#          one that removes the extension
#
#    Blocks run verbatim, except for these substitutions, which point the
#    documented commands at the test's own cluster and broker instead of a
#    machine's real ones:
#      "15 main", "15/main"   ->  the test cluster (created with
#                                 pg_createcluster, dropped at the end)
#      "localhost:9092"       ->  the mock broker's bootstrap servers
#    and PGCLUSTER names the test cluster for psql, createdb, pg_recvlogical
#    (Debian's pg_wrapper).
#
#    Environment: OUTBOX_DOCTEST_FILES (default "README.md docs/sql-api.md
#    docs/decoder.md"), PG_MAJOR (15).
#
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use POSIX ();
use Test::More;
use Time::HiRes qw(usleep time);

my $ROOT = abs_path(dirname(__FILE__) . '/..');
my $PG_MAJOR = $ENV{PG_MAJOR} // '15';
my @FILES = split ' ',
  ($ENV{OUTBOX_DOCTEST_FILES} // 'README.md docs/sql-api.md docs/decoder.md');

plan skip_all => 'run as root (the documents are written for root)' if $> != 0;

# ---------------------------------------------------------------------------
# Extract the marked blocks
# ---------------------------------------------------------------------------

# Returns a list of { file, line, kind, args, opts, text }.
sub extract
{
	my ($file) = @_;
	open(my $fh, '<', "$ROOT/$file") or die "$file: $!";
	my @lines = <$fh>;
	close $fh;
	my @blocks;
	my $marker;
	for (my $i = 0; $i < @lines; $i++)
	{
		my $l = $lines[$i];
		if ($l =~ /^\s*<!--\s*doctest:\s*(.*?)\s*-->\s*$/)
		{
			my @words = split ' ', $1;
			my $kind = shift @words;
			die "$file:" . ($i + 1) . ": unknown doctest marker '$kind'\n"
			  unless $kind =~ /^(sh|psql|output|packages)$/;
			my (%opts, @args);
			for (@words)
			{
				if (/^(\w+)=(.*)$/) { $opts{$1} = $2 }
				else { push @args, $_ }
			}
			$marker = { kind => $kind, args => \@args, opts => \%opts,
				marker_line => $i + 1 };
			next;
		}
		if ($l =~ /^(\s*)```/)
		{
			my $indent = length $1;
			my $start = $i + 1;
			my @body;
			for ($i++; $i < @lines && $lines[$i] !~ /^\s*```\s*$/; $i++)
			{
				push @body, substr($lines[$i], 0, $indent) =~ /^\s*$/
				  ? substr($lines[$i], $indent) : $lines[$i];
			}
			if ($marker)
			{
				die "$file:$marker->{marker_line}: a marker must be on the line before the block\n"
				  unless $marker->{marker_line} == $start - 1;
				push @blocks, { %$marker, file => $file, line => $start,
					text => join('', @body) };
			}
			undef $marker;
			next;
		}
		# a marker applies only to the block right after it
		die "$file:$marker->{marker_line}: marker not followed by a code block\n"
		  if $marker && $l !~ /^\s*$/;
	}
	die "$file: marker at the end of the file\n" if $marker;
	return @blocks;
}

# ---------------------------------------------------------------------------
# The test's cluster and broker
# ---------------------------------------------------------------------------

my $tmp = tempdir('outbox-doctest.XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $tmp;
my $cluster = "outbox_doctest_$$";
my ($cluster_made, $broker_pid, $bootstrap);

sub run_quiet
{
	my ($cmd) = @_;
	my $out = `$cmd 2>&1`;
	return ($? == 0, $out);
}

sub free_port
{
	for my $port (5440 .. 5540)
	{
		next if IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
			Proto => 'tcp');
		next if -e "/etc/postgresql/$PG_MAJOR" && `grep -rls "^port = $port\\b" /etc/postgresql/ 2>/dev/null` ne '';
		return $port;
	}
	die "no free port\n";
}

END
{
	my $status = $?;
	if ($cluster_made)
	{
		my $log = "/var/log/postgresql/postgresql-$PG_MAJOR-$cluster.log";
		if (!Test::More->builder->is_passing && -f $log)
		{
			diag("tail of $log:");
			diag(`tail -40 '$log'`);
		}
		system("pg_dropcluster --stop $PG_MAJOR $cluster >/dev/null 2>&1");
		# pg_dropcluster leaves files it did not create (conf.d/outbox.conf)
		system('rm', '-rf', "/etc/postgresql/$PG_MAJOR/$cluster");
	}
	if ($broker_pid)
	{
		kill 'TERM', $broker_pid;
		waitpid($broker_pid, 0);
	}
	$? = $status;
}

sub setup
{
	# the mock broker: the Quick start's "localhost:9092"
	$broker_pid = fork();
	die "fork: $!" unless defined $broker_pid;
	if ($broker_pid == 0)
	{
		open(STDOUT, '>', "$tmp/broker.out");
		open(STDERR, '>', "$tmp/broker.err");
		# dies with us (PR_SET_PDEATHSIG, SIGKILL); never runs our END
		# block (which drops the cluster) when exec fails
		syscall(eval { require 'syscall.ph'; &SYS_prctl() } // 157, 1, 9);
		exec("$ROOT/test/broker/kafka_mock_broker", '--brokers', '1',
			'--topic', 'orders:1', '--topic', 'orders.changes:1',
			'--bootstrap-file', "$tmp/bootstrap")
		  or print STDERR "exec: $!\n";
		POSIX::_exit(127);
	}
	my $deadline = time() + 20;
	usleep(50_000) while !-s "$tmp/bootstrap" && time() < $deadline;
	die "mock broker did not start\n" unless -s "$tmp/bootstrap";
	open(my $fh, '<', "$tmp/bootstrap") or die;
	chomp($bootstrap = <$fh>);

	# the fresh cluster: what installing postgresql-15 creates as 15/main
	my $port = free_port();
	my ($ok, $out) = run_quiet("pg_createcluster $PG_MAJOR $cluster -p $port");
	die "pg_createcluster failed:\n$out" unless $ok;
	$cluster_made = 1;
	($ok, $out) = run_quiet("pg_ctlcluster $PG_MAJOR $cluster start");
	die "cluster did not start:\n$out" unless $ok;
	$ENV{PGCLUSTER} = "$PG_MAJOR/$cluster";

	# a copy of the source tree to build in, without build products
	($ok, $out) = run_quiet("cd '$ROOT' && tar --exclude=./.git --exclude='*/tmp_check' "
		  . "--exclude=./results --exclude='*.o' --exclude='*.so' --exclude='*.bc' "
		  . "--exclude=./test/broker/kafka_mock_broker --exclude=./test/broker/kafka_consume "
		  . "-cf - . | (mkdir -p '$tmp/src' && cd '$tmp/src' && tar -xf -)");
	die "copying the source tree failed:\n$out" unless $ok;
}

sub substitute
{
	my ($text) = @_;
	$text =~ s{\b$PG_MAJOR main\b}{$PG_MAJOR $cluster}g;
	$text =~ s{\b$PG_MAJOR/main\b}{$PG_MAJOR/$cluster}g;
	$text =~ s{localhost:9092}{$bootstrap}g;
	return $text;
}

# ---------------------------------------------------------------------------
# Running blocks and comparing output
# ---------------------------------------------------------------------------

my $nscript = 0;

# Run one block; returns (ok, output).
sub run_block
{
	my ($b) = @_;
	my $file = sprintf('%s/block%03d', $tmp, ++$nscript);
	open(my $fh, '>', $file) or die "$file: $!";
	print $fh substitute($b->{text});
	close $fh;
	chmod 0644, $file;

	my $cmd;
	if ($b->{kind} eq 'sh')
	{
		my $as = ($b->{opts}{user} // 'root') eq 'root' ? ''
		  : "runuser -u $b->{opts}{user} -- ";
		$cmd = "cd '$tmp/src' && timeout 300 ${as}bash -e '$file'";
	}
	else
	{
		my $db = $b->{args}[0] // die "$b->{file}:$b->{line}: psql needs a database\n";
		$cmd = "cd '$tmp' && timeout 120 runuser -u postgres -- psql -X -q "
		  . "-v ON_ERROR_STOP=1 -d '$db' -f '$file'";
	}
	my $out = `$cmd 2>&1 </dev/null`;
	my $ok = $? == 0;
	$out =~ s/^psql:[^:\n]*:\d+: //mg;
	return ($ok, $out);
}

sub normalize
{
	my ($text) = @_;
	my @l = map { s/\s+$//r } split /\n/, $text, -1;
	pop @l while @l && $l[-1] eq '';
	return @l;
}

sub output_matches
{
	my ($expected, $actual) = @_;
	my $re = '';
	for my $l (normalize($expected))
	{
		if ($l eq '...')
		{
			$re .= '(?:[^\n]*\n)*?';
			next;
		}
		$re .= join('.*?', map { quotemeta } split(/\.\.\./, $l, -1)) . '\n';
	}
	my $text = join('', map { "$_\n" } normalize($actual));
	return $text =~ /\A$re\z/s;
}

sub check_packages
{
	my ($b) = @_;
	my @missing;
	for my $line (split /\n/, $b->{text})
	{
		next unless $line =~ /\bapt-get\s+install\b(.*)$/;
		for my $p (split ' ', $1)
		{
			next if $p =~ /^-/;
			my $st = `dpkg-query -W -f='\${Status}' '$p' 2>/dev/null`;
			push @missing, $p unless $st =~ /install ok installed/;
		}
	}
	return @missing;
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

# Pair every block with the output block after it; at=end ones go last.
my @blocks = map { extract($_) } @FILES;
my (@steps, @last);
for (my $i = 0; $i < @blocks; $i++)
{
	my $b = $blocks[$i];
	die "$b->{file}:$b->{line}: an output block must follow a block that runs\n"
	  if $b->{kind} eq 'output';
	my $expect = ($i + 1 < @blocks && $blocks[$i + 1]{kind} eq 'output')
	  ? $blocks[++$i] : undef;
	push @{ ($b->{opts}{at} // '') eq 'end' ? \@last : \@steps }, [ $b, $expect ];
}
push @steps, @last;
ok(scalar(@steps) > 0, 'the documents have marked blocks');
setup();

for my $step (@steps)
{
	my ($b, $expect) = @$step;
	my $where = "$b->{file}:$b->{line}";
	if ($b->{kind} eq 'packages')
	{
		my @missing = check_packages($b);
		ok(!@missing, "$where: the packages it installs are installed")
		  or diag("not installed: @missing");
		next;
	}
	my $deadline = time() + ($b->{opts}{retry} // 0);
	my ($ok, $out, $matches);
	for (;;)
	{
		($ok, $out) = run_block($b);
		$matches = !$expect || output_matches($expect->{text}, $out);
		last if ($ok && $matches) || time() >= $deadline;
		sleep 1;
	}
	ok($ok, "$where: $b->{kind} block runs")
	  or diag("output:\n$out");
	if ($expect)
	{
		ok($matches, "$expect->{file}:$expect->{line}: output as shown")
		  or diag("expected:\n$expect->{text}\ngot:\n$out");
	}
	# a failed step leaves the rest of a walk-through meaningless
	BAIL_OUT("$where failed") unless $ok;
}

done_testing();
