# Batches bigger than PostgreSQL's subtransaction cache.  Each handler runs
# in a subtransaction; one that writes commits a subtransaction id into the
# batch's transaction, and a backend caches only 64 of them (past that, every
# snapshot in the server reads pg_subtrans).  Handlers that do not write may
# share a batch of up to taskq.batch_size; a batch whose handlers filled the
# cache gives its other jobs back, uncounted, and the next batches shrink.
#
# Each handler returns txid_current_if_assigned(): the batch transaction's
# xid (the executor's own writes assign it), without writing anything itself.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;

my $node = taskq_node('batch_subxids', 'taskq.workers' => '1', 'taskq.batch_size' => '256');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE EXTENSION taskq;
CREATE TABLE written (job bigint, batch xid8);
CREATE FUNCTION look(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('batch', txid_current_if_assigned())
$$;
CREATE FUNCTION write(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO written VALUES (taskq.current_job_id(), pg_current_xact_id());
    RETURN jsonb_build_object('batch', txid_current_if_assigned());
END $$;
SELECT taskq.register_handler('look', 'look(jsonb)');
SELECT taskq.register_handler('write', 'write(jsonb)');
});
ok(executors_up($node, 1), 'the executor is up');

# Run the jobs of `types' (submitted in that order, in one transaction) and
# wait for all of them.
sub run_jobs
{
	my ($types) = @_;
	sql("SELECT taskq.pause('default')");
	sql(qq{SELECT count(*) FROM taskq.submit_many(
	           (SELECT jsonb_agg(jsonb_build_object('job_type', t) ORDER BY n)
	              FROM unnest('{$types}'::text[]) WITH ORDINALITY AS x(t, n)))});
	sql("SELECT taskq.resume('default')");
	return sql(q{SELECT taskq.wait(coalesce(array_agg(id), '{}'), '120 s') FROM taskq.jobs});
}

sub types { my ($n, $t) = @_; return join(',', ($t) x $n); }

# 1. Handlers that do not write: batches grow past 64.
is(run_jobs(types(700, 'look')), 't', '700 read-only jobs finished');
is(sql("SELECT count(*) FROM taskq.jobs WHERE status = 'succeeded' AND attempts = 1"), '700',
	'all succeeded at their first attempt');
cmp_ok(sql(q{SELECT max(n) FROM (SELECT count(*) AS n FROM taskq.jobs
             GROUP BY result->>'batch') b}), '>', 64,
	'a batch of read-only handlers ran more than 64 jobs');

# 2. After those, writing handlers: the first batch that meets them is big.
sql("TRUNCATE taskq.job_logs, taskq.job_dependencies, taskq.jobs");
is(run_jobs(types(300, 'look') . ',' . types(300, 'write')), 't', '600 mixed jobs finished');
is(sql("SELECT count(*) FROM taskq.jobs WHERE status = 'succeeded' AND attempts = 1"), '600',
	'all succeeded, none charged an attempt');
is(sql(q{SELECT count(*) || '/' || count(DISTINCT job) FROM written}), '300/300',
	'every writing handler ran exactly once');
is(sql(q{SELECT max(n) FROM (SELECT count(*) AS n FROM written GROUP BY batch) b}), '64',
	'no batch committed more than 64 writing handlers');
my $given_back = sql(q{SELECT count(*) FROM taskq.job_logs
                        WHERE message LIKE 'given back%' AND error LIKE '%every cached subtransaction id%'});
cmp_ok($given_back, '>', 0, 'the batch that filled the cache gave its other jobs back');
# 44 read-only and 212 writing jobs filled the first batch: 148 went back; the
# claim in the same transaction shrank to what the batch left room for (108),
# then to 64.  Batches that kept their size would give back 192 each time.
cmp_ok($given_back, '<', 250, "and the next batches shrank ($given_back given back)");
is(sql(q{SELECT count(*) FROM taskq.jobs j
          WHERE EXISTS (SELECT 1 FROM taskq.job_logs l WHERE l.job_id = j.id AND l.message LIKE 'given back%')
            AND (j.status <> 'succeeded' OR j.attempts <> 1)}), '0',
	'the jobs given back ran later, uncounted');
is(sql(q{SELECT count(*) FROM taskq.jobs WHERE run_at <> created_at}), '0',
	'and kept their run_at (their place in line)');

$node->stop;
done_testing();
