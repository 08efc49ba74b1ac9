# taskq.wake_before_flush: a commit that makes a job runnable wakes an
# executor before its commit record is flushed (COMMIT still returns only
# after the flush: the same XLogFlush as flush_after_notify's).  commit_delay (a 100 ms sleep in every WAL flush, whoever
# flushes) makes flushes long enough to watch: with the setting on, the
# executor claims the job while the submitter is still flushing; off, only
# after.  Nothing else flushes meanwhile: the WAL writer is stopped (SIGSTOP),
# the launcher, autovacuum, checkpoints and the background writer are idle,
# and each job has finished before the next is submitted.  Under synchronous
# replication the job stays invisible until the standby has it, as
# PostgreSQL keeps it.  Nobody listens, so no notification is involved (019
# covers those).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;

# (streaming allowed: a cluster without WAL senders never waits for a
# standby; fsync on: commit_delay sleeps only when WAL is really flushed)
my $node = PostgreSQL::Test::Cluster->new('wake_before_flush');
$node->init(allows_streaming => 1);
$node->append_conf(
	'postgresql.conf',
	taskq_conf(
		fsync => 'on',
		'taskq.workers' => 1,
		autovacuum => 'off',
		checkpoint_timeout => '1h',
		bgwriter_lru_maxpages => 0,
		wal_writer_delay => '10s'));
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE EXTENSION taskq;
CREATE FUNCTION noop(payload jsonb) RETURNS void LANGUAGE sql AS '';
SELECT taskq.register_handler('t', 'noop(jsonb)');
});
ok(executors_up($node, 1), 'the executor is up');
sql("ALTER SYSTEM SET taskq.poll_interval = '10min'");
sql('ALTER SYSTEM SET commit_delay = 100000');
sql('ALTER SYSTEM SET commit_siblings = 0');
sql('SELECT pg_reload_conf()');
my $walwriter = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'");
ok(kill('STOP', $walwriter), 'the WAL writer is stopped');
END { kill('CONT', $walwriter) if $walwriter; }    # even if a test dies

# Submit one job per transaction.  Whoever flushes a commit record sleeps
# 100 ms first (the executor's own flushes may be cut short: a stray SIGALRM
# of its timer ends pg_usleep).  Per job: did the executor claim it before
# the submit's flush could have ended (less than 100 ms after the submit
# began), and did that COMMIT return only after a flush (100 ms or more after
# the submit began; asserted only where the submitter alone flushes)?
sub submit_slowly
{
	my ($setting, $queue, $n) = @_;
	my $out = sql(qq{
SET taskq.wake_before_flush = $setting;
CREATE TEMP TABLE returned (id bigint, at timestamptz);
DO \$\$
DECLARE
    job bigint;
BEGIN
    FOR i IN 1..$n LOOP
        job := taskq.submit('t', queue => '$queue');
        COMMIT;
        INSERT INTO returned VALUES (job, clock_timestamp());
        COMMIT;
        FOR tick IN 1..3000 LOOP
            EXIT WHEN EXISTS (SELECT FROM taskq.jobs WHERE id = job AND status = 'succeeded');
            IF tick = 3000 THEN
                RAISE 'job % did not run within 30 s', job;
            END IF;
            PERFORM pg_sleep(0.01);
        END LOOP;
        COMMIT;                        -- the next submit's created_at is its start
    END LOOP;
END \$\$;
SELECT count(*) FILTER (WHERE j.started_at < j.created_at + interval '100 ms'),
       count(*) FILTER (WHERE r.at - j.created_at >= interval '100 ms')
  FROM returned r JOIN taskq.jobs j ON j.id = r.id;
});
	return split /\|/, $out;
}

# the executor is idle and waiting for a wake-up at every submit
# (on: the executor's claim may flush the submit's commit record before the
# submitter does, so its COMMIT may return sooner, durable all the same)
my ($early) = submit_slowly('on', 'on', 5);
ok($early >= 1, "on: the executor claimed a job during its submit's flush ($early of 5)");

my $flushed;
($early, $flushed) = submit_slowly('off', 'off', 5);
is($early, 0, 'off: no job is claimed before its commit is flushed');
is($flushed, 5, 'off: every COMMIT returned after its flush');

ok(kill('CONT', $walwriter), 'the WAL writer goes on');
sql('ALTER SYSTEM RESET taskq.poll_interval');
sql('ALTER SYSTEM RESET commit_delay');
sql('ALTER SYSTEM RESET commit_siblings');

# under synchronous replication (a standby that never connects), PostgreSQL's order
sql("ALTER SYSTEM SET synchronous_standby_names = 'nobody'");
sql('SELECT pg_reload_conf()');
my $s = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $s->query_safe('SELECT pg_backend_pid()');
$s->query_until(qr/sent/, "\\echo sent\nSELECT taskq.submit('t', queue => 'syncrep');\n");
ok( $node->poll_query_until('postgres',
		"SELECT wait_event = 'SyncRep' FROM pg_stat_activity WHERE pid = $pid"),
	'with a synchronous standby, the submit waits for it');
is(sql("SELECT count(*) FROM taskq.jobs WHERE queue = 'syncrep'"), '0',
	'meanwhile no session sees the job, so no executor can run it');
sql("SELECT pg_cancel_backend($pid)");
$node->poll_query_until('postgres',
	"SELECT wait_event IS DISTINCT FROM 'SyncRep' FROM pg_stat_activity WHERE pid = $pid");
$s->quit;
is(sql("SELECT count(*) FROM taskq.jobs WHERE queue = 'syncrep'"), '1',
	'committed locally once the wait is cancelled (as PostgreSQL does)');

# (the executor's claim of it waits for the standby in turn, until there is none)
sql('ALTER SYSTEM RESET synchronous_standby_names');
sql('SELECT pg_reload_conf()');
ok( $node->poll_query_until('postgres',
		"SELECT status = 'succeeded' FROM taskq.jobs WHERE queue = 'syncrep'"),
	'without the standby, the job runs');
$node->stop;
done_testing();
