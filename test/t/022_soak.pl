# A bounded soak at steady load, with retention on.
#
# For about 100 s a background session submits 200 jobs/s (a no-op
# in-database handler) while the launcher deletes finished jobs past
# taskq.retention = 2s and an aggressive autovacuum cleans up behind it.
# Every ~10 s the test samples the size of taskq.jobs and taskq.job_logs
# (with indexes and TOAST), their dead tuples, the number of jobs, and the
# memory of the executors and the launcher.  It asserts:
#   * the load really ran: every submitted job ran exactly once, none failed;
#   * sizes, dead tuples, job count and worker memory stay flat: the maximum
#     of the last third of the samples is at most twice the maximum of the
#     first third (plus a small allowance for tiny values), under absolute
#     caps;
#   * at every sample, no job that finished more than retention (+ a little
#     for the launcher's round) ago is still there, and once the load stops
#     every job is deleted;
#   * autovacuum vacuumed taskq.jobs (it needs the workers' statistics);
#   * the executors and the launcher never restarted, and the server log
#     has no ERROR, FATAL or PANIC line, nor a failure logged by a taskq
#     worker.
# Meanwhile a hostile unprivileged role, in a loop, submits jobs with 2,000
# parents three times per transaction, holds the advisory lock keys taskq
# used for parents (29812, id) ahead of the jobs being run, and claims from
# a concurrency-limited queue, then stays idle in that transaction for a
# second: none of it may slow the load or touch the workers.
# Worker memory is RssAnon (private memory: a leak shows there) from
# /proc/<pid>/status; VmRSS also counts the shared buffers a process has
# touched, which legitimately grows toward shared_buffers, so it is only
# capped.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;
use IPC::Run;
use Time::HiRes qw(time sleep);

my $LOAD_SECONDS = 100;
my $RATE = 200;           # jobs per second
my $TICK = 0.1;           # seconds between submissions
my $SAMPLE_EVERY = 10;    # seconds
my $RETENTION = 2;        # seconds

my $node = taskq_node(
	'soak',
	'taskq.retention' => "${RETENTION}s",
	shared_buffers => '32MB',
	autovacuum => 'on',
	autovacuum_naptime => '1s',
	autovacuum_vacuum_threshold => '200',
	autovacuum_vacuum_scale_factor => '0.05',
	autovacuum_vacuum_insert_threshold => '1000',
	autovacuum_vacuum_insert_scale_factor => '0.05',
	autovacuum_analyze_threshold => '200',
	autovacuum_analyze_scale_factor => '0.05',
	autovacuum_vacuum_cost_delay => '0',
	log_statement => 'none',
);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE EXTENSION taskq;
CREATE SEQUENCE soak_runs;
CREATE FUNCTION noop(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('soak_runs');
END $$;
SELECT taskq.register_handler('noop', 'noop(jsonb)');
CREATE TABLE soak_submitted (n bigint NOT NULL);
INSERT INTO soak_submitted VALUES (0);

-- Submits per_tick jobs every tick seconds for the given time, one
-- transaction per tick; paced on the clock so the rate stays steady.
CREATE PROCEDURE soak_load(seconds float8, per_tick integer, tick float8)
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
    k bigint := 0;
    batch jsonb := (SELECT jsonb_agg(jsonb_build_object('job_type', 'noop', 'payload', jsonb_build_object('i', i)))
                    FROM generate_series(1, per_tick) i);
BEGIN
    WHILE clock_timestamp() < t0 + seconds * interval '1 s' LOOP
        PERFORM taskq.submit_many(batch);
        k := k + 1;
        UPDATE soak_submitted SET n = k * per_tick;
        COMMIT;
        PERFORM pg_sleep(greatest(0, extract(epoch FROM t0 + k * tick * interval '1 s' - clock_timestamp())));
    END LOOP;
END $$;
});

ok(executors_up($node, 2), 'two executors are up');

