# A handler that traps cancellation (EXCEPTION WHEN query_canceled in a
# loop) cannot hold its executor: taskq.cancel() of it returns and the job
# ends cancelled; at its timeout it fails; a fast shutdown ends within the
# grace plus a few seconds.  Its executor is ended (the launcher starts
# another), the job that ran is charged an attempt, its batch-mates are not
# (their claim, not committed, rolls back with the batch).
# And any number of jobs of one running batch can be cancelled.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;
use IPC::Run;
use Time::HiRes qw(time);

my $grace = 2;    # seconds
my $node = taskq_node('cancel_escalation', 'taskq.workers' => 1,
	'taskq.shutdown_grace' => "${grace}s");

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub job { return sql("SELECT $_[1] FROM taskq.jobs WHERE id = $_[0]"); }

sub wait_jobs
{
	my ($ids, $secs) = @_;
	return sql("SELECT taskq.wait('{" . join(',', @$ids) . "}', '${secs} s')") eq 't';
}

sub wait_running
{
	my ($id) = @_;
	return $node->poll_query_until('postgres',
		"SELECT EXISTS (SELECT 1 FROM taskq.workers WHERE job_id = $id AND state = 'running')");
}

sub executor_pid { return sql("SELECT pid FROM taskq.workers WHERE kind = 'executor'"); }

