# One transaction per executor batch (issue 20): the claim is not committed
# before the handlers run.  A kill -9 of the executor mid-batch, or an
# immediate stop, charges an attempt to the job whose handler was running
# (its crash mark) and to no batch-mate; the held jobs show as running in
# taskq.workers, taskq.live_jobs and taskq.queue_depth while their rows are
# not yet committed; taskq.cancel() of a job
# held by an uncommitted batch returns without waiting for the batch.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;

# one executor: the three jobs of a test are claimed in one batch
my $node = taskq_node('one_transaction', 'taskq.workers' => 1,
	'taskq.backoff_base' => '100ms', restart_after_crash => 'on');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE EXTENSION taskq;
CREATE TABLE done (job bigint PRIMARY KEY);
CREATE TABLE gate (open boolean);

CREATE FUNCTION record_once(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO done VALUES (taskq.current_job_id())
$$;
SELECT taskq.register_handler('record_once', 'record_once(jsonb)');

-- Sleeps through its first attempt (to be killed there), then records itself.
CREATE FUNCTION slow_first(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF taskq.current_attempt() = 1 THEN
        PERFORM pg_sleep(300);
    END IF;
    INSERT INTO done VALUES (taskq.current_job_id());
END $$;
SELECT taskq.register_handler('slow_first', 'slow_first(jsonb)');

-- Waits until the test opens the gate, then records itself.
CREATE FUNCTION wait_gate(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WHILE NOT EXISTS (SELECT 1 FROM gate WHERE open) LOOP
        PERFORM pg_sleep(0.02);
    END LOOP;
    INSERT INTO done VALUES (taskq.current_job_id());
END $$;
SELECT taskq.register_handler('wait_gate', 'wait_gate(jsonb)');
});
ok(executors_up($node, 1), 'the executor is up');

# Three jobs committed together, the middle one slow: one batch.
sub submit_batch
{
	my $ids = sql(q{
		BEGIN;
		SELECT taskq.submit('record_once', '{"n": 1}');
		SELECT taskq.submit('slow_first');
		SELECT taskq.submit('record_once', '{"n": 3}');
		COMMIT;});
	return split /\n/, $ids;
}

# After a crash mid-batch: every job succeeds once, the culprit alone charged.
sub check_after_crash
{
	my ($what, $first, $culprit, $last) = @_;
	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) = 3 FROM taskq.jobs
			  WHERE id IN ($first, $culprit, $last) AND status = 'succeeded'"),
		"$what: after the restart the batch's jobs all succeed");
	is( sql(
			"SELECT string_agg(id || ':' || attempts, ',' ORDER BY id)
			   FROM taskq.jobs WHERE id IN ($first, $culprit, $last)"),
		"$first:1,$culprit:2,$last:1",
		"$what: only the running job was charged an attempt, not its batch-mates");
	is( sql(
			"SELECT string_agg(job_id || ':' || message, ',' ORDER BY id)
			   FROM taskq.job_logs WHERE job_id IN ($first, $culprit, $last)"),
		"$culprit:attempt failed,$culprit:retry scheduled",
		"$what: the culprit's failed attempt is logged, nothing for its batch-mates");
	like( sql("SELECT error FROM taskq.job_logs WHERE job_id = $culprit ORDER BY id LIMIT 1"),
		qr/^executor executor\/\d+\.\d+ died while running the job$/,
		"$what: the failed attempt says the executor died");
	is( sql("SELECT count(*) FROM done WHERE job IN ($first, $culprit, $last)"),
		'3', "$what: each job's effect exists exactly once");
}

############################################################################
# kill -9 of the executor while the batch's second job runs.
############################################################################
my ($a1, $b1, $c1) = submit_batch();
ok( $node->poll_query_until(
		'postgres',
		"SELECT EXISTS (SELECT 1 FROM taskq.workers WHERE job_id = $b1 AND state = 'running')"),
	'taskq.workers shows the running job');
is( sql("SELECT string_agg(status || ':' || attempts, ',' ORDER BY id)
		   FROM taskq.jobs WHERE id IN ($a1, $b1, $c1)"),
	'pending:0,pending:0,pending:0',
	'the claim is not committed: rows still pending, no attempt counted');
is(sql("SELECT count(*) FROM done"), '0', 'the first job\'s effect is not committed either');
is( sql("SELECT string_agg(status || ':' || attempts || ':' || (worker LIKE 'executor/%')
		   || ':' || (started_at IS NOT NULL), ',' ORDER BY id)
		   FROM taskq.live_jobs WHERE id IN ($a1, $b1, $c1)"),
	'running:1:true:false,running:1:true:true,running:1:true:false',
	'taskq.live_jobs shows the held jobs running, with their attempt and executor; the running one started');
is(sql("SELECT string_agg(status || ':' || jobs, ',') FROM taskq.queue_depth"),
	'running:3', 'taskq.queue_depth counts the held jobs as running');
# Row security holds through the view: a taskq_user sees none of these jobs,
# a taskq_monitor counts them but reads no job.
sql(q{CREATE ROLE live_user LOGIN IN ROLE taskq_user;
	  CREATE ROLE live_monitor LOGIN IN ROLE taskq_monitor;});
is( $node->safe_psql('postgres', 'SELECT count(*) FROM taskq.live_jobs',
		extra_params => [ '-U', 'live_user' ]),
	'0', 'a taskq_user sees no other role\'s held job in taskq.live_jobs');
is( $node->safe_psql('postgres', 'SELECT count(*) FROM taskq.queue_depth',
		extra_params => [ '-U', 'live_user' ]),
	'0', '... nor counts one in taskq.queue_depth');
is( $node->safe_psql('postgres', 'SELECT sum(jobs) FROM taskq.queue_depth WHERE status = \'running\'',
		extra_params => [ '-U', 'live_monitor' ]),
	'3', 'a taskq_monitor counts them as running');
my (undef, undef, $denied) = $node->psql('postgres', 'SELECT count(*) FROM taskq.live_jobs',
	extra_params => [ '-U', 'live_monitor' ]);
like($denied, qr/permission denied for view live_jobs/, 'a taskq_monitor reads no job through the view');
my $pid = sql("SELECT pid FROM taskq.workers WHERE job_id = $b1");
ok(kill(9, $pid), "kill -9 executor $pid mid-batch");
check_after_crash('kill -9', $a1, $b1, $c1);

############################################################################
# Immediate stop of the postmaster while the batch's second job runs.
############################################################################
my ($a2, $b2, $c2) = submit_batch();
ok( $node->poll_query_until(
		'postgres',
		"SELECT EXISTS (SELECT 1 FROM taskq.workers WHERE job_id = $b2 AND state = 'running')"),
	'the second batch runs');
$node->stop('immediate');
$node->start;
check_after_crash('immediate stop', $a2, $b2, $c2);

############################################################################
# taskq.cancel() of jobs held by an uncommitted batch.
############################################################################
# A job whose handler already succeeded in the uncommitted batch is too late
# to cancel: cancel says so at once.
my $ids = sql(q{
	BEGIN;
	SELECT taskq.submit('record_once', '{"n": 4}');
	SELECT taskq.submit('wait_gate');
	COMMIT;});
my ($ran, $gated2) = split /\n/, $ids;
ok( $node->poll_query_until(
		'postgres',
		"SELECT EXISTS (SELECT 1 FROM taskq.workers WHERE job_id = $gated2 AND state = 'running')"),
	'the first job ran, the second holds the batch open');
my ($rc, $out, $err) = $node->psql('postgres',
	"SET statement_timeout = '120s'; SELECT taskq.cancel($ran)");
like($err, qr/job $ran has already run/, 'cancel of a job that already ran in the batch refuses at once');
sql("INSERT INTO gate VALUES (true)");
ok( $node->poll_query_until(
		'postgres',
		"SELECT string_agg(status::text, ',' ORDER BY id) FROM taskq.jobs WHERE id IN ($ran, $gated2)",
		'succeeded,succeeded'),
	'the batch commits both successes');

# a fresh executor, whose batch size has not adapted to the slow gated job
sql("DELETE FROM gate");
$node->restart;
ok(executors_up($node, 1), 'the executor is up again');

$ids = sql(q{
	BEGIN;
	SELECT taskq.submit('wait_gate');
	SELECT taskq.submit('record_once', '{"n": 2}');
	COMMIT;});
my ($gated, $mate) = split /\n/, $ids;
ok( $node->poll_query_until(
		'postgres',
		"SELECT EXISTS (SELECT 1 FROM taskq.workers WHERE job_id = $gated AND state = 'running')"),
	'the gated job runs, its batch-mate waits in the same uncommitted batch');
# Were cancel to wait for the batch's row locks, it would wait for the gate,
# which opens only after it returns: the timeout turns that into a failure.
($rc, $out, $err) = $node->psql('postgres',
	"SET statement_timeout = '120s'; SELECT taskq.cancel($mate)");
is($rc, 0, 'cancel of the waiting batch-mate returned without waiting for the batch')
  or diag $err;
($rc, $out, $err) = $node->psql('postgres',
	"SET statement_timeout = '120s'; SELECT taskq.cancel($gated)");
is($rc, 0, 'cancel of the running job returned without waiting for the batch')
  or diag $err;
ok( $node->poll_query_until(
		'postgres',
		"SELECT string_agg(status::text, ',' ORDER BY id) FROM taskq.jobs WHERE id IN ($gated, $mate)",
		'cancelled,cancelled'),
	'both are cancelled when the batch commits, the running one interrupted');
is(sql("SELECT count(*) FROM done WHERE job IN ($gated, $mate)"), '0',
	'neither ran its effect');
is(sql("SELECT count(*) FROM taskq.job_logs WHERE job_id IN ($gated, $mate) AND status = 'cancelled'"),
	'2', 'each cancel is logged');

# One row write per job: a batch claimed in its own transaction only locks
# its jobs; each job's row is written once, by its outcome.  The handler
# reads its attempt from taskq.current_attempt(): its row still reads the
# attempts before the claim.  A queue with a concurrency limit keeps the
# written claim (the next claim counts its running jobs from the rows).
sql(q{
CREATE TABLE row_writes (job bigint, old_status text, new_status text);
CREATE FUNCTION note_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.row_writes VALUES (NEW.id, OLD.status, NEW.status);
    RETURN NULL;
END $$;
CREATE TRIGGER note_write AFTER UPDATE ON taskq.jobs
    FOR EACH ROW EXECUTE FUNCTION note_write();
CREATE TABLE seen (job bigint PRIMARY KEY, attempt int, row_attempts int, row_status text);
CREATE FUNCTION look(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO public.seen
    SELECT j.id, taskq.current_attempt(), j.attempts, j.status
      FROM taskq.jobs j WHERE j.id = taskq.current_job_id()
$$;
SELECT taskq.register_handler('look', 'look(jsonb)');
SELECT taskq.configure_queue('capped', concurrency => 2);
});
$node->restart;    # a fresh batch size again
ok(executors_up($node, 1), 'the executor is up for the write count');
sql(q{
	BEGIN;
	SELECT taskq.submit('look') FROM generate_series(1, 30);
	SELECT taskq.submit('look', queue => 'capped') FROM generate_series(1, 4);
	COMMIT;});
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) FROM taskq.jobs WHERE job_type = 'look' AND status = 'succeeded'", '34'),
	'every job succeeds');
is( sql(q{
	SELECT count(*) FROM taskq.jobs j
	 WHERE j.job_type = 'look' AND j.queue = 'default'
	   AND (SELECT string_agg(w.old_status || '>' || w.new_status, ',')
	          FROM row_writes w WHERE w.job = j.id) = 'pending>succeeded'}),
	'30', 'each job of an unlimited queue is written once, pending to succeeded');
is( sql(q{
	SELECT count(*) FROM taskq.jobs j
	 WHERE j.job_type = 'look' AND j.queue = 'capped'
	   AND (SELECT string_agg(w.old_status || '>' || w.new_status, ',' ORDER BY w.ctid)
	          FROM row_writes w WHERE w.job = j.id) = 'pending>running,running>succeeded'}),
	'4', 'a job of a queue with a concurrency limit keeps its written claim');
is( sql(q{
	SELECT string_agg(DISTINCT format('%s:%s:%s:%s', j.queue, s.attempt, s.row_attempts, s.row_status), ',')
	  FROM seen s JOIN taskq.jobs j ON j.id = s.job}),
	'capped:1:1:running,default:1:0:pending',
	'the handler reads its attempt from taskq.current_attempt(); an unwritten claim reads pending');
is( sql(q{
	SELECT count(*) FROM taskq.jobs
	 WHERE job_type = 'look' AND attempts = 1 AND worker LIKE 'executor/%'
	   AND started_at IS NOT NULL AND started_at <= finished_at AND lease_expires_at IS NULL}),
	'34', 'the one write carries attempts, worker, start and end');

$node->stop;
done_testing();
