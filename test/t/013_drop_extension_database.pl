# The database under taskq changes while its workers run jobs:
#  - DROP EXTENSION taskq: no crash, the workers stay and wait; after
#    CREATE EXTENSION they run jobs again;
#  - ALTER DATABASE ... RENAME and DROP DATABASE of taskq.database succeed
#    at once although workers are connected (src/database_guard.c), the
#    launcher does not reconnect in a loop (src/launcher.c backs off), and
#    once the database is back the workers are back.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('drop_ext_db');
$node->init;
$node->start;

# qdb exists before taskq is loaded, so the launcher connects at once
my $setup = q{
CREATE EXTENSION taskq;
CREATE TABLE IF NOT EXISTS done (job bigint PRIMARY KEY);
TRUNCATE done;  -- job ids start again with a new extension
CREATE TABLE IF NOT EXISTS nap_len (seconds float8);
CREATE OR REPLACE FUNCTION work(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(coalesce((payload->>'sleep')::float8, (SELECT seconds FROM nap_len), 0));
    INSERT INTO done VALUES (taskq.current_job_id());
END $$;
SELECT taskq.register_handler('work', 'work(jsonb)');
};
$node->safe_psql('postgres', 'CREATE DATABASE qdb');
$node->safe_psql('qdb', $setup);
$node->append_conf('postgresql.conf',
	taskq_conf('taskq.database' => 'qdb', 'taskq.shutdown_grace' => '60s'));
$node->restart;

sub qdb { return $node->safe_psql('qdb',      $_[0]); }
sub pg  { return $node->safe_psql('postgres', $_[0]); }

sub log_size  { return -s $node->logfile; }
sub log_since { return substr(slurp_file($node->logfile), $_[0]); }

# taskq's processes connected to a database, seen from the postgres
# database (a launcher waiting for its database to be created is not)
sub worker_pids
{
	return pg(
		"SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity
		  WHERE backend_type IN ('taskq launcher', 'taskq executor') AND datname IS NOT NULL");
}

# the launcher's reports of a missing qdb logged since $from (said once,
# as a WARNING, then it waits: src/launcher.c)
sub launcher_fatals
{
	my @l = (log_since($_[0]) =~ /database "qdb"(?: in taskq.databases)? does not exist/g);
	return scalar(@l);
}

ok(executors_up($node, 2, 'qdb'), 'the executors run in qdb');

############################################################################
# DROP EXTENSION while the executors run jobs, three times.
############################################################################
my $pids = worker_pids();
for my $round (1 .. 3)
{
	qdb("SELECT count(taskq.submit('work', '{\"sleep\": 0.01}')) FROM generate_series(1, 200)");
	ok( $node->poll_query_until(
			'qdb', "SELECT count(*) >= 10 FROM taskq.jobs WHERE status = 'succeeded'"),
		"round $round: the executors are running jobs");
	my $log_at = log_size();
	my $t0     = time();
	# the executors hold locks on taskq's tables in every transaction
	my ($rc, $out, $err) = $node->psql('qdb', 'DROP EXTENSION taskq');
	my $took = time() - $t0;
	is($rc, 0, "round $round: DROP EXTENSION succeeded") or diag $err;
	cmp_ok($took, '<', 10, sprintf('in %.1fs', $took));
	# a bounded window: what do the workers do without their extension?
	sleep 2;
	is(worker_pids(), $pids,
		'the same launcher and executors are still there (no crash, no restart)');
	unlike(log_since($log_at), qr/terminated by signal|reinitializing|exited with exit code/,
		'no process died');
	my @lines = grep { /^\d{4}-.*taskq/ && !/statement:|\.pl / } split /\n/, log_since($log_at);
	note "taskq log lines while the extension is gone:\n" . join("\n", @lines);
	cmp_ok(scalar(@lines), '<=', 6, 'the workers log a little and wait');

	qdb($setup);
	my $again = qdb("SELECT string_agg(taskq.submit('work')::text, ',') FROM generate_series(1, 20)");
	is(qdb("SELECT taskq.wait('{$again}', '60 s')"), 't', 'after CREATE EXTENSION new jobs finish');
	is(qdb("SELECT count(*) FROM taskq.jobs WHERE status = 'succeeded'"), '20', 'and succeed');
	is(worker_pids(), $pids, 'run by the same processes');
}

############################################################################
# DROP DATABASE of another database leaves the workers alone.
############################################################################
pg('CREATE DATABASE other');
pg('DROP DATABASE other');
is(worker_pids(), $pids, 'dropping another database does not touch the workers');

############################################################################
# ALTER DATABASE ... RENAME while an executor runs a long job.
############################################################################
my $long = qdb("SELECT taskq.submit('work', '{\"sleep\": 300}', queue => 'long')");
ok( $node->poll_query_until(
		'qdb',
		"SELECT EXISTS (SELECT 1 FROM taskq.workers WHERE job_id = $long AND state = 'running')"),
	'a long job is running');
qdb("SELECT taskq.pause('long')");    # so it does not start again at once
my $log_at = log_size();
my $t0     = time();
pg('ALTER DATABASE qdb RENAME TO qdb_moved');
my $took = time() - $t0;
cmp_ok($took, '<', 5, sprintf('RENAME succeeded in %.1fs (shutdown grace is 60s)', $took));
is(worker_pids(), '', 'no taskq worker is left');
sleep 10;    # a bounded window to count reconnection attempts
my $fatals = launcher_fatals($log_at);
cmp_ok($fatals, '<=', 1, "the launcher said $fatals times in 10s that qdb is missing: no loop");
is(worker_pids(), '', 'no executor runs meanwhile');

pg('ALTER DATABASE qdb_moved RENAME TO qdb');
ok(executors_up($node, 2, 'qdb'), 'after renaming it back the executors are back');
is(qdb("SELECT status || ' ' || attempts || ' ' || last_error FROM taskq.jobs WHERE id = $long"),
	'pending 0 interrupted by shutdown',
	'the interrupted long job went back to the queue, its attempt not counted');
qdb("SELECT taskq.cancel($long)");
my $after_rename = qdb("SELECT taskq.submit('work')");
is(qdb("SELECT taskq.wait('{$after_rename}', '60 s')"), 't', 'a new job finishes');
is(qdb("SELECT status FROM taskq.jobs WHERE id = $after_rename"), 'succeeded', 'and succeeds');

############################################################################
# DROP DATABASE while an executor runs a long job.
############################################################################
$long = qdb("SELECT taskq.submit('work', '{\"sleep\": 300}')");
ok( $node->poll_query_until(
		'qdb',
		"SELECT EXISTS (SELECT 1 FROM taskq.workers WHERE job_id = $long AND state = 'running')"),
	'a long job is running');
$log_at = log_size();
$t0     = time();
pg('DROP DATABASE qdb');
$took = time() - $t0;
cmp_ok($took, '<', 5, sprintf('DROP DATABASE succeeded in %.1fs', $took));
is(worker_pids(), '', 'no taskq worker is left');
sleep 10;    # a bounded window to count reconnection attempts
$fatals = launcher_fatals($log_at);
cmp_ok($fatals, '<=', 1, "the launcher said $fatals times in 10s that qdb is missing: no loop");
is(worker_pids(), '', 'no executor runs meanwhile');
unlike(log_since($log_at), qr/terminated by signal|reinitializing/, 'no crash');

pg('CREATE DATABASE qdb');
$node->safe_psql('qdb', $setup);
ok(executors_up($node, 2, 'qdb'), 'after re-creating the database and the extension the executors are back');
my $fresh = qdb("SELECT string_agg(taskq.submit('work')::text, ',') FROM generate_series(1, 10)");
is(qdb("SELECT taskq.wait('{$fresh}', '60 s')"), 't', 'new jobs finish');
is(qdb("SELECT count(*) FROM taskq.jobs WHERE status = 'succeeded'"), '10', 'and succeed');
is(qdb("SELECT count(*) FROM done"), '10', 'with their effects');

$node->stop;
done_testing();
