# In-database executor: owner rights, atomic work + completion, retries and
# dead-lettering, timeouts, priority order, delayed jobs, cancelling a running
# job, dependencies, and the session reset between jobs.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;
use Time::HiRes qw(time);

# One executor claiming one job at a time: start order is claim order.
my $node = taskq_node('executor_basics', 'taskq.workers' => '1', 'taskq.batch_size' => '1');

sub sql { return $node->safe_psql('postgres', $_[0]); }

# Wait for jobs to finish (succeeded, failed or cancelled).
sub wait_jobs
{
	my ($ids, $timeout) = @_;
	$timeout //= 60;
	return sql("SELECT taskq.wait('{" . join(',', @$ids) . "}', '$timeout s')") eq 't';
}

sub job { return sql("SELECT $_[1] FROM taskq.jobs WHERE id = $_[0]"); }

sql(q{
CREATE EXTENSION taskq;
CREATE TABLE events (seq bigserial PRIMARY KEY, job bigint, name text, pid int,
                     who text, at timestamptz DEFAULT clock_timestamp(), info jsonb);
GRANT ALL ON events, events_seq_seq TO PUBLIC;

-- records that it ran; returns who ran it
CREATE FUNCTION note(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (job, name, pid, who)
    VALUES (taskq.current_job_id(), payload->>'name', pg_backend_pid(), current_user);
    RETURN jsonb_build_object('who', current_user, 'pid', pg_backend_pid());
END $$;
SELECT taskq.register_handler('note', 'note(jsonb)');

CREATE TABLE secret (v int);
INSERT INTO secret VALUES (42);
CREATE ROLE alice LOGIN IN ROLE taskq_user;
CREATE ROLE bob LOGIN IN ROLE taskq_user;
GRANT SELECT ON secret TO bob;
CREATE FUNCTION read_secret(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('v', (SELECT v FROM secret), 'who', current_user::text)
$$;
SELECT taskq.register_handler('read_secret', 'read_secret(jsonb)');

CREATE TABLE effects (job bigint);
GRANT ALL ON effects TO PUBLIC;
CREATE FUNCTION write_then_fail(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO effects VALUES (taskq.current_job_id());
    RAISE EXCEPTION 'boom %', taskq.current_job_id();
END $$;
SELECT taskq.register_handler('write_then_fail', 'write_then_fail(jsonb)');

CREATE FUNCTION sleeper(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (job, name, pid) VALUES (taskq.current_job_id(), 'sleeper', pg_backend_pid());
    PERFORM pg_sleep((payload->>'sleep')::float8);
END $$;
SELECT taskq.register_handler('sleeper', 'sleeper(jsonb)');

CREATE FUNCTION fail_now(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'parent fails';
END $$;
SELECT taskq.register_handler('fail_now', 'fail_now(jsonb)');
});

ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 1 FROM taskq.workers WHERE kind = 'executor' AND state = 'idle'"),
	'the executor is up');

############################################################################
# Handlers run as the job's owner.
############################################################################
my $alice_job = sql(
	"SET ROLE alice; SELECT taskq.submit('read_secret', max_attempts => 1)");
my $bob_job = sql(
	"SET ROLE bob; SELECT taskq.submit('read_secret', max_attempts => 1)");
ok(wait_jobs([ $alice_job, $bob_job ]), 'owner jobs finished');
is(job($alice_job, 'status'), 'failed',
	"alice's job fails: alice may not read the table");
like(job($alice_job, 'last_error'),
	qr/permission denied for table secret/, 'with a permission error');
is(job($bob_job, 'status'), 'succeeded', "bob's identical job succeeds");
is(job($bob_job, "result->>'who'"), 'bob', 'and ran as bob');
is(job($bob_job, "result->>'v'"), '42', 'and read the row');
is(job($bob_job, 'owner'), 'bob', 'the owner is recorded');

############################################################################
# Work and completion commit together; retries with backoff; dead letter.
############################################################################
my $fail_job = sql(
	"SELECT taskq.submit('write_then_fail', max_attempts => 3, backoff => '500ms')");
ok(wait_jobs([$fail_job]), 'failing job finished');
is(job($fail_job, 'status'),   'failed', 'failing job is dead-lettered');
is(job($fail_job, 'attempts'), '3',      'after max_attempts attempts');
like(job($fail_job, 'last_error'), qr/boom $fail_job/, 'its last error is kept');
is(sql("SELECT count(*) FROM effects"), '0',
	'no attempt left its work behind: work rolls back with the failure');
is(sql("SELECT count(*) FROM taskq.dead_letter_queue WHERE id = $fail_job"),
	'1', 'the job is in the dead-letter queue');
is( sql(
		"SELECT string_agg(message || ':' || coalesce(error, ''), ',' ORDER BY id)
		   FROM taskq.job_logs WHERE job_id = $fail_job AND error IS NOT NULL"),
	"attempt failed:boom $fail_job,attempt failed:boom $fail_job,"
	  . "attempt failed, dead-lettered:boom $fail_job",
	'each attempt is logged with its error; the last one dead-letters');
is( sql(
		"SELECT count(*) FROM taskq.job_logs WHERE job_id = $fail_job AND message = 'retry scheduled'"),
	'2', 'and each retry scheduled');
# claim k+1 happens no earlier than backoff * 2^(k-1) after claim k (each
# failed attempt's row has its start)
my @gaps = split /\n/, sql(
	"SELECT extract(epoch FROM s - lag(s) OVER (ORDER BY id))
	   FROM (SELECT id, (details->>'started_at')::timestamptz AS s FROM taskq.job_logs
	          WHERE job_id = $fail_job AND details ? 'started_at') a
	  ORDER BY id OFFSET 1");
is(scalar(@gaps), 2, 'three claims');
cmp_ok($gaps[0], '>=', 0.5, 'first retry waited the base backoff');
cmp_ok($gaps[1], '>=', 1.0, 'second retry waited twice the base backoff');

############################################################################
# Timeout.
############################################################################
my $t0 = time();
my $timeout_job = sql(
	"SELECT taskq.submit('sleeper', '{\"sleep\": 60}', max_attempts => 1, timeout => '500ms')");
ok(wait_jobs([$timeout_job]), 'timed-out job finished');
cmp_ok(time() - $t0, '<', 30, 'the timeout stopped the handler early');
is(job($timeout_job, 'status'), 'failed', 'timed-out job failed');
like(job($timeout_job, 'last_error'), qr/timed out/, 'with a "timed out" error');

# a timeout too long to add to the clock (microseconds overflow) is no deadline
my $long_timeout_job = sql(
	"SELECT taskq.submit('sleeper', '{\"sleep\": 0.3}', max_attempts => 1, timeout => '170000000 years')");
ok(wait_jobs([$long_timeout_job]), 'job with a 170-million-year timeout finished');
is(job($long_timeout_job, 'status'), 'succeeded', 'and succeeded: its deadline did not wrap around');

############################################################################
# Priority order: highest first, oldest first within a priority.
############################################################################
sql("SELECT taskq.pause('prio')");
my @order;
for my $n (1 .. 2)
{
	for my $p (qw(low normal high critical))
	{
		# separate transactions: distinct, increasing run_at
		sql("SELECT taskq.submit('note', '{\"name\": \"$p$n\"}', priority => '$p', queue => 'prio')");
	}
}
my $prio_ids = sql("SELECT string_agg(id::text, ',') FROM taskq.jobs WHERE queue = 'prio'");
is(sql("SELECT count(*) FROM taskq.jobs WHERE queue = 'prio' AND status = 'pending'"),
	'8', 'a paused queue keeps its jobs pending');
sql("SELECT taskq.resume('prio')");
ok(wait_jobs([ split /,/, $prio_ids ]), 'priority jobs finished');
is( sql(
		"SELECT string_agg(e.name, ' ' ORDER BY e.seq) FROM events e
		   JOIN taskq.jobs j ON j.id = e.job WHERE j.queue = 'prio'"),
	'critical1 critical2 high1 high2 normal1 normal2 low1 low2',
	'jobs started in priority order, oldest first within a priority');

############################################################################
# Delayed run_at.
############################################################################
my ($delayed, $run_at) = split /\|/, sql(
	"SELECT taskq.submit('note', '{\"name\": \"delayed\"}', run_at => now() + '2 s'),
	        (now() + '2 s')::text");
is(job($delayed, 'status'), 'pending', 'a delayed job waits as pending');
ok(wait_jobs([$delayed]), 'delayed job finished');
is(job($delayed, 'status'), 'succeeded', 'delayed job succeeded');
is(sql("SELECT bool_and(at >= '$run_at') FROM events WHERE job = $delayed"),
	't', 'and did not start before its run_at');

############################################################################
# Cancel a running job.
############################################################################
my $long = sql("SELECT taskq.submit('sleeper', '{\"sleep\": 30}')");
# the handler's own writes are invisible until its batch commits: ask the executor
ok( $node->poll_query_until(
		'postgres',
		"SELECT EXISTS (SELECT 1 FROM taskq.workers WHERE job_id = $long AND state = 'running')"),
	'the long job is running');
my $exec_pid = sql("SELECT pid FROM taskq.workers WHERE job_id = $long");
$t0 = time();
sql("SELECT taskq.cancel($long)");
my $cancel_took = time() - $t0;
cmp_ok($cancel_took, '<', 10, 'cancel returned quickly');
# cancel flags the job in the executor's batch; the row says so at its commit
ok( $node->poll_query_until('postgres', "SELECT status FROM taskq.jobs WHERE id = $long", 'cancelled'),
	'the running job is cancelled');
is( sql("SELECT count(*) FROM taskq.job_logs WHERE job_id = $long
		  AND status = 'cancelled'"),
	'1', 'the cancellation is logged');
is(job($long, 'attempts'), '1', 'the cancelled job is not retried');
is(sql("SELECT count(*) FROM events WHERE job = $long"),
	'0', "the cancelled handler's work rolled back");
my $after = sql("SELECT taskq.submit('note', '{\"name\": \"after-cancel\"}')");
ok(wait_jobs([$after]), 'a job after the cancel finished');
is(job($after, 'status'), 'succeeded', 'the executor keeps working');
is(sql("SELECT pid FROM events WHERE job = $after"),
	$exec_pid, 'in the same executor process');

############################################################################
# Dependencies.
############################################################################
# the parent waits in a paused queue, so the child surely sees it unfinished
sql("SELECT taskq.pause('parents')");
my $parent = sql(
	"SELECT taskq.submit('sleeper', '{\"sleep\": 0.2}', queue => 'parents')");
my $child = sql(
	"SELECT taskq.submit('note', '{\"name\": \"child\"}', depends_on => ARRAY[$parent]::bigint[])");
is(job($child, 'status'), 'blocked', 'a child of an unfinished parent is blocked');
sql("SELECT taskq.resume('parents')");
ok(wait_jobs([ $parent, $child ]), 'parent and child finished');
is(job($child, 'status'), 'succeeded', 'the child ran once its parent succeeded');
is( sql(
		"SELECT c.at > (SELECT finished_at FROM taskq.jobs WHERE id = $parent)
		   FROM events c WHERE c.job = $child"),
	't', 'the child started after the parent finished');

my $bad_parent = sql("SELECT taskq.submit('fail_now', max_attempts => 1)");
my $orphan = sql(
	"SELECT taskq.submit('note', '{\"name\": \"orphan\"}', depends_on => ARRAY[$bad_parent]::bigint[])");
ok(wait_jobs([$bad_parent]), 'failing parent finished');
is(job($bad_parent, 'status'), 'failed', 'the parent failed');
# the executor is idle again, so the child had every chance to run
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 1 FROM taskq.workers WHERE kind = 'executor' AND state = 'idle'"),
	'the executor is idle');
is(job($orphan, 'status'), 'blocked', 'a child of a failed parent stays blocked');
is(sql("SELECT count(*) FROM events WHERE job = $orphan"), '0', 'and never ran');

############################################################################
# A handler's session changes do not leak into the next job.
############################################################################
sql(q{
CREATE FUNCTION dirty(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    SET search_path = pg_catalog, dirty_schema;
    PERFORM set_config('work_mem', '77MB', false);
    PERFORM pg_catalog.pg_advisory_lock(4242);
    CREATE TEMP TABLE leaked_temp (x int);
    BEGIN
        LISTEN leaked_channel;
    EXCEPTION WHEN feature_not_supported THEN
        NULL;  -- PostgreSQL refuses LISTEN in background workers
    END;
    PREPARE leaked_stmt AS SELECT 1;
    INSERT INTO public.events (job, name, pid, who, info)
    VALUES (taskq.current_job_id(), 'dirty', pg_backend_pid(), current_user,
            jsonb_build_object('search_path', current_setting('search_path'),
                               'locks', (SELECT count(*) FROM pg_locks
                                         WHERE pid = pg_backend_pid() AND locktype = 'advisory'),
                               'temp', to_regclass('pg_temp.leaked_temp') IS NOT NULL));
END $$;
CREATE FUNCTION inspect(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.events (job, name, pid, info)
    VALUES (taskq.current_job_id(), 'inspect', pg_backend_pid(),
            jsonb_build_object(
                'search_path', current_setting('search_path'),
                'work_mem', current_setting('work_mem'),
                'user', current_user::text,
                'locks', (SELECT count(*) FROM pg_locks
                          WHERE pid = pg_backend_pid() AND locktype = 'advisory'),
                'temp', to_regclass('pg_temp.leaked_temp') IS NOT NULL,
                'temp_tables', (SELECT count(*) FROM pg_class
                                WHERE relnamespace = pg_my_temp_schema()),
                'listen', (SELECT count(*) FROM pg_listening_channels()),
                'prepared', (SELECT count(*) FROM pg_prepared_statements)));
END $$;
SELECT taskq.register_handler('dirty', 'dirty(jsonb)');
SELECT taskq.register_handler('inspect', 'inspect(jsonb)');
});
# Baseline: what a fresh job sees.
my $base = sql("SELECT taskq.submit('inspect')");
ok(wait_jobs([$base]), 'baseline job finished');
my $dirty = sql("SET ROLE alice; SELECT taskq.submit('dirty')");
ok(wait_jobs([$dirty]), 'dirty job finished');
is(job($dirty, 'status'), 'succeeded', 'the dirty job succeeded')
  or diag job($dirty, 'last_error');
is( sql(
		"SELECT who || ' ' || (info->>'locks') || ' ' || (info->>'temp') || ' '
		        || (info->>'search_path') FROM events WHERE job = $dirty"),
	'alice 1 true pg_catalog, dirty_schema',
	'the dirty job did change its session');
my $clean = sql("SELECT taskq.submit('inspect')");
ok(wait_jobs([$clean]), 'inspecting job finished');
is( sql(
		"SELECT count(DISTINCT pid) FROM events WHERE job IN ($base, $dirty, $clean)"),
	'1', 'all three ran in the same executor process');
my $seen = sql("SELECT info FROM events WHERE job = $clean");
note "next job saw: $seen";
is(sql("SELECT info->>'search_path' FROM events WHERE job = $clean"),
	sql("SELECT info->>'search_path' FROM events WHERE job = $base"),
	'search_path is reset');
is(sql("SELECT info->>'work_mem' FROM events WHERE job = $clean"),
	sql("SELECT info->>'work_mem' FROM events WHERE job = $base"),
	'other GUCs are reset');
is(sql("SELECT info->>'user' FROM events WHERE job = $clean"),
	'postgres', 'the next job runs as its own owner');
is(sql("SELECT info->>'locks' FROM events WHERE job = $clean"),
	'0', 'advisory locks are released');
is(sql("SELECT info->>'temp' FROM events WHERE job = $clean"),
	'false', 'the temp table is gone');
is(sql("SELECT info->>'temp_tables' FROM events WHERE job = $clean"),
	'0', 'no temp relation is left');
is(sql("SELECT info->>'listen' FROM events WHERE job = $clean"),
	'0', 'LISTEN is undone (or was refused)');
is(sql("SELECT info->>'prepared' FROM events WHERE job = $clean"),
	'0', 'prepared statements are dropped');
is( sql(
		"SELECT count(*) FROM pg_locks l JOIN taskq.workers w ON w.pid = l.pid
		  WHERE l.locktype = 'advisory'"),
	'0', 'the executor holds no advisory lock');

# A handler function dropped while its job waits: the job fails for good, and says why.
sql(q{CREATE FUNCTION soon_gone(payload jsonb) RETURNS void LANGUAGE sql AS 'SELECT NULL';
      SELECT taskq.register_handler('soon_gone', 'soon_gone(jsonb)');
      SELECT taskq.pause('default')});
my $gone_handler_job = sql("SELECT taskq.submit('soon_gone', '{}', max_attempts => 3)");
sql("DROP FUNCTION soon_gone(jsonb); SELECT taskq.resume('default')");
is(sql("SELECT taskq.wait('{$gone_handler_job}', '60 s')"), 't', 'the job of a dropped handler finished');
is(sql("SELECT status || ' ' || attempts FROM taskq.jobs WHERE id = $gone_handler_job"), 'failed 1',
	'it failed at its first attempt, without retries');
like(sql("SELECT last_error FROM taskq.jobs WHERE id = $gone_handler_job"),
	qr/handler function registered for this job's type \(OID \d+\) was dropped/,
	'and the error names the cause');

$node->stop;
done_testing();
