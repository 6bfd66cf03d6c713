#!/usr/bin/perl
#
# writer.pl
#    The load writer of the end-to-end tests (OutboxTest::start_writer):
#    runs batches of transactions through psql until a stop file appears,
#    retrying when the server is gone, then writes "ok failed" to a result
#    file.  A program of its own, started with exec, so that nothing of the
#    test that started it (its END blocks, its copy of the TAP pipe, its
#    nodes) lives on in it; it exits when that test is gone.
#
#    writer.pl DIR CONNSTR TOPIC WRITER EVENTS KEYS PAUSE BATCH PREFIX EMIT
#
# test/e2e/writer.pl
#
use strict;
use warnings;

my ($dir, $connstr, $topic, $writer, $events, $keys, $pause, $batch,
	$prefix, $emit) = @ARGV;
die "usage: writer.pl DIR CONNSTR TOPIC WRITER EVENTS KEYS PAUSE BATCH PREFIX EMIT\n"
  unless defined $emit;

# The test that started us, as our parent: when it is gone, so are we (the
# kernel's parent-death signal was set before exec; this is the check for
# the window before it and for systems without it).
my $parent = getppid();

my ($ok, $failed, $seq) = (0, 0, 0);
my $sqlfile = "$dir/batch.sql";
while (!-e "$dir/stop")
{
	exit 3 if getppid() != $parent;
	my $sql = '';
	for (1 .. $batch)
	{
		$seq++;
		$sql .= "BEGIN;\n";
		for my $e (1 .. $events)
		{
			my $k = int(rand($keys));
			$sql .=
			  "SELECT outbox.enqueue('$topic', '$prefix-$k', '{\"w\": \"$writer\", \"seq\": $seq, \"e\": $e}');\n";
		}
		$sql .=
		  "SELECT outbox.emit('$topic', '$prefix-emitted', '{\"w\": \"$writer\", \"seq\": $seq, \"emitted\": true}');\n"
		  if $emit;
		$sql .= "COMMIT;\nSELECT pg_sleep($pause);\n";
	}

	# psql reads the batch from a file, not a pipe: a psql that exits at
	# once (server down) can never make the write fail.
	open my $fh, '>', $sqlfile or die "could not write $sqlfile: $!";
	print $fh $sql;
	close $fh or die "could not write $sqlfile: $!";
	my $rc = system('psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-o',
		'/dev/null', '-d', $connstr, '-f', $sqlfile);
	if ($rc == 0) { $ok++ }
	else
	{
		$failed++;
		select(undef, undef, undef, 0.2);
	}
}

open my $fh, '>', "$dir/result.tmp" or die "could not write result: $!";
print $fh "$ok $failed\n";
close $fh or die "could not write result: $!";
rename "$dir/result.tmp", "$dir/result" or die "could not write result: $!";
exit 0;
