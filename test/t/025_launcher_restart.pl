# The launcher keeps exactly taskq.workers executors, whatever happens to it:
# an error in its round is logged and it goes on (same pid); a launcher
# restarted by the postmaster adopts the executors of the one before instead
# of starting a second set; health() fails when the count is off.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;

my $node = taskq_node('launcher_restart', max_worker_processes => 8);

sub sql { return $node->safe_psql('postgres', $_[0]); }

# from pg_stat_activity, which needs no taskq object (the extension may be locked)
sub pids_of
{
	return sql("SELECT coalesce(string_agg(pid::text, ',' ORDER BY pid), '')
	              FROM pg_stat_activity WHERE backend_type = '$_[0]'");
}

# wait until the launcher has finished a round that started after now
sub launcher_round
{
	my $since = sql("SELECT since FROM taskq.workers WHERE kind = 'launcher'");
	return $node->poll_query_until('postgres',
		"SELECT since > '$since' AND state = 'idle' FROM taskq.workers WHERE kind = 'launcher'");
}

sub executors_check
{
	return sql("SELECT status || ': ' || message FROM taskq.health() WHERE check_name = 'executors'");
}

sql('CREATE EXTENSION taskq');
ok(executors_up($node, 2), 'two executors are up');
my $launcher  = pids_of('taskq launcher');
my $executors = pids_of('taskq executor');
like($launcher, qr/^\d+$/, "one launcher ($launcher)");

############################################################################
# An error in the launcher's round (a lock timeout while it checks for the
# extension) is logged; the launcher backs off and keeps its pid.
############################################################################
# (a lock wait started before the reload would not time out)
$node->safe_psql('postgres', "ALTER SYSTEM SET lock_timeout = '20ms'");
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok(launcher_round(), 'the launcher read the new lock_timeout');
my $offset = -s $node->logfile;
my $locker = $node->background_psql('postgres');
$locker->query_safe('SET lock_timeout = 0');
$locker->query_safe('BEGIN');
$locker->query_safe('DROP EXTENSION taskq');
$offset = $node->wait_for_log(
	qr/\[$launcher\] ERROR:  canceling statement due to lock timeout/, $offset);
ok(1, 'the launcher hit the error');
ok( eval {
		$node->wait_for_log(
			qr/\[$launcher\] LOG:  taskq launcher: upkeep failed, retrying in \d+ ms/, $offset);
	},
	'and logged that it goes on');
$locker->query_safe('ROLLBACK');
$locker->quit;
$node->safe_psql('postgres', 'ALTER SYSTEM RESET lock_timeout');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok(launcher_round() && launcher_round(), 'the launcher finishes its rounds again');
is(pids_of('taskq launcher'), $launcher, 'with the same pid: it never exited');
is(pids_of('taskq executor'), $executors, 'and the same two executors');

############################################################################
# SIGTERM ends the launcher; the postmaster starts a new one, which adopts
# the two executors running and starts none.
############################################################################
is(sql("SELECT pg_terminate_backend($launcher)"), 't', 'SIGTERM to the launcher');
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 1 FROM taskq.workers WHERE kind = 'launcher' AND pid <> $launcher AND state = 'idle'"),
	'the postmaster started a new launcher');
ok(launcher_round() && launcher_round() && launcher_round(), 'it ran a few rounds');
is(pids_of('taskq executor'), $executors, 'the same two executors run, no second set');
is(sql("SELECT count(*) FROM taskq.workers WHERE kind = 'executor'"), '2', 'taskq.workers shows two');
is(executors_check(), 'ok: 2 of 2 executors running', 'health(): 2 of 2');

############################################################################
# Too few executors (max_worker_processes = 8 leaves room for 6, beside the
# launcher and the logical replication launcher): health() fails once
# the launcher is past its startup grace.  Back to 2: the surplus is stopped.
############################################################################
$node->safe_psql('postgres', 'ALTER SYSTEM SET taskq.workers = 12');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok( $node->poll_query_until(
		'postgres',
		"SELECT status = 'fail' AND message ~ '^only [0-9]+ of 12 executors running\$'
		   FROM taskq.health() WHERE check_name = 'executors'"),
	'health() fails: too few executors');
note executors_check();
$node->safe_psql('postgres', 'ALTER SYSTEM RESET taskq.workers');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok( $node->poll_query_until(
		'postgres',
		"SELECT status || ': ' || message FROM taskq.health() WHERE check_name = 'executors'",
		'ok: 2 of 2 executors running'),
	'taskq.workers back to 2: the launcher stopped the surplus, health() is ok');
ok(launcher_round() && launcher_round(), 'the launcher ran more rounds');
is(sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'taskq executor'"),
	'2', 'two executors run');

$node->stop;
done_testing();