# The hostile role, its 2,000 parents (never claimed) and its limited queue.
sql(q{
CREATE ROLE hostile LOGIN IN ROLE taskq_user;
SELECT taskq.configure_queue('hostile_q', concurrency => 1);
SET ROLE hostile;
SELECT count(*) FROM taskq.submit_many((SELECT jsonb_agg(jsonb_build_object('job_type', 'ext', 'queue', 'hostile_parents'))
                                        FROM generate_series(1, 2000)));
SELECT count(*) FROM taskq.submit_many((SELECT jsonb_agg(jsonb_build_object('job_type', 'ext', 'queue', 'hostile_q'))
                                        FROM generate_series(1, 500)));
RESET ROLE;
CREATE TABLE hostile_held (n bigint NOT NULL);
INSERT INTO hostile_held VALUES (0);
GRANT UPDATE, SELECT ON hostile_held TO hostile;
CREATE PROCEDURE hostile_load(seconds float8) LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
    parents bigint[] := (SELECT array_agg(id) FROM taskq.jobs WHERE queue = 'hostile_parents');
    next_id bigint;
    held bigint;
BEGIN
    WHILE clock_timestamp() < t0 + seconds * interval '1 s' LOOP
        PERFORM taskq.submit('ext', queue => 'hostile_children', depends_on => parents)
          FROM generate_series(1, 3);
        next_id := (SELECT max(id) FROM taskq.jobs);
        PERFORM pg_advisory_xact_lock_shared(29812, (next_id + i)::integer) FROM generate_series(1, 50) i;
        SELECT id INTO held FROM taskq.claim(ARRAY['hostile_q'], 'hostile', 1);
        PERFORM pg_sleep(1);
        IF held IS NOT NULL THEN
            PERFORM taskq.complete(held);
            UPDATE hostile_held SET n = n + 1;
        END IF;
        COMMIT;
    END LOOP;
END $$;
GRANT EXECUTE ON PROCEDURE hostile_load(float8) TO hostile;
});

# pid => kind of the taskq workers
sub worker_pids
{
	my %pids;
	for my $line (split /\n/, sql("SELECT pid, kind FROM taskq.workers"))
	{
		my ($pid, $kind) = split /\|/, $line;
		$pids{$pid} = $kind;
	}
	return \%pids;
}

sub proc_kb
{
	my ($pid, $field) = @_;
	open(my $fh, '<', "/proc/$pid/status") or return undef;
	while (<$fh>)
	{
		return $1 if /^$field:\s+(\d+)\s+kB/;
	}
	return undef;
}

my $pids_before = worker_pids();
my $log_from = -s $node->logfile;

my ($load_out, $load_err) = ('', '');
my $load = IPC::Run::start(
	[
		'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
		'-c', "CALL soak_load($LOAD_SECONDS, " . int($RATE * $TICK) . ", $TICK)"
	],
	'>', \$load_out, '2>', \$load_err);
my ($hostile_out, $hostile_err) = ('', '');
my $hostile = IPC::Run::start(
	[
		'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') . ' user=hostile',
		'-c', "CALL hostile_load($LOAD_SECONDS - 5)"
	],
	'>', \$hostile_out, '2>', \$hostile_err);
my $t0 = time;

# Sample until the load stops.
my @samples;
my $late_total = 0;
while (1)
{
	my $next = $t0 + $SAMPLE_EVERY * (@samples + 1);
	last if $next > $t0 + $LOAD_SECONDS - 1;
	sleep($next - time) if $next > time;
	my ($jobs_size, $logs_size, $jobs_dead, $logs_dead, $count, $late, $submitted) = split /\|/, sql(qq{
SELECT pg_total_relation_size('taskq.jobs'), pg_total_relation_size('taskq.job_logs'),
       (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'taskq.jobs'::regclass),
       (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'taskq.job_logs'::regclass),
       (SELECT count(*) FROM taskq.jobs),
       (SELECT count(*) FROM taskq.jobs
        WHERE finished_at < now() - interval '$RETENTION s' - interval '3 s'),
       (SELECT n FROM soak_submitted)});
	my %s = (
		t => sprintf('%.0f', time - $t0),
		jobs_size => $jobs_size,
		logs_size => $logs_size,
		dead => $jobs_dead + $logs_dead,
		count => $count,
		late => $late,
		submitted => $submitted,
		rss_anon => 0,
		vm_rss => 0);
	for my $pid (keys %$pids_before)
	{
		my $anon = proc_kb($pid, 'RssAnon');
		my $rss = proc_kb($pid, 'VmRSS');
		$s{rss_anon} = $anon if defined $anon && $anon > $s{rss_anon};
		$s{vm_rss} = $rss if defined $rss && $rss > $s{vm_rss};
	}
	$late_total += $late;
	push @samples, \%s;
	note(join(', ', map { "$_ $s{$_}" } qw(t submitted count late jobs_size logs_size dead rss_anon vm_rss)));
}