sql(q{
CREATE EXTENSION taskq;
CREATE TABLE done (job bigint PRIMARY KEY);

-- traps every cancel for five minutes: only ending its backend stops it
CREATE FUNCTION deaf(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    WHILE clock_timestamp() < t0 + interval '300 s' LOOP
        BEGIN
            PERFORM pg_sleep(0.05);
        EXCEPTION WHEN query_canceled THEN
            NULL;
        END;
    END LOOP;
    INSERT INTO done VALUES (taskq.current_job_id());
END $$;

-- sleeps five minutes in small steps; a cancel stops it
CREATE FUNCTION dozer(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    WHILE clock_timestamp() < t0 + interval '300 s' LOOP
        PERFORM pg_sleep(0.05);
    END LOOP;
    INSERT INTO done VALUES (taskq.current_job_id());
END $$;

CREATE FUNCTION quick(payload jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO done VALUES (taskq.current_job_id()) $$;
CREATE FUNCTION noop(payload jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$;

SELECT taskq.register_handler('deaf', 'deaf(jsonb)');
SELECT taskq.register_handler('dozer', 'dozer(jsonb)');
SELECT taskq.register_handler('quick', 'quick(jsonb)');
SELECT taskq.register_handler('noop', 'noop(jsonb)');
});
ok(executors_up($node, 1), 'the executor is up');

# a deaf job first, then quick ones: one batch (claimed in id order)
sub deaf_batch
{
	my ($queue, $mates, %opts) = @_;
	my $extra = $opts{timeout} ? ", timeout => '$opts{timeout}', max_attempts => 1" : '';
	sql("SELECT taskq.pause('$queue')");
	my $deaf = sql("SELECT taskq.submit('deaf', queue => '$queue'$extra)");
	my @mates = map { sql("SELECT taskq.submit('quick', queue => '$queue')") } 1 .. $mates;
	sql("SELECT taskq.resume('$queue')");
	return ($deaf, @mates);
}

############################################################################
# cancel() of a running job whose handler traps the cancel.
############################################################################
my ($deaf, @mates) = deaf_batch('a', 3);
ok(wait_running($deaf), 'the deaf job is running');
# one transaction per batch: the claim is not committed, the rows read pending
is( sql("SELECT string_agg(status || ' ' || attempts, ',') FROM taskq.jobs WHERE id IN ($deaf, " . join(',', @mates) . ")"),
	'pending 0,pending 0,pending 0,pending 0', 'its batch-mates wait in its uncommitted batch');
my $pid = executor_pid();
my $t0 = time();
is(sql("SELECT taskq.cancel($deaf)"), '', 'cancel() returns without an error');
my $took = time() - $t0;
note sprintf('cancel took %.1fs', $took);
cmp_ok($took, '<', 30, 'and returns (liveness bound)');
ok( $node->poll_query_until('postgres', "SELECT status FROM taskq.jobs WHERE id = $deaf", 'cancelled'),
	'the job is cancelled (by its executor, on its way out)');
is(sql("SELECT count(*) FROM done WHERE job = $deaf"), '0', 'without its effect');
ok(wait_jobs(\@mates, 60), 'its batch-mates finished');
is( sql("SELECT string_agg(status || ' ' || attempts, ',') FROM taskq.jobs WHERE id IN (" . join(',', @mates) . ")"),
	'succeeded 1,succeeded 1,succeeded 1', 'they succeeded in their first counted attempt');
is( sql("SELECT count(*) FROM taskq.job_logs WHERE job_id IN (" . join(',', @mates) . ")"),
	'0', 'nothing logged for them: their claim rolled back with the ended batch');
ok( $node->poll_query_until(
		'postgres', "SELECT count(*) = 1 AND bool_and(pid <> $pid) FROM taskq.workers WHERE kind = 'executor'"),
	'the launcher started a new executor');

############################################################################
# A deaf job at its timeout: failed, charged, and its executor ended.
############################################################################
my ($late) = deaf_batch('t', 0, timeout => '1 s');
ok(wait_jobs([$late], 60), 'the deaf job with a timeout finished');
is(job($late, 'status') . ' ' . job($late, 'attempts'), 'failed 1', 'it failed its one attempt');
like(job($late, 'last_error'), qr/^job timed out after 1000 ms and ignored the cancel/,
	'with the reason');
ok(executors_up($node, 1), 'an executor runs again');

############################################################################
# 20 cancels aimed at one running batch all succeed.
############################################################################
# fast jobs first: the executor's batches grow to taskq.batch_size
sql("SELECT count(taskq.submit('noop')) FROM generate_series(1, 3000)");
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM taskq.jobs WHERE status IN ('pending', 'running')"),
	'3000 fast jobs ran');
sql("SELECT taskq.pause('b')");
my @dozers = map { sql("SELECT taskq.submit('dozer', queue => 'b')") } 1 .. 20;
my $dozers = join(',', @dozers);
sql("SELECT taskq.resume('b')");
ok(wait_running($dozers[0]), 'the first one runs');
is( sql("SELECT n FROM (SELECT count(*) AS n FROM taskq.jobs WHERE id IN ($dozers) AND status = 'pending') c"),
	'20', 'the 20 dozers are claimed in one uncommitted batch');

sub start_cancel
{
	my ($id) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
		  '-c', "SELECT taskq.cancel($id)" ],
		'>', \$out, '2>', \$err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	return [ $h, \$err ];
}

# the 19 waiting ones first (flagged in the batch, none waits for it), then
# the running one
my @cancels = map { start_cancel($_) } @dozers[ 1 .. 19 ];
push @cancels, start_cancel($dozers[0]);
my $failed = 0;
for my $c (@cancels)
{
	my ($h, $err) = @$c;
	unless ($h->finish)
	{
		$failed++;
		diag "cancel failed: $$err";
	}
}
is($failed, 0, 'all 20 cancels succeeded');
ok( $node->poll_query_until('postgres',
		"SELECT string_agg(DISTINCT status::text, ',') FROM taskq.jobs WHERE id IN ($dozers)",
		'cancelled'),
	'all 20 jobs are cancelled');
is(sql("SELECT count(*) FROM done WHERE job IN ($dozers)"), '0', 'none left its effect');

############################################################################
# Fast shutdown with a deaf job running: over shortly after the grace; the
# deaf job is charged, its batch-mates are given back.
############################################################################
my ($deaf2, @mates2) = deaf_batch('c', 2);
ok(wait_running($deaf2), 'a deaf job is running');
# a paused queue keeps the jobs from running again after the restart
sql("SELECT taskq.pause('c')");
$t0 = time();
$node->stop('fast');
$took = time() - $t0;
note sprintf('fast shutdown took %.1fs (grace %ds)', $took, $grace);
cmp_ok($took, '<', $grace + 10, 'the fast shutdown ended (liveness bound: grace + 10 s)');
$node->start;
is(job($deaf2, 'status') . ' ' . job($deaf2, 'attempts'), 'pending 1',
	'the deaf job is pending again, its attempt charged');
like(job($deaf2, 'last_error'), qr/ignored the cancel; its executor was ended/, 'with the reason');
is( sql("SELECT string_agg(status || ' ' || attempts, ',') FROM taskq.jobs WHERE id IN (" . join(',', @mates2) . ")"),
	'pending 0,pending 0', 'its batch-mates are pending, not charged');
is(sql("SELECT count(*) FROM done WHERE job IN ($deaf2, " . join(',', @mates2) . ")"),
	'0', 'no effect of the ended batch');

$node->stop;
done_testing();
