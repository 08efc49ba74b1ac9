# Crashes: kill -9 of an executor mid-job, a handler that kills its own
# backend every time, and an immediate shutdown in the middle of 10,000 jobs.
# No job is lost, none runs its effect twice, none crash-loops.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;

my $node = taskq_node('crash_recovery', 'taskq.backoff_base' => '100ms', restart_after_crash => 'on');

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub job { return sql("SELECT $_[1] FROM taskq.jobs WHERE id = $_[0]"); }

# Count the crash-restarts the postmaster logged so far.
sub crashes
{
	my $log = slurp_file($node->logfile);
	my @hits = ($log =~ /all server processes terminated; reinitializing/g);
	return scalar(@hits);
}

sql(q{
CREATE EXTENSION taskq;
CREATE TABLE done (job bigint PRIMARY KEY);

-- Sleeps through its first attempt (to be killed there), then records itself.
CREATE FUNCTION slow_first(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF taskq.current_attempt() = 1 THEN
        PERFORM pg_sleep(300);
    END IF;
    INSERT INTO done VALUES (taskq.current_job_id());
END $$;
SELECT taskq.register_handler('slow_first', 'slow_first(jsonb)');

-- Kills its own backend with SIGKILL: the shell's parent is the backend.
CREATE FUNCTION suicide(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    COPY (SELECT 1) TO PROGRAM 'kill -9 $PPID';
    INSERT INTO done VALUES (taskq.current_job_id());
END $$;
SELECT taskq.register_handler('suicide', 'suicide(jsonb)');

CREATE FUNCTION record_once(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO done VALUES (taskq.current_job_id())
$$;
SELECT taskq.register_handler('record_once', 'record_once(jsonb)');
});

############################################################################
# kill -9 of an executor in the middle of a job.
############################################################################
my $victim = sql("SELECT taskq.submit('slow_first', max_attempts => 3)");
ok( $node->poll_query_until(
		'postgres',
		"SELECT EXISTS (SELECT 1 FROM taskq.workers
		                 WHERE job_id = $victim AND state = 'running')"),
	'the job is running in an executor');
my $exec_pid = sql(
	"SELECT pid FROM taskq.workers WHERE job_id = $victim AND state = 'running'");
is( sql(
		"SELECT backend_type FROM pg_stat_activity WHERE pid = $exec_pid"),
	'taskq executor', 'found the executor process');
my $crashes_before = crashes();
ok(kill(9, $exec_pid), "kill -9 executor $exec_pid");

ok( $node->poll_query_until(
		'postgres', "SELECT status FROM taskq.jobs WHERE id = $victim", 'succeeded'),
	'after the crash-restart the job is retried and succeeds');
cmp_ok(crashes(), '>', $crashes_before, 'the postmaster did a crash-restart');
is(job($victim, 'attempts'), '2', 'the killed attempt was counted');
is( sql(
		"SELECT string_agg(status || ':' || message || ':'
		                   || CASE WHEN error LIKE 'executor % died while running the job'
		                           THEN 'died' ELSE coalesce(error, '-') END, ',' ORDER BY id)
		   FROM taskq.job_logs WHERE job_id = $victim"),
	'failed:attempt failed:died,pending:retry scheduled:-',
	'the orphaned job went back to pending, the failed attempt and its reason logged');
is(sql("SELECT count(*) FROM done WHERE job = $victim"),
	'1', 'its effect exists exactly once');

############################################################################
# A handler that kills its backend every time ends in the dead-letter queue.
############################################################################
$crashes_before = crashes();
# Due a second later: a job woken at once could crash the server before the
# submit's own COMMIT returned, taking the test's session with it (the
# polls below retry through each crash-restart).
my $killer = sql("SELECT taskq.submit('suicide', max_attempts => 3,
                                      run_at => clock_timestamp() + interval '1 second')");
ok( $node->poll_query_until(
		'postgres', "SELECT status FROM taskq.jobs WHERE id = $killer", 'failed'),
	'the self-killing job ends failed');
is(job($killer, 'attempts'), '3', 'after max_attempts attempts');
like(job($killer, 'last_error'), qr/died while running the job/,
	'the last error says the executor died');
is(sql("SELECT count(*) FROM taskq.dead_letter_queue WHERE id = $killer"),
	'1', 'it is in the dead-letter queue');
is( sql(
		"SELECT count(*) FROM taskq.job_logs
		  WHERE job_id = $killer AND message LIKE 'attempt failed%' AND details ? 'started_at'"),
	'3', 'it was started exactly max_attempts times, each attempt logged with its start');
is(crashes() - $crashes_before, 3, 'one crash-restart per attempt, no more');
is(sql("SELECT count(*) FROM done WHERE job = $killer"), '0', 'it never completed');

my $healthy = sql("SELECT taskq.submit('record_once')");
ok( $node->poll_query_until(
		'postgres', "SELECT status FROM taskq.jobs WHERE id = $healthy", 'succeeded'),
	'executors keep working after the crash loop was broken');

############################################################################
# Immediate shutdown in the middle of 10,000 jobs.
############################################################################
my $n = 10000;
sql("TRUNCATE done");
is( sql(
		"SELECT count(taskq.submit('record_once', jsonb_build_object('n', g), queue => 'bulk'))
		   FROM generate_series(1, $n) g"),
	$n, "submitted $n jobs");
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) >= 500 FROM taskq.jobs WHERE queue = 'bulk' AND status = 'succeeded'"),
	'the executors are working through them');
my $done_before = sql(
	"SELECT count(*) FROM taskq.jobs WHERE queue = 'bulk' AND status = 'succeeded'");
$node->stop('immediate');
cmp_ok($done_before, '<', $n, "stopped in the middle ($done_before of $n done)");
$node->start;

ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 0 FROM taskq.jobs
		  WHERE queue = 'bulk' AND status IN ('blocked', 'pending', 'running')"),
	'after the restart every job finished');
is( sql(
		"SELECT count(*) FROM taskq.jobs WHERE queue = 'bulk' AND status = 'succeeded'"),
	$n, 'every job succeeded');
is(sql("SELECT count(*) FROM done"), $n, "exactly $n effect rows");
is( sql(
		"SELECT count(*) FROM taskq.jobs j WHERE queue = 'bulk'
		    AND NOT EXISTS (SELECT 1 FROM done d WHERE d.job = j.id)"),
	'0', 'no job is missing its effect');
is( sql(
		"SELECT count(*) FROM done d
		  WHERE NOT EXISTS (SELECT 1 FROM taskq.jobs j WHERE j.id = d.job AND j.queue = 'bulk')"),
	'0', 'no effect without its job');
note 'jobs retried after the immediate shutdown: '
  . sql("SELECT count(*) FROM taskq.jobs WHERE queue = 'bulk' AND attempts > 1");
# an idle executor briefly reserves the free capacity while it looks for work
ok( $node->poll_query_until(
		'postgres',
		"SELECT cpu_units_used || ',' || memory_mb_used FROM taskq.resources", '0,0'),
	'no capacity is left reserved');

$node->stop;
done_testing();
