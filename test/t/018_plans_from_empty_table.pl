# The executors keep their plans for the life of their session (generic
# plans, made once).  Plans made while taskq.jobs is nearly empty must stay
# cheap once it is big: a join of the batch's ids with the jobs table, planned
# as a hash join over the whole primary key, read every row at every claim
# and completion (0.9 ms per claim on a 5,000-job table; it grows with the
# table).  Counted in buffer accesses per call (pg_stat_statements), with
# autovacuum off so that no ANALYZE replaces the plans made on the small table.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;

my $node = taskq_node('plans_from_empty_table',
	shared_preload_libraries => 'taskq,pg_stat_statements',
	'pg_stat_statements.track' => 'all',
	autovacuum => 'off');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE EXTENSION taskq;
CREATE EXTENSION pg_stat_statements;
CREATE FUNCTION noop(payload jsonb) RETURNS void LANGUAGE sql AS '';
SELECT taskq.register_handler('noop', 'noop(jsonb)');
});
ok(executors_up($node, 2), 'the executors are up');

# one job at a time, as a trickle of work arrives: every batch is a claim of
# one job, a completion and a claim that finds nothing
sub trickle
{
	my ($n) = @_;
	for (1 .. $n)
	{
		my $id = sql("SELECT taskq.submit('noop')");
		return 0 unless sql("SELECT taskq.wait('{$id}', '30 s')") eq 't';
	}
	return 1;
}

ok(trickle(40), 'jobs run while the table is nearly empty (the executors make their plans)');

# the table grows: 100,000 jobs for external workers, half of them running
sql(q{
DO $$BEGIN
    FOR i IN 1..100 LOOP
        PERFORM count(*) FROM taskq.submit_many(
            (SELECT jsonb_agg(jsonb_build_object('job_type', 'ext')) FROM generate_series(1, 1000)));
    END LOOP;
    FOR i IN 1..50 LOOP
        PERFORM count(*) FROM taskq.claim(NULL, 'ext-worker', max_jobs => 1000, lease => '1 hour');
    END LOOP;
END$$;
});
is(sql("SELECT count(*) FROM taskq.jobs WHERE status = 'running'"), '50000',
	'50,000 external jobs running, 50,000 pending');

sql('SELECT pg_stat_statements_reset()');
ok(trickle(60), 'jobs run on the big table');

# the executors' own statements (the claim, the completion, _complete_held
# for jobs whose claim only locked them, and the next-run lookup; the lock
# of a batch whose claim committed first, for slow jobs), with everything
# nested in them
my $rows = sql(q{
SELECT round(sum(shared_blks_hit + shared_blks_read) / sum(calls)),
       left(regexp_replace(query, '\s+', ' ', 'g'), 60)
  FROM pg_stat_statements
 WHERE toplevel AND calls >= 20
   AND query ~ '_claim\(true|_complete_batch|_complete_held|_next_run_at|FOR NO KEY UPDATE OF j'
 GROUP BY query ORDER BY 1 DESC});
note("buffer accesses per call, by executor statement:\n$rows");
my @costs = map { (split /\|/)[0] } split /\n/, $rows;
cmp_ok(scalar(@costs), '>=', 3, 'the claim, completion and next-run statements ran');
my $worst = (sort { $b <=> $a } @costs)[0] // 0;
cmp_ok($worst, '<', 200,
	'no executor statement reads the table: at most 200 buffers per call (a full pkey scan is thousands)');

$node->stop;
done_testing();
