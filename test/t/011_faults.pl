# Fault injection: handlers that terminate or cancel their own executor, that
# never return, that raise on every attempt, and kill -9 of the launcher.
# Each ends in a bounded number of counted attempts (never a restart loop),
# the executors come back, the other jobs keep running and none is lost.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;
use Time::HiRes qw(time);

my $node = taskq_node('faults', 'taskq.backoff_base' => '100ms', restart_after_crash => 'on');

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub job { return sql("SELECT $_[1] FROM taskq.jobs WHERE id = $_[0]"); }

# taskq.wait with a deadline well below the harness timeout: true when all finished
sub wait_jobs
{
	my ($ids, $secs) = @_;
	return sql("SELECT taskq.wait('{" . join(',', @$ids) . "}', '${secs} s')") eq 't';
}

# The server log from byte $from on.
sub log_since { return substr(slurp_file($node->logfile), $_[0]); }
sub log_size  { return -s $node->logfile; }

# Lines the server (not this script's statements) logged about taskq since $from.
sub taskq_log_lines
{
	return grep { /^\d{4}-.*taskq/ && !/statement:|011_faults\.pl/ } split /\n/, log_since($_[0]);
}

sql(q{
CREATE EXTENSION taskq;
CREATE TABLE done (job bigint PRIMARY KEY);

-- pg_terminate_backend() on its own executor, then an effect that must never commit
CREATE FUNCTION self_terminate(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_terminate_backend(pg_backend_pid());
    INSERT INTO done VALUES (taskq.current_job_id());
    PERFORM pg_sleep(300);
END $$;
SELECT taskq.register_handler('self_terminate', 'self_terminate(jsonb)');

-- pg_cancel_backend() on its own executor
CREATE FUNCTION self_cancel(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_cancel_backend(pg_backend_pid());
    INSERT INTO done VALUES (taskq.current_job_id());
    PERFORM pg_sleep(300);
END $$;
SELECT taskq.register_handler('self_cancel', 'self_cancel(jsonb)');

CREATE FUNCTION forever(payload jsonb) RETURNS void LANGUAGE sql AS $$
    SELECT pg_sleep(3600)
$$;
SELECT taskq.register_handler('forever', 'forever(jsonb)');

CREATE FUNCTION always_raise(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO done VALUES (taskq.current_job_id());
    RAISE EXCEPTION 'attempt % fails', taskq.current_attempt();
END $$;
SELECT taskq.register_handler('always_raise', 'always_raise(jsonb)');

-- breaks a deferred constraint (checked when the handler returns, as its job's owner)
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (id int REFERENCES parent DEFERRABLE INITIALLY DEFERRED);
CREATE FUNCTION break_deferred(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO child VALUES (999)
$$;
SELECT taskq.register_handler('break_deferred', 'break_deferred(jsonb)');

CREATE FUNCTION record_once(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(coalesce((payload->>'ms')::float8, 0) / 1000);
    INSERT INTO done VALUES (taskq.current_job_id());
END $$;
SELECT taskq.register_handler('record_once', 'record_once(jsonb)');
});
ok(executors_up($node, 2), 'two executors are up');

############################################################################
# A handler that pg_terminate_backend()s its own executor, every attempt.
############################################################################
my $log_at = log_size();
my $t0     = time();
my $killer = sql("SELECT taskq.submit('self_terminate', max_attempts => 3)");
# other work alongside, some of it queued behind the killer
my $others = sql(
	"SELECT string_agg(taskq.submit('record_once', jsonb_build_object('ms', 5), queue => 'others')::text, ',')
	   FROM generate_series(1, 100)");
ok(wait_jobs([$killer], 60), 'the self-terminating job finished');
is(job($killer, 'status'),   'failed', 'it is dead-lettered');
is(job($killer, 'attempts'), '3',      'after max_attempts attempts');
note 'its last error: ' . job($killer, 'last_error');
is( sql(
		"SELECT count(*) FROM taskq.job_logs WHERE job_id = $killer AND details ? 'started_at'"),
	'3', 'it was started exactly max_attempts times');
is( sql(
		"SELECT count(*) FROM taskq.job_logs WHERE job_id = $killer AND message LIKE 'attempt failed%'"),
	'3', 'each attempt is logged as failed');
is(sql("SELECT count(*) FROM done WHERE job = $killer"), '0', 'no attempt left its effect');
# pg_terminate_backend() is obeyed: the executor records the attempt and exits
my @claimers = split /\n/, sql(
	"SELECT DISTINCT substring(details->>'worker' FROM '^executor/(\\d+)')
	   FROM taskq.job_logs WHERE job_id = $killer AND details ? 'started_at'");
is(scalar(@claimers), 3, 'each attempt ran in a different executor process');
is( sql(
		"SELECT count(*) FROM pg_stat_activity WHERE pid IN (" . join(',', @claimers) . ")"),
	'0', 'and each of those processes exited');
ok(wait_jobs([ split /,/, $others ], 60), 'the other jobs finished');
is( sql(
		"SELECT count(*) FROM taskq.jobs WHERE id IN ($others) AND status = 'succeeded'"),
	'100', 'every other job succeeded');
is(sql("SELECT count(*) FROM done WHERE job IN ($others)"), '100', 'each with its effect');
ok(executors_up($node, 2), 'the executors are back');
my $took = time() - $t0;
cmp_ok($took, '<', 60, sprintf('all that took %.1fs: no restart loop', $took));
my @lines = taskq_log_lines($log_at);
note "taskq log lines meanwhile:\n" . join("\n", @lines[ 0 .. ($#lines < 19 ? $#lines : 19) ]);
cmp_ok(scalar(@lines), '<=', 20, 'the log holds a handful of taskq lines, not a loop');
unlike(log_since($log_at), qr/terminated by signal|reinitializing/,
	'no crash-restart');

############################################################################
# A handler that pg_cancel_backend()s its own executor, every attempt.
############################################################################
$log_at = log_size();
my $canceller = sql("SELECT taskq.submit('self_cancel', max_attempts => 3)");
ok(wait_jobs([$canceller], 60), 'the self-cancelling job finished');
is(job($canceller, 'status') . ' ' . job($canceller, 'attempts'),
	'failed 3', 'it is dead-lettered after max_attempts attempts (not given back forever)');
is( sql(
		"SELECT count(*) FROM taskq.job_logs WHERE job_id = $canceller AND details ? 'started_at'"),
	'3', 'it was started exactly max_attempts times');
is(sql("SELECT count(*) FROM done WHERE job = $canceller"), '0', 'no attempt left its effect');
@lines = taskq_log_lines($log_at);
cmp_ok(scalar(@lines), '<=', 10, 'and the log stays quiet');

############################################################################
# A handler that never returns: stopped by its timeout, or by taskq.cancel.
############################################################################
$t0 = time();
my $slow = sql(
	"SELECT taskq.submit('forever', max_attempts => 2, timeout => '1 s', backoff => '100ms')");
ok(wait_jobs([$slow], 60), 'the never-returning job with a timeout finished');
$took = time() - $t0;
cmp_ok($took, '<', 30, sprintf('in %.1fs, not an hour', $took));
is(job($slow, 'status') . ' ' . job($slow, 'attempts'),
	'failed 2', 'it failed after its two attempts');
is( sql(
		"SELECT count(*) FROM taskq.job_logs
		  WHERE job_id = $slow AND message LIKE 'attempt failed%' AND error LIKE '%timed out%'"),
	'2', 'both attempts failed by the timeout');

my $stuck = sql("SELECT taskq.submit('forever')");
ok( $node->poll_query_until(
		'postgres',
		"SELECT EXISTS (SELECT 1 FROM taskq.workers WHERE job_id = $stuck AND state = 'running')"),
	'the never-returning job without a timeout is running');
my $stuck_pid = sql("SELECT pid FROM taskq.workers WHERE job_id = $stuck");
$t0 = time();
sql("SELECT taskq.cancel($stuck)");
cmp_ok(time() - $t0, '<', 10, 'taskq.cancel returned quickly');
# cancel flags the job in the executor's batch; the row says so at its commit
ok( $node->poll_query_until('postgres', "SELECT status FROM taskq.jobs WHERE id = $stuck", 'cancelled'),
	'taskq.cancel stopped it');
is(job($stuck, 'attempts'), '1', 'it is not retried');
my $next = sql("SELECT taskq.submit('record_once')");
ok(wait_jobs([$next], 30), 'a job after the cancel finished');
is(job($next, 'status'), 'succeeded', 'and succeeded');
is( sql("SELECT count(*) FROM taskq.workers WHERE pid = $stuck_pid"),
	'1', 'the executor that ran the cancelled job is still alive');

############################################################################
# A handler that raises on every attempt.
############################################################################
my $raiser = sql("SELECT taskq.submit('always_raise', max_attempts => 4)");
ok(wait_jobs([$raiser], 60), 'the raising job finished');
is(job($raiser, 'status'),   'failed',          'it is dead-lettered');
is(job($raiser, 'attempts'), '4',               'attempts = max_attempts');
is(job($raiser, 'last_error'), 'attempt 4 fails', 'the last error is kept');
is( sql(
		"SELECT string_agg(attempt || ':' || message || ':' || error, ',' ORDER BY id)
		   FROM taskq.job_logs WHERE job_id = $raiser AND message LIKE 'attempt failed%'"),
	'1:attempt failed:attempt 1 fails,2:attempt failed:attempt 2 fails,'
	  . '3:attempt failed:attempt 3 fails,4:attempt failed, dead-lettered:attempt 4 fails',
	'one job_logs row per attempt, the last one dead-letters');
is(sql("SELECT count(*) FROM done WHERE job = $raiser"), '0', 'no attempt left its effect');
is(sql("SELECT count(*) FROM taskq.dead_letter_queue WHERE id = $raiser"),
	'1', 'it is in the dead-letter queue');

############################################################################
# A handler whose work breaks a deferred constraint fails alone: the jobs
# that shared its batch transaction are not charged.
############################################################################
sql("SELECT taskq.pause('deferred')");
my @good;
push @good, sql("SELECT taskq.submit('record_once', queue => 'deferred')") for 1 .. 4;
my $breaker = sql("SELECT taskq.submit('break_deferred', queue => 'deferred', max_attempts => 3)");
push @good, sql("SELECT taskq.submit('record_once', queue => 'deferred')") for 1 .. 4;
sql("SELECT taskq.resume('deferred')");
ok(wait_jobs([ $breaker, @good ], 60), 'the batch with the constraint breaker finished');
is(job($breaker, 'status') . ' ' . job($breaker, 'attempts'),
	'failed 3', 'the breaker is dead-lettered after its max_attempts');
like(job($breaker, 'last_error'), qr/violates foreign key constraint "child_id_fkey"/,
	'with the constraint\'s error');
my $good = join(',', @good);
is(sql("SELECT count(*) FROM taskq.jobs WHERE id IN ($good) AND status = 'succeeded'"),
	'8', 'every job of its batch succeeded');
is(sql("SELECT max(attempts) FROM taskq.jobs WHERE id IN ($good)"),
	'1', 'without being charged an attempt');
is(sql("SELECT count(*) FROM done WHERE job IN ($good)"), '8', 'each with its effect');
is(sql('SELECT count(*) FROM child'), '0', 'and the broken row never committed');
note 'jobs that shared a failed batch with it and were given back: '
  . sql("SELECT count(DISTINCT job_id) FROM taskq.job_logs WHERE job_id IN ($good) AND message LIKE 'given back%'");

############################################################################
# kill -9 of the launcher in the middle of 2000 jobs.
############################################################################
my $n = 2000;
sql("TRUNCATE done");
is( sql(
		"SELECT count(taskq.submit('record_once', jsonb_build_object('ms', 1), queue => 'bulk'))
		   FROM generate_series(1, $n)"),
	$n, "submitted $n jobs");
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) >= 100 FROM taskq.jobs WHERE queue = 'bulk' AND status = 'succeeded'"),
	'the executors are working through them');
my $launcher = sql("SELECT pid FROM taskq.workers WHERE kind = 'launcher'");
is(sql("SELECT backend_type FROM pg_stat_activity WHERE pid = $launcher"),
	'taskq launcher', "the launcher is pid $launcher");
my $done_before = sql(
	"SELECT count(*) FROM taskq.jobs WHERE queue = 'bulk' AND status = 'succeeded'");
$log_at = log_size();
ok(kill(9, $launcher), 'kill -9 the launcher');
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 1 FROM taskq.workers WHERE kind = 'launcher' AND pid <> $launcher"),
	'a new launcher runs');
like(log_since($log_at), qr/all server processes terminated; reinitializing/,
	'the postmaster did a crash-restart');
cmp_ok($done_before, '<', $n, "killed in the middle ($done_before of $n done)");
ok(executors_up($node, 2), 'the executors are back');
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 0 FROM taskq.jobs
		  WHERE queue = 'bulk' AND status IN ('blocked', 'pending', 'running')"),
	'every job finished after the crash-restart');
is( sql("SELECT count(*) FROM taskq.jobs WHERE queue = 'bulk' AND status = 'succeeded'"),
	$n, 'every job succeeded');
is( sql(
		"SELECT count(*) FROM taskq.jobs j
		   JOIN done d ON d.job = j.id WHERE j.queue = 'bulk'"),
	$n, 'each job has exactly one effect row');
is(sql("SELECT count(*) FROM done"), $n, 'and there is no other effect');
note 'jobs retried after the crash: '
  . sql("SELECT count(*) FROM taskq.jobs WHERE queue = 'bulk' AND attempts > 1");

$node->stop;
done_testing();
