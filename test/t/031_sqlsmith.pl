# Fuzz: sqlsmith sends random queries, built from every function, table and
# view it may use, as a role with every taskq role but taskq_admin, against a
# database with jobs in every state while the executors run.  The server must
# never crash nor fail an assertion; errors are what bad input should get.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;

my ($sqlsmith) = grep { -x } map { "$_/sqlsmith" } split /:/, $ENV{PATH};
plan skip_all => 'sqlsmith is not installed (scripts/deps.sh installs it)' unless $sqlsmith;

my $node = taskq_node('sqlsmith');
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE EXTENSION taskq;
CREATE ROLE fuzz LOGIN IN ROLE taskq_user, taskq_worker, taskq_monitor;
-- every random query is short: sqlsmith also calls taskq.wait and pg_sleep
ALTER ROLE fuzz SET statement_timeout = '2s';
ALTER ROLE fuzz SET lock_timeout = '1s';
CREATE FUNCTION ok_handler(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT payload $$;
CREATE FUNCTION bad_handler(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'bad'; END $$;
GRANT EXECUTE ON FUNCTION ok_handler(jsonb), bad_handler(jsonb) TO PUBLIC;
SELECT taskq.register_handler('ok', 'ok_handler(jsonb)');
SELECT taskq.register_handler('bad', 'bad_handler(jsonb)');
});
# jobs in every state, the fuzzing role's and another role's
sql(q{
SET ROLE fuzz;
SELECT taskq.submit('ok', '{"n": 1}') FROM generate_series(1, 20);
SELECT taskq.submit('bad', max_attempts => 1) FROM generate_series(1, 5);
SELECT taskq.submit('ext', queue => 'fuzz_q') FROM generate_series(1, 20);
SELECT count(*) FROM taskq.claim(ARRAY['fuzz_q'], 'fuzz worker', 5);
SELECT taskq.submit('ext', depends_on => ARRAY[(SELECT max(id) FROM taskq.jobs)]);
SELECT taskq.cancel((SELECT min(id) FROM taskq.jobs WHERE status = 'pending' AND NOT in_database));
SELECT taskq.submit('later', run_at => now() + interval '1 day', idempotency_key => 'k');
RESET ROLE;
CREATE ROLE other IN ROLE taskq_user;
SET ROLE other;
SELECT taskq.submit('ext', '{"secret": "other"}', queue => 'other_q') FROM generate_series(1, 5);
});
ok($node->poll_query_until('postgres',
	q{SELECT count(*) = 5 FROM taskq.jobs WHERE job_type = 'bad' AND status = 'failed'}),
	'jobs in every state');

my $started = sql('SELECT pg_postmaster_start_time()');
my $log_from = -s $node->logfile;
my $target = $node->connstr('postgres') . ' user=fuzz';
for my $seed (1, 2, 3)
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'timeout', '120', $sqlsmith, "--target=$target", "--seed=$seed",
			'--max-queries=3000', '--exclude-catalog' ],
		'>', \$out, '2>', \$err);
	my ($queries) = $err =~ /queries: (\d+)/;
	note("seed $seed: " . (split /\n/, $err)[-1] // '');
	is(sql('SELECT pg_postmaster_start_time()'), $started, "seed $seed: the server never restarted");
}
my $log = slurp_file($node->logfile, $log_from);
unlike($log, qr/(terminated by signal|TRAP:|was terminated|server process .* exited with exit code [^01])/,
	'no backend crashed and no assertion failed');
is(sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'taskq executor'}), '2',
	'the executors still run');
my $after = sql(q{SET ROLE other; SELECT taskq.submit('ok')});
is(sql("SELECT taskq.wait(ARRAY[$after], '60 s')"), 't', 'jobs still run');
is(sql(q{SELECT count(*) FROM taskq.jobs WHERE owner = 'other'::regrole AND queue = 'other_q' AND status = 'pending'}),
	'5', "the fuzzing role touched no other role's job");

$node->stop;
done_testing();
