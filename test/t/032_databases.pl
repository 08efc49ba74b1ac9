# Several databases (taskq.databases, src/databases.c):
#  - bad entries (empty, duplicate, too long) and taskq.database beside
#    taskq.databases are warned about at startup, and the server starts;
#    the log says how many background workers taskq uses and warns when
#    they do not fit max_worker_processes;
#  - two databases are served at once, each with its own executors, jobs
#    and capacity (ALTER DATABASE ... SET taskq.workers / max_cpu_units);
#  - CREATE EXTENSION in a database not listed warns with a hint, and
#    health() there fails "no executors serve this database";
#  - a listed database that does not exist is said once, not as a FATAL
#    every few seconds, and is served once created;
#  - taskq.max_total_workers caps the executors of all databases;
#  - RENAME and DROP DATABASE of each listed database work while its
#    workers run a job, and leave the other database's workers alone.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('databases');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app1');
$node->safe_psql('postgres', 'CREATE DATABASE app2');
# app2 gets its own capacity: one executor, one CPU unit
$node->safe_psql('postgres', 'ALTER DATABASE app2 SET taskq.workers = 1');
$node->safe_psql('postgres', 'ALTER DATABASE app2 SET taskq.max_cpu_units = 1');

my $long_name = 'x' x 70;
$node->append_conf(
	'postgresql.conf',
	taskq_conf(
		'taskq.databases'      => "app1, app2,, later, app1, $long_name",
		'taskq.database'       => 'app1',
		'max_worker_processes' => 12,
		'max_parallel_workers' => 8));
my $log_at = -s $node->logfile;
$node->restart;

sub log_since { return substr(slurp_file($node->logfile), $_[0]); }
sub count_in  { my ($re, $text) = @_; my @m = ($text =~ /$re/g); return scalar(@m); }

############################################################################
# Bad input: warned about, skipped, and the server runs.
############################################################################
my $startup = log_since($log_at);
like($startup, qr/WARNING:  taskq.database = "app1" is ignored: taskq.databases is set/,
	'taskq.database beside taskq.databases: a warning names the ignored one');
like($startup, qr/WARNING:  taskq.databases: entry 3 is empty, ignored/, 'an empty entry is warned about');
like($startup, qr/WARNING:  taskq.databases: database "app1" is listed more than once, served once/,
	'a duplicate is warned about');
like($startup, qr/WARNING:  taskq.databases: entry 6 \("x{63}\.\.\."\) is longer than 63 bytes, ignored/,
	'a name longer than NAMEDATALEN - 1 is warned about');
like($startup, qr/LOG:  taskq uses up to 9 background workers: 3 launchers and up to 6 executors, for 3 databases/,
	'the log says how many background workers taskq uses');
like($startup,
	qr/WARNING:  taskq's 9 background workers, pg_cron's 0 and 8 parallel workers do not fit max_worker_processes = 12\n.*\n.*HINT:  Raise max_worker_processes to 17/,
	'and warns, naming the setting, when they do not fit with the parallel workers');
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'the server runs');

