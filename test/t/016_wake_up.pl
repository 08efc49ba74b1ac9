# Wake-ups: with polling all but off (10 min), a commit that makes a job
# runnable starts it at once; it wakes one idle executor, not all of them;
# and a burst still reaches every executor, each one that claims a full batch
# waking the next.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;
use Time::HiRes qw(time usleep);

my $node = taskq_node('wake_up', 'taskq.workers' => '3', track_functions => 'pl');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE EXTENSION taskq;
CREATE TABLE runs (job bigint, pid int, at timestamptz DEFAULT clock_timestamp());
GRANT ALL ON runs TO PUBLIC;
CREATE FUNCTION record_run(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO runs (job, pid) VALUES (taskq.current_job_id(), pg_backend_pid());
    PERFORM pg_sleep((payload->>'sleep')::float8);
END $$;
SELECT taskq.register_handler('record_run', 'record_run(jsonb)');
});
ok(executors_up($node, 3), 'three executors are up');

# executors' calls of taskq._claim, as far as their statistics are flushed
sub claims
{
	return sql("SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions
	            WHERE schemaname = 'taskq' AND funcname = '_claim'");
}

# An executor keeps statistics pending for up to 10 s (PGSTAT_IDLE_INTERVAL)
# and then wakes up to flush them, claiming once on the way: the count is
# final, and every executor asleep for good, once it stays still for 12 s.
sub settled_claims
{
	my $deadline = time() + 120;
	my $last = claims();
	while (time() < $deadline)
	{
		sleep 12;
		my $now = claims();
		return $now if $now == $last;
		$last = $now;
	}
	die 'the claim count never settled';
}

# polling all but off from now on (the launcher polls for the extension too);
# the reload wakes every executor, which reads it before its next claim
sql(q{ALTER SYSTEM SET taskq.poll_interval = '10min'});
sql(q{SELECT pg_reload_conf()});
my $before = settled_claims();
$node->poll_query_until('postgres',
	"SELECT count(*) = 3 FROM taskq.workers WHERE kind = 'executor' AND state = 'idle'")
  or die 'the executors never went idle';

# 1. one job at a time, each after the last has run: each commit wakes one
#    executor, which claims it and then looks once more for work (2 claims;
#    waking all three made 3 or more)
my $jobs = 20;
my $slowest = 0;
for my $i (1 .. $jobs)
{
	my $t0 = time();
	my $id = sql(q{SELECT taskq.submit('record_run', '{"sleep": 0}')});
	$node->poll_query_until('postgres',
		"SELECT status = 'succeeded' FROM taskq.jobs WHERE id = $id")
	  or die "job $id never ran";
	$slowest = time() - $t0 if time() - $t0 > $slowest;
	usleep(50_000);
}
ok($slowest < 5, sprintf('with a 10 min poll interval, every job ran at once (slowest %.2f s)', $slowest));
# (plus the claims of executors woken to flush statistics: one per executor
# and 10 s at most)
my $claims = settled_claims() - $before;
cmp_ok($claims, '>=', 2 * $jobs, "each job took a claim and a look for more ($claims claims)");
cmp_ok($claims, '<=', 2 * $jobs + 6, 'a commit woke one executor, not all three');

# 2. a burst in one transaction, more than three batches of the largest size
#    (64): the woken executor's full batch wakes the next, and so on
sql(q{SELECT count(*) FROM taskq.submit_many(
        (SELECT jsonb_agg(jsonb_build_object('job_type', 'record_run', 'payload', '{"sleep": 0.01}'::jsonb))
           FROM generate_series(1, 200)))});
$node->poll_query_until('postgres',
	"SELECT count(*) = 200 FROM taskq.jobs WHERE payload->>'sleep' = '0.01' AND status = 'succeeded'")
  or die 'the burst never finished';
is(sql(q{SELECT count(DISTINCT worker) FROM taskq.jobs WHERE payload->>'sleep' = '0.01'}),
	'3', 'the burst ran on all three executors without any poll');

$node->stop;
done_testing();
