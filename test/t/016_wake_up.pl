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
# polling all but off from now on (the launcher polls for the extension too)
sql(q{ALTER SYSTEM SET taskq.poll_interval = '10min'});
sql(q{SELECT pg_reload_conf()});
# let them finish their first claims and fall asleep
$node->poll_query_until('postgres',
	"SELECT count(*) = 3 FROM taskq.workers WHERE kind = 'executor' AND state = 'idle'")
  or die 'the executors never went idle';
sleep 1;

# executors' calls of taskq._claim, as far as their statistics are flushed
sub claims
{
	return sql("SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions
	            WHERE schemaname = 'taskq' AND funcname = '_claim'");
}

# 1. one job at a time, each after the last has run: each commit wakes one
#    executor, which claims it and then looks once more for work (2 claims)
my $before = claims();
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
# executors flush their statistics within a second of their last claim
sleep 2;
my $per_job = (claims() - $before) / $jobs;
ok($per_job > 0, "the executors' claims are counted ($per_job per job)");
# waking all three made each of them claim: 3 or more claims per job
cmp_ok($per_job, '<=', 2.5, 'a commit wakes one executor: at most 2.5 claims per job');

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
