#
# 015_forged_messages.pl
#    Only the extension's own functions can cause a record in Kafka.  A role
#    with no outbox grant (not even USAGE on the schema) writes "outbox"
#    logical messages by hand, as JSON and in the binary encoding with a
#    forged outbox-id, and owns a captured table whose column type has a
#    cast to json that tries to make it a superuser.  Kafka gets nothing
#    forged; granted emit() and the capture still work.
#
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OutboxTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $payments = unique_topic('payments');
my $rows = unique_topic('rows');
my $broker = start_broker(topics => ["$payments:4", "$rows:2"]);
my $node = new_relay_node('forged', $broker);

$node->safe_psql(
	'postgres', qq{
CREATE ROLE tenant LOGIN;
CREATE ROLE app LOGIN;
GRANT USAGE ON SCHEMA outbox TO app;
GRANT EXECUTE ON FUNCTION outbox.emit(text, text, jsonb, jsonb) TO app;
GRANT CREATE ON SCHEMA public TO tenant;
});
$node->safe_psql('postgres', q{
CREATE TABLE public.tenant_rows (id int PRIMARY KEY);
CREATE TABLE public.tenant_log (who name, super boolean);
}, extra_params => [ '-U', 'tenant' ]);
$node->safe_psql('postgres', "SELECT outbox.capture('public.tenant_rows', '$rows')");

# The forgeries, in one transaction and in separate ones.
my ($ret, $out, $err) = $node->psql(
	'postgres', qq{
BEGIN;
SELECT pg_logical_emit_message(true, 'outbox',
    '{"topic": "$payments", "key": "acct-1", "payload": {"credit": 1000000}}');
SELECT pg_logical_emit_message(true, 'outbox',
    '\\x4f01'::bytea || int8send(999) || '\\x01'::bytea || int4send(1) ||
    int4send(length('$payments')) || convert_to('$payments', 'UTF8') ||
    int4send(6) || 'acct-1'::bytea || int4send(-1) || int4send(-1));
COMMIT;
SELECT pg_logical_emit_message(true, 'outbox',
    '\\x4f02'::bytea || int8send(999) || '\\x01'::bytea || int4send(1) ||
    int4send(length('$payments')) || convert_to('$payments', 'UTF8') ||
    int4send(6) || 'acct-1'::bytea || int4send(-1) || int4send(-1) ||
    decode(repeat('ab', 32), 'hex'));
SELECT has_schema_privilege('outbox', 'USAGE');
},
	extra_params => [ '-U', 'tenant' ]);
is($ret, 0, 'the tenant could write its messages');
like($out, qr/\nf$/, 'the tenant has no USAGE on schema outbox');

# The capture escalation.
$node->safe_psql('postgres', q{
CREATE TYPE public.mood AS ENUM ('sly');
CREATE FUNCTION public.mood_json(public.mood) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.tenant_log
    SELECT current_user, r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user;
    BEGIN
        EXECUTE 'ALTER ROLE tenant SUPERUSER';
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
    RETURN '"mood"'::json;
END $$;
CREATE CAST (public.mood AS json) WITH FUNCTION public.mood_json(public.mood);
ALTER TABLE public.tenant_rows ADD COLUMN m public.mood;
INSERT INTO public.tenant_rows VALUES (1, 'sly');
}, extra_params => [ '-U', 'tenant' ]);
is($node->safe_psql('postgres', 'SELECT who || \' \' || super FROM public.tenant_log'),
	'tenant false', 'the cast ran as the tenant');
is($node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'tenant'"),
	'f', 'the tenant did not become a superuser');

# The genuine event, last.
$node->safe_psql('postgres',
	"SELECT outbox.emit('$payments', 'acct-1', '{\"credit\": 5}')",
	extra_params => [ '-U', 'app' ]);
ok(wait_relay_idle($node), 'relay caught up');

my @recs = consume($broker, $payments);
is(scalar(@recs), 1, 'exactly one record on the payments topic');
is($recs[0]{value}, '{"credit":5}', 'it is the granted emit()');
ok(!defined $recs[0]{headers}{'outbox-id'}, 'it carries no outbox-id');
my @captured = consume($broker, $rows);
is(scalar(@captured), 1, 'the captured row was still published');
like($captured[0]{value}, qr/"m":"mood"/, 'with the cast rendering of the column');

my $log = slurp_file($node->logfile);
my $warnings = () = $log =~ /skipping outbox message not written by the outbox extension/g;
ok($warnings >= 3, "each forged message was reported ($warnings warnings)");

done_testing();