ok(IPC::Run::finish($load), 'the load generator ran to the end') or diag($load_err);
ok(IPC::Run::finish($hostile), 'the hostile role ran to the end') or diag($hostile_err);
my ($children, $hostile_done) = split /\|/, sql(q{
SELECT count(*) FILTER (WHERE queue = 'hostile_children'),
       (SELECT n FROM hostile_held)
FROM taskq.jobs});
cmp_ok($children, '>=', 30, "the hostile role linked $children jobs to 2,000 parents each");
cmp_ok($hostile_done, '>=', 10, "it claimed and held $hostile_done jobs of its limited queue");
# its parents end, and with them its blocked children
sql(q{SELECT count(taskq.cancel(id)) FROM taskq.jobs WHERE queue IN ('hostile_parents', 'hostile_q')
      AND status IN ('pending', 'blocked')});
my $submitted = sql('SELECT n FROM soak_submitted');
cmp_ok($submitted, '>=', int(0.8 * $RATE * $LOAD_SECONDS),
	"the load was steady: $submitted jobs submitted in ${LOAD_SECONDS}s");

# Once the load stops, everything drains and is deleted.
ok( $node->poll_query_until('postgres', 'SELECT count(*) FROM taskq.jobs', '0'),
	'after the load, every finished job is deleted');
is(sql("SELECT last_value FROM soak_runs"), $submitted,
	'every submitted job ran exactly once');
my ($claimed, $succeeded, $failed) = split /\|/,
  sql('SELECT claimed, succeeded, failed FROM taskq._counters()');
is($failed, '0', 'no attempt failed');
is($succeeded, $submitted, 'the executors counted every success');
# (taskq.job_logs gets rows only for what went wrong, here a few cancels:
# too few dead rows for its autovacuum threshold of 1,000 in some runs)
ok( $node->poll_query_until('postgres',
		q{SELECT autovacuum_count > 0 FROM pg_stat_user_tables
		   WHERE relid = 'taskq.jobs'::regclass}),
	'autovacuum saw the workers\' dead tuples and vacuumed taskq.jobs');
is($late_total, 0,
	'at every sample, no job finished more than retention (+3 s) ago was left');

# Flat: the last third against the first third.
my $third = int(@samples / 3);
cmp_ok($third, '>=', 2, 'enough samples');
sub max_of
{
	my ($key, @s) = @_;
	my $m = 0;
	for (@s) { $m = $_->{$key} if $_->{$key} > $m; }
	return $m;
}
# allowance: what counts as "about zero" for each measure
my %slack = (
	jobs_size => 1024 * 1024,
	logs_size => 1024 * 1024,
	dead => 5000,
	count => 1000,
	rss_anon => 4096);
my %cap = (
	jobs_size => 32 * 1024 * 1024,
	logs_size => 32 * 1024 * 1024,
	dead => 200000,
	count => 20 * $RATE,
	rss_anon => 100 * 1024,
	vm_rss => 200 * 1024);
for my $key (qw(jobs_size logs_size dead count rss_anon))
{
	my $first = max_of($key, @samples[ 0 .. $third - 1 ]);
	my $last = max_of($key, @samples[ @samples - $third .. $#samples ]);
	cmp_ok($last, '<=', 2 * $first + $slack{$key},
		"$key stays flat (first third max $first, last third max $last)");
}
for my $key (sort keys %cap)
{
	my $max = max_of($key, @samples);
	cmp_ok($max, '<=', $cap{$key}, "$key stays under $cap{$key} (max $max)");
}

is_deeply(worker_pids(), $pids_before, 'the executors and the launcher never restarted');

my $log = substr(slurp_file($node->logfile), $log_from);
my @bad = grep { /\b(ERROR|FATAL|PANIC):/ || /taskq (executor|launcher): .* failed/ }
  split /\n/, $log;
is(scalar(@bad), 0, 'no ERROR, FATAL, PANIC or taskq failure in the server log')
  or diag(join("\n", @bad[ 0 .. ($#bad < 9 ? $#bad : 9) ]));

$node->stop;
done_testing();
