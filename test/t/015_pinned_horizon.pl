# Claims under a pinned xmin horizon.
#
# A transaction that holds an old snapshot keeps every claimed job's entry in
# the runnable index alive: the entries cannot even be marked dead, so a
# claim that read its lane from the front would visit all of them, and claim
# cost would grow with the jobs processed while the snapshot lasts.  The scan
# floors (src/scan_floor.c) start each claim at the first pending job.
#
# Cost is counted in index blocks a claim reads in its own transaction
# (pg_stat_get_xact_blocks_fetched), not in time, so the test does not depend
# on the machine's speed.  A positive control reads the lane from the front
# and proves the dead entries are really there.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;

my $node = taskq_node('pinned_horizon', 'taskq.notify_level' => 'none', autovacuum => 'off');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE EXTENSION taskq;
CREATE FUNCTION noop(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$ BEGIN END $$;
SELECT taskq.register_handler('noop', 'noop(jsonb)');
});
ok( executors_up($node, 2),
	'the executors are up');

# blocks of the given indexes (default: the runnable index) read by one
# statement, in a transaction of its own (rolled back)
sub blocks_read
{
	my ($statement, $index) = @_;
	$index //= 'taskq.jobs_runnable_idx';
	my @lines = split /\n/, sql(qq{
BEGIN;
SET LOCAL enable_seqscan = off;
SET LOCAL enable_bitmapscan = off;
CREATE TEMP TABLE b0 ON COMMIT DROP AS
    SELECT sum(pg_stat_get_xact_blocks_fetched(i::regclass)) AS n FROM unnest('{$index}'::text[]) i;
$statement;
SELECT sum(pg_stat_get_xact_blocks_fetched(i::regclass)) - max(n) FROM unnest('{$index}'::text[]) i, b0;
ROLLBACK;
});
	return $lines[-1];
}

# the pin: a REPEATABLE READ snapshot held open
my $pin = $node->background_psql('postgres');
$pin->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
$pin->query_safe('SELECT count(*) FROM taskq.jobs');
my $pin_pid = $pin->query_safe('SELECT pg_backend_pid()');
is(sql("SELECT backend_xmin IS NOT NULL FROM pg_stat_activity WHERE pid = $pin_pid"),
	't', 'a snapshot pins the xmin horizon');

# External lane: 20,000 jobs claimed in batches while the horizon is pinned.
my $n = 20000;
sql("SELECT count(*) FROM taskq.submit_many((SELECT jsonb_agg(jsonb_build_object('job_type', 'ext'))
                                              FROM generate_series(1, $n)))");
my $first = blocks_read("SELECT count(*) FROM taskq.claim(NULL, 'tap-worker', 1)");
for (1 .. $n / 1000)
{
	sql("SELECT count(*) FROM taskq.claim(NULL, 'tap-worker', 1000)");
}
is(sql("SELECT count(*) FROM taskq.jobs WHERE status = 'running' AND NOT in_database"),
	$n, "$n external jobs claimed");
sql("SELECT count(*) FROM taskq.submit_many((SELECT jsonb_agg(jsonb_build_object('job_type', 'ext'))
                                              FROM generate_series(1, 10)))");
my $front = blocks_read(
	"SELECT count(*) FROM (SELECT id FROM taskq.jobs WHERE status = 'pending' AND NOT in_database
	                        ORDER BY effective_priority, run_at, id LIMIT 1) s");
cmp_ok($front, '>', 40,
	"control: reading the lane from the front visits the claimed jobs' entries ($front blocks)");
my $after = blocks_read("SELECT count(*) FROM taskq.claim(NULL, 'tap-worker', 1)");
# at most the entries of the batch claimed just before (1,000: ~5 blocks) and
# the index descent, against $front for the whole lane
cmp_ok($after, '<=', 25,
	"a claim after $n claims reads a bounded number of index blocks ($first -> $after)");

# In-database lane: the executors drain 20,000 jobs under the same pin, while
# a critical job waits for tomorrow (a delayed job of a higher priority must
# not hold the normal jobs' floor back).
sql("SELECT taskq.submit('noop', priority => 'critical', run_at => now() + interval '1 day')");
sql("SELECT count(*) FROM taskq.submit_many((SELECT jsonb_agg(jsonb_build_object('job_type', 'noop'))
                                              FROM generate_series(1, $n)))");
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = $n FROM taskq.jobs WHERE job_type = 'noop' AND status = 'succeeded'"),
	"the executors ran all $n jobs under the pinned horizon");
my $idle = blocks_read(
	"SELECT count(*) FROM taskq._claim(true, NULL, 'tap-probe', 64, NULL, 4, 1024, NULL)");
cmp_ok($idle, '<=', 10, "an executor lane claim after the drain reads $idle index blocks");
my $next = blocks_read("SELECT taskq._next_run_at()");
cmp_ok($next, '<=', 12, "an idle executor's look for the next run_at reads $next index blocks");
$front = blocks_read(
	"SELECT count(*) FROM (SELECT id FROM taskq.jobs WHERE status = 'pending' AND in_database AND effective_priority = 'normal'
	                        ORDER BY effective_priority, run_at, id LIMIT 1) s");
cmp_ok($front, '>', 40, "control: the lane holds the drained jobs' entries ($front blocks)");

# Recovery: the pin ends, vacuum clears the entries, work goes on.
$pin->query_safe('COMMIT');
$pin->quit;
sql('VACUUM taskq.jobs');
$front = blocks_read(
	"SELECT count(*) FROM (SELECT id FROM taskq.jobs WHERE status = 'pending' AND in_database AND effective_priority = 'normal'
	                        ORDER BY effective_priority, run_at, id LIMIT 1) s");
cmp_ok($front, '<=', 10, "after the pin ends and vacuum runs, the lane is short again ($front blocks)");
my $last = sql("SELECT taskq.submit('noop')");
is(sql("SELECT taskq.wait(ARRAY[$last], '60 s')"), 't', 'a job submitted afterwards runs');

# A claim naming its queue reads that queue's entries only, not the backlog of
# another queue sorting before it.
sql("SELECT count(*) FROM taskq.submit_many((SELECT jsonb_agg(jsonb_build_object('job_type', 'ext', 'queue', 'backlog'))
                                              FROM generate_series(1, $n)))");
sql("SELECT taskq.submit('ext', queue => 'other')");
my $other = blocks_read("SELECT count(*) FROM taskq.claim(ARRAY['other'], 'tap-worker', 1)",
	'taskq.jobs_runnable_queue_idx,taskq.jobs_runnable_idx');
cmp_ok($other, '<=', 12,
	"a claim of queue 'other' behind $n pending jobs of queue 'backlog' reads $other index blocks");
is(sql("SELECT queue FROM taskq.claim(ARRAY['other'], 'tap-worker', 1)"), 'other',
	'and gets its job');

# TRUNCATE drops the table's floors (a bulk load without triggers may follow)
is(sql("SELECT count(*) FROM taskq._scan_floors('taskq.jobs', false, '{normal}') WHERE id IS NOT NULL"),
	'1', 'the external lane has a floor');
sql('TRUNCATE taskq.jobs CASCADE');
is(sql("SELECT count(*) FROM taskq._scan_floors('taskq.jobs', false, '{normal}') WHERE id IS NOT NULL"),
	'0', 'TRUNCATE drops it');

$node->stop;
done_testing();
