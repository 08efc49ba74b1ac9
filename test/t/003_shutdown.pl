# Shutdown: a running job shorter than taskq.shutdown_grace finishes before
# the server stops; a longer one is interrupted at the end of the grace and
# given back (pending again, its attempt not counted), then runs after the
# restart.  The same holds for SIGTERM to one executor.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;
use Time::HiRes qw(time);

my $grace = 5;    # seconds

my $node = taskq_node('shutdown', 'taskq.batch_size' => '1', 'taskq.shutdown_grace' => "${grace}s");

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub job { return sql("SELECT $_[1] FROM taskq.jobs WHERE id = $_[0]"); }

sub wait_running
{
	my ($id) = @_;
	return $node->poll_query_until('postgres',
		"SELECT EXISTS (SELECT 1 FROM taskq.workers WHERE job_id = $id AND state = 'running')");
}

sql(q{
CREATE EXTENSION taskq;
CREATE TABLE done (job bigint PRIMARY KEY, at timestamptz);
CREATE TABLE nap_len (seconds float8);
INSERT INTO nap_len VALUES (300);

-- sleeps payload.sleep seconds, or nap_len's seconds when the payload has none
CREATE FUNCTION nap(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(coalesce((payload->>'sleep')::float8, (SELECT seconds FROM nap_len)));
    INSERT INTO done VALUES (taskq.current_job_id(), clock_timestamp());
END $$;
SELECT taskq.register_handler('nap', 'nap(jsonb)');
});

############################################################################
# Fast shutdown, job shorter than the grace: it finishes first.
############################################################################
my $short = sql("SELECT taskq.submit('nap', '{\"sleep\": 1}')");
ok(wait_running($short), 'the short job is running');
my $t0 = time();
$node->stop('fast');
my $took = time() - $t0;
note sprintf('fast shutdown took %.1fs', $took);
$node->start;
is(job($short, 'status'),   'succeeded', 'the short job succeeded');
is(job($short, 'attempts'), '1',         'in its first attempt');
is( sql(
		"SELECT finished_at < pg_postmaster_start_time() FROM taskq.jobs
		  WHERE id = $short AND status = 'succeeded'"),
	't', 'its success was recorded before the server stopped');
is(sql("SELECT count(*) FROM done WHERE job = $short"), '1', 'its effect is there once');
is( sql(
		"SELECT count(*) FROM taskq.job_logs WHERE job_id = $short AND error IS NOT NULL"),
	'0', 'it was not interrupted');

############################################################################
# Fast shutdown, job longer than the grace: interrupted and given back.
############################################################################
my $long = sql("SELECT taskq.submit('nap', queue => 'long')");
ok(wait_running($long), 'the long job is running');
# a paused queue keeps the given-back job from running again after the restart
sql("SELECT taskq.pause('long')");
$t0 = time();
$node->stop('fast');
$took = time() - $t0;
cmp_ok($took, '>=', $grace - 0.5, sprintf('the shutdown waited out the grace (%.1fs)', $took));
cmp_ok($took, '<', 60, 'but did not wait for the job');
$node->start;
is(job($long, 'status'), 'pending', 'the interrupted job is pending again');
is(job($long, 'attempts'), '0', 'its attempt was given back');
is(job($long, 'last_error'), 'interrupted by shutdown', 'with the reason');
is( sql(
		"SELECT count(*) FROM taskq.job_logs
		  WHERE job_id = $long AND error = 'interrupted by shutdown' AND status = 'pending'"),
	'1', 'the interruption is logged');
is(sql("SELECT count(*) FROM done WHERE job = $long"), '0', 'no effect of the interrupted run');
sql("UPDATE nap_len SET seconds = 0; SELECT taskq.resume('long')");
is(sql("SELECT taskq.wait('{$long}', '60 s')"), 't', 'the given-back job finished after the restart');
is(job($long, 'status'),   'succeeded', 'it succeeded');
is(job($long, 'attempts'), '1',         'with one counted attempt');
is(sql("SELECT count(*) FROM done WHERE job = $long"), '1', 'its effect is there once');

############################################################################
# SIGTERM to one executor: same rules, and the launcher replaces it.
############################################################################
sql("UPDATE nap_len SET seconds = 300");
my $term = sql("SELECT taskq.submit('nap', queue => 'long')");
ok(wait_running($term), 'a long job is running');
sql("SELECT taskq.pause('long')");
my $pid = sql("SELECT pid FROM taskq.workers WHERE job_id = $term");
is(sql("SELECT pg_terminate_backend($pid)"), 't', "SIGTERM to executor $pid");
ok( $node->poll_query_until(
		'postgres', "SELECT status FROM taskq.jobs WHERE id = $term", 'pending'),
	'after the grace the job is given back');
is(job($term, 'attempts'),   '0',                       'its attempt is not counted');
is(job($term, 'last_error'), 'interrupted by shutdown', 'with the reason');
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 2 AND bool_and(pid <> $pid) FROM taskq.workers WHERE kind = 'executor'"),
	'the launcher replaced the executor');
sql("UPDATE nap_len SET seconds = 0; SELECT taskq.resume('long')");
is(sql("SELECT taskq.wait('{$term}', '60 s')"), 't', 'the job finished');
is(job($term, 'status'), 'succeeded', 'and succeeded');
is(sql("SELECT count(*) FROM done WHERE job = $term"), '1', 'its effect is there once');

# SIGTERM with a short job: it completes before the executor exits.
my $short2 = sql("SELECT taskq.submit('nap', '{\"sleep\": 1}')");
ok(wait_running($short2), 'a short job is running');
$pid = sql("SELECT pid FROM taskq.workers WHERE job_id = $short2");
is(sql("SELECT pg_terminate_backend($pid)"), 't', "SIGTERM to executor $pid");
is(sql("SELECT taskq.wait('{$short2}', '60 s')"), 't', 'the short job finished');
is(job($short2, 'status') . ' ' . job($short2, 'attempts'),
	'succeeded 1', 'it succeeded in its first attempt');
ok( $node->poll_query_until(
		'postgres', "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $pid)"),
	'and the executor exited');

$node->stop;
done_testing();
