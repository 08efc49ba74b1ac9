# Resource limits under load: 3000 jobs with random cpu_units, memory_mb and
# priorities on 4 executors.  Each handler records its own start and end
# (committed with the job), and SQL over those intervals proves that the
# jobs running at any instant never held more than taskq.max_cpu_units /
# taskq.max_memory_mb together.  A big job submitted early is not starved.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;

my $jobs    = 3000;
my $max_cpu = 4;
my $max_mem = 1024;

my $node = taskq_node(
	'resources_stress',
	'taskq.workers' => '4',
	'taskq.max_cpu_units' => "$max_cpu",
	'taskq.max_memory_mb' => "$max_mem",
	'taskq.batch_size' => '1',
	'taskq.big_job_wait' => '1s',
);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE EXTENSION taskq;
CREATE TABLE runs (job bigint PRIMARY KEY, cpu int, mem int, prio taskq.priority,
                   started timestamptz, ended timestamptz, pid int);
CREATE FUNCTION work(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
    j taskq.jobs;
BEGIN
    SELECT * INTO j FROM taskq.jobs WHERE id = taskq.current_job_id();
    PERFORM pg_sleep((payload->>'ms')::float8 / 1000);
    INSERT INTO runs VALUES (j.id, j.cpu_units, j.memory_mb, j.priority,
                             t0, clock_timestamp(), pg_backend_pid());
END $$;
SELECT taskq.register_handler('work', 'work(jsonb)');
});

ok( executors_up($node, 4),
	'four executors are up');

# One stress round in queue $queue: $n jobs with random needs up to $cpu
# cpu_units and $mem memory_mb and random priorities among $prios, all queued
# before the executors may start.  With $big_job, a critical job needing all
# capacity arrives once the others hold it.
sub stress
{
	my ($queue, $n, $cpu, $mem, $prios, $big_job) = @_;
	my $total = $n + ($big_job ? 1 : 0);
	my $runs = "(SELECT r.* FROM runs r JOIN taskq.jobs j ON j.id = r.job AND j.queue = '$queue')";

	sql("SELECT taskq.pause('$queue')");
	is( sql(
			"DO \$\$ BEGIN PERFORM setseed(0.42); END \$\$;
			 SELECT count(taskq.submit('work', jsonb_build_object('ms', floor(random() * 10)),
			        priority => ('{$prios}'::taskq.priority[])[1 + floor(random() * cardinality('{$prios}'::text[]))::int],
			        queue => '$queue',
			        cpu_units => 1 + floor(random() * $cpu)::int,
			        memory_mb => floor(random() * ($mem + 1))::int))
			   FROM generate_series(1, $n)"),
		$n, "$queue: submitted $n jobs");
	sql("SELECT taskq.resume('$queue')");

	my $big;
	if ($big_job)
	{
		ok( $node->poll_query_until(
				'postgres',
				"SELECT count(*) >= 100 FROM taskq.jobs
				  WHERE queue = '$queue' AND status = 'succeeded'"),
			"$queue: the executors are busy");
		my $left;
		($big, $left) = split /\|/, sql(
			"SELECT taskq.submit('work', '{\"ms\": 5}', priority => 'critical', queue => '$queue',
			                     cpu_units => $max_cpu, memory_mb => $max_mem),
			        (SELECT count(*) FROM taskq.jobs
			          WHERE queue = '$queue' AND status IN ('pending', 'running'))");
		cmp_ok($left, '>=', $n / 2,
			"$queue: the big job $big was submitted early ($left jobs unfinished)");
	}

	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) = 0 FROM taskq.jobs
			  WHERE queue = '$queue' AND status IN ('blocked', 'pending', 'running')"),
		"$queue: every job finished");
	is( sql(
			"SELECT count(*) FILTER (WHERE status = 'succeeded' AND attempts = 1) || '/' || count(*)
			   FROM taskq.jobs WHERE queue = '$queue'"),
		"$total/$total", "$queue: every job succeeded at its first attempt");
	is(sql("SELECT count(*) FROM $runs r"), $total, "$queue: every job recorded its run once");

	# Sweep the start (+) and end (-) events in time order; an end at the same
	# instant as a start comes first (intervals are [start, end)).
	my ($peak_cpu, $peak_mem, $peak_jobs) = split /\|/, sql(
		"SELECT max(cpu), max(mem), max(n) FROM (
		    SELECT sum(dcpu) OVER w AS cpu, sum(dmem) OVER w AS mem, sum(dn) OVER w AS n
		    FROM (SELECT started AS t, 1 AS ord, cpu AS dcpu, mem AS dmem, 1 AS dn FROM $runs r
		          UNION ALL
		          SELECT ended, 0, -cpu, -mem, -1 FROM $runs r) e
		    WINDOW w AS (ORDER BY t, ord ROWS UNBOUNDED PRECEDING)) s");
	note "$queue: peak $peak_cpu cpu_units, $peak_mem memory_mb, $peak_jobs jobs at once";
	cmp_ok($peak_cpu, '<=', $max_cpu, "$queue: running jobs never held more than max_cpu_units");
	cmp_ok($peak_mem, '<=', $max_mem, "$queue: running jobs never held more than max_memory_mb");
	cmp_ok($peak_jobs, '>=', 2, "$queue: jobs did run side by side (the check is not vacuous)");
	is( sql(
			"SELECT count(*) FROM $runs a JOIN $runs b ON a.pid = b.pid AND a.job < b.job
			  AND a.started < b.ended AND b.started < a.ended"),
		'0', "$queue: an executor runs one job at a time");
	is( sql(
			"SELECT count(*) FROM $runs r JOIN taskq.jobs j ON j.id = r.job
			  WHERE r.cpu <> j.cpu_units OR r.mem <> j.memory_mb"),
		'0', "$queue: the recorded needs are the jobs' needs");

	return unless $big_job;
	# Not starved: much of the queue was still to run when the big job ended.
	my $after_big = sql(
		"SELECT count(*) FROM $runs r WHERE started >= (SELECT ended FROM runs WHERE job = $big)");
	cmp_ok($after_big, '>=', $n / 4,
		"$queue: the big job was not starved: $after_big jobs started after it ended");
	is( sql(
			"SELECT count(*) FROM $runs r JOIN runs b ON b.job = $big
			  WHERE r.job <> $big AND r.started < b.ended AND b.started < r.ended"),
		'0', "$queue: nothing ran beside the job that needs all capacity");
	return;
}

my $all = 'critical,high,normal,low';

# One job per claim: four executors reserve and release capacity per job.
stress('single', 2000, $max_cpu, 512, $all, 0);

# Small jobs (1-2 cpu_units) keep part of the capacity busy nearly all the
# time; a critical job needing all of it, submitted early, must still run long
# before the queue drains.
stress('starve', 1000, 2, 256, 'high,normal,low', 1);

# Batches: an executor holds the largest need of its batch while it runs.
sql("ALTER SYSTEM SET taskq.batch_size = 64; SELECT pg_reload_conf()");
ok( $node->poll_query_until(
		'postgres', "SELECT current_setting('taskq.batch_size')", '64'),
	'batching on');
stress('batched', $jobs, $max_cpu, 512, $all, 0);

ok( $node->poll_query_until(
		'postgres',
		"SELECT cpu_units_used || ',' || memory_mb_used FROM taskq.resources", '0,0'),
	'all capacity is given back');

$node->stop;
done_testing();