############################################################################
# Two databases served at once, each with its own executors and capacity.
############################################################################
my $setup = q{
CREATE EXTENSION taskq;
CREATE TABLE done (job bigint PRIMARY KEY, db text, pid int);
CREATE TABLE release (go bool);
CREATE FUNCTION work(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO done VALUES (taskq.current_job_id(), current_database(), pg_backend_pid());
END $$;
-- holds its CPU units until a row is in release
CREATE FUNCTION hold(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WHILE NOT EXISTS (SELECT 1 FROM release) LOOP
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT taskq.register_handler('work', 'work(jsonb)');
SELECT taskq.register_handler('hold', 'hold(jsonb)');
};
for my $db ('app1', 'app2')
{
	my ($rc, $out, $err) = $node->psql($db, $setup);
	is($rc, 0, "taskq installed in $db");
	unlike($err, qr/WARNING/, "without a warning in $db: it is served");
}
ok(executors_up($node, 2, 'app1'), 'app1 has taskq.workers = 2 executors');
ok(executors_up($node, 1, 'app2'), 'app2 has its own taskq.workers = 1');
is($node->safe_psql('app2', 'SELECT cpu_units_max FROM taskq.resources'), '1',
	'app2 has its own taskq.max_cpu_units = 1');
is($node->safe_psql('app1', 'SELECT cpu_units_max FROM taskq.resources'), '4',
	'app1 the default 4');

my %executors;
for my $db ('app1', 'app2')
{
	$executors{$db} = $node->safe_psql($db,
		"SELECT string_agg(pid::text, ',' ORDER BY pid) FROM taskq.workers WHERE kind = 'executor'");
	my $ids = $node->safe_psql($db,
		"SELECT string_agg(taskq.submit('work')::text, ',') FROM generate_series(1, 50)");
	is($node->safe_psql($db, "SELECT taskq.wait('{$ids}', '60 s')"), 't', "jobs with handlers finish in $db");
	is( $node->safe_psql($db,
			"SELECT count(*) FROM done WHERE db = current_database()
			    AND pid = ANY (string_to_array('$executors{$db}', ',')::int[])"),
		'50',
		"all 50 run in $db by $db\'s own executors");
}

# capacity is per database: app2's one unit held does not take any of app1's
my $held2 = $node->safe_psql('app2', "SELECT taskq.submit('hold', cpu_units => 1)");
ok( $node->poll_query_until('app2', 'SELECT cpu_units_used = 1 FROM taskq.resources'),
	'app2: a job holds its only CPU unit');
my $blocked2 = $node->safe_psql('app2', "SELECT taskq.submit('work')");
# one at a time: two jobs committed together may form one executor's batch,
# whose jobs run one after the other
my $held1 = $node->safe_psql('app1', "SELECT taskq.submit('hold', cpu_units => 2)");
$node->poll_query_until('app1', 'SELECT cpu_units_used = 2 FROM taskq.resources');
$held1 .= ',' . $node->safe_psql('app1', "SELECT taskq.submit('hold', cpu_units => 2)");
ok( $node->poll_query_until('app1', 'SELECT cpu_units_used = 4 FROM taskq.resources'),
	"app1: two jobs hold all of app1's 4 units at once");
is($node->safe_psql('app2', "SELECT status FROM taskq.jobs WHERE id = $blocked2"), 'pending',
	'app2: a second job waits for its capacity');
$node->safe_psql($_, 'INSERT INTO release VALUES (true)') for ('app1', 'app2');
is($node->safe_psql('app2', "SELECT taskq.wait('{$held2,$blocked2}', '60 s')"), 't',
	'app2: its jobs finish once released');
is($node->safe_psql('app1', "SELECT taskq.wait('{$held1}', '60 s')"), 't', 'app1 too');
$node->safe_psql($_, 'TRUNCATE release') for ('app1', 'app2');

############################################################################
# A database taskq does not serve.
############################################################################
my ($rc, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION taskq');
is($rc, 0, 'CREATE EXTENSION in a database not listed succeeds');
like($err, qr/WARNING:  taskq's background workers do not serve database "postgres"/, 'with a warning');
like($err, qr/HINT:  Add it to taskq.databases \(now: app1, app2, later\) and restart the server/,
	'whose hint names the setting');
is( $node->safe_psql('postgres',
		"SELECT status || ': ' || message FROM taskq.health() WHERE check_name = 'executors'"),
	'fail: no executors serve this database: add it to taskq.databases and restart the server',
	'health() there: a failed check "no executors serve this database"');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM taskq.health() WHERE check_name IN ('launcher', 'executors') AND status <> 'fail'"),
	'0', 'and no launcher or executors check claims to be ok');
is($node->safe_psql('postgres', 'SELECT count(*) FROM taskq.workers'), '0',
	'taskq.workers there shows no worker of another database');

############################################################################
# A listed database that does not exist: said once, served once created.
############################################################################
my $said = count_in(qr/database "later" in taskq.databases does not exist/, log_since($log_at));
is($said, 1, 'the missing database is reported once');
like(log_since($log_at), qr/database "later" in taskq.databases does not exist\n.*DETAIL:  .*backoff.*\n.*HINT:  Create the database, or remove it from taskq.databases/,
	'with a hint');
is(count_in(qr/FATAL:  database "later"/, log_since($log_at)), 0, 'and never as a FATAL');
ok( $node->poll_query_until('postgres',
		"SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'taskq launcher'
		                  AND datname IS NULL AND query ~ 'waiting for the database')"),
	'its launcher waits, connected to no database');
$node->safe_psql('postgres', 'CREATE DATABASE later');
$node->safe_psql('later', $setup);
ok(executors_up($node, 2, 'later'), 'once created, it is served');
my $later_ids = $node->safe_psql('later',
	"SELECT string_agg(taskq.submit('work')::text, ',') FROM generate_series(1, 10)");
is($node->safe_psql('later', "SELECT taskq.wait('{$later_ids}', '60 s')"), 't', 'its jobs run');
is(count_in(qr/database "later".* does not exist/, log_since($log_at)), 1,
	'the log said it was missing once in all, not every few seconds');

############################################################################
# taskq.max_total_workers: each database gets its share of the cap.
############################################################################
$node->append_conf('postgresql.conf', "taskq.max_total_workers = 2\n");
$node->reload;
ok(executors_up($node, 1, 'app1'),  'capped at 2 for 3 databases: app1 runs 1 executor');
ok(executors_up($node, 1, 'app2'),  'app2 runs 1');
ok(executors_up($node, 0, 'later'), 'later runs none');
is( $node->safe_psql('app1',
		"SELECT status || ': ' || message FROM taskq.health() WHERE check_name = 'executors'"),
	'ok: 1 of 1 executors running', "health() counts app1's share as what it wants");
like(log_since($log_at), qr/database "later" runs 0 executors, not taskq.workers = 2: its share of taskq.max_total_workers = 2/,
	'the log says why later runs fewer');
$node->append_conf('postgresql.conf', "taskq.max_total_workers = 0\n");
$node->reload;
ok(executors_up($node, 2, 'app1'),  'without the cap app1 has 2 again');
ok(executors_up($node, 2, 'later'), 'and later 2');

############################################################################
# RENAME and DROP DATABASE of each listed database while its workers run.
############################################################################
sub executor_pids
{
	my ($db) = @_;
	return $node->safe_psql($db,
		"SELECT string_agg(pid::text, ',' ORDER BY pid) FROM taskq.workers");
}

sub running_hold
{
	my ($db) = @_;
	my $job = $node->safe_psql($db, "SELECT taskq.submit('hold')");
	ok( $node->poll_query_until(
			$db, "SELECT EXISTS (SELECT 1 FROM taskq.workers WHERE job_id = $job AND state = 'running')"),
		"$db: a job is running");
	return $job;
}

my @dbs = ('app1', 'app2', 'later');
for my $i (0 .. $#dbs)
{
	my $db    = $dbs[$i];
	my $other = $dbs[ ($i + 1) % @dbs ];
	my $other_pids = executor_pids($other);

	my $job = running_hold($db);
	my $t0  = time();
	$node->safe_psql('postgres', "ALTER DATABASE $db RENAME TO ${db}_moved");
	cmp_ok(time() - $t0, '<', 5, "RENAME of $db succeeded while its job ran");
	is(executor_pids($other), $other_pids, "$other\'s workers were left alone");
	$node->safe_psql('postgres', "ALTER DATABASE ${db}_moved RENAME TO $db");
	ok(executors_up($node, $db eq 'app2' ? 1 : 2, $db), "$db renamed back is served again");
	ok( $node->poll_query_until(
			$db, "SELECT EXISTS (SELECT 1 FROM taskq.workers WHERE job_id = $job AND state = 'running')"),
		"$db: the interrupted job runs again");
	# attempts before this run: its claim may not be committed yet (one
	# transaction per batch), or committed first (slow jobs)
	is($node->safe_psql($db,
			"SELECT attempts - (status = 'running')::int FROM taskq.jobs WHERE id = $job"),
		'0', 'its interrupted attempt was not counted');
	$t0 = time();
	$node->safe_psql('postgres', "DROP DATABASE $db");
	cmp_ok(time() - $t0, '<', 5, "DROP DATABASE $db succeeded while its job ran");
	is(executor_pids($other), $other_pids, "$other\'s workers were left alone");
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, $setup);
	# a new database: ALTER DATABASE app2 SET went with the old one
	ok(executors_up($node, 2, $db), "$db re-created is served again");
	my $ids = $node->safe_psql($db,
		"SELECT string_agg(taskq.submit('work')::text, ',') FROM generate_series(1, 5)");
	is($node->safe_psql($db, "SELECT taskq.wait('{$ids}', '60 s')"), 't', "$db: new jobs finish");
}
unlike(log_since($log_at), qr/terminated by signal|reinitializing/, 'no crash');

############################################################################
# More bad input: a budget larger than max_worker_processes, a list of
# nothing valid.  The server starts either way.
############################################################################
$log_at = -s $node->logfile;
$node->append_conf('postgresql.conf', "max_worker_processes = 4\n");
$node->restart;
like(log_since($log_at),
	qr/WARNING:  taskq needs 9 background workers, more than max_worker_processes = 4\n.*DETAIL:  .*\n.*HINT:  Raise max_worker_processes to at least 17 \(taskq 9, pg_cron 0, parallel workers 8\)/,
	'a budget larger than max_worker_processes: a warning naming the setting');
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'the server runs');

$log_at = -s $node->logfile;
$node->append_conf('postgresql.conf', "max_worker_processes = 12\ntaskq.databases = ' , '\n");
$node->restart;
like(log_since($log_at), qr/WARNING:  taskq.databases lists no database: taskq's background workers do not start/,
	'a list of nothing valid: a warning');
is($node->safe_psql('app1', "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'taskq%'"),
	'0', 'no taskq worker starts, nothing half-started');
is( $node->safe_psql('app1',
		"SELECT status FROM taskq.health() WHERE check_name = 'executors'"),
	'fail', 'and health() says so');

$node->stop;
done_testing();
