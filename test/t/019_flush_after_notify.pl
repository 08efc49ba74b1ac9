# taskq.flush_after_notify: a transaction that publishes on taskq's channels
# flushes its commit after PostgreSQL's NOTIFY lock is released, still before
# COMMIT returns.  commit_delay (a 100 ms sleep in every WAL flush) makes the
# flushes long enough to watch: with the setting on, a second publishing
# commit waits for the flush in progress (LWLock WALWrite) and rides on it;
# off, it waits for the NOTIFY lock held through that flush.  Under
# synchronous replication PostgreSQL's order is kept: a synchronous standby
# that never answers shows the lock held through the wait.  A session listens
# throughout: with nobody listening taskq publishes nothing (021).
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
my $node = PostgreSQL::Test::Cluster->new('flush_after_notify');
$node->init(allows_streaming => 1);
$node->append_conf('postgresql.conf', taskq_conf(fsync => 'on'));
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE EXTENSION taskq;
CREATE PROCEDURE submit_loop(n integer) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        PERFORM taskq.submit('x', queue => 'loop');
        COMMIT;
    END LOOP;
END $$;
});
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN ' . sql('SELECT taskq.channel()'));

is(sql("SELECT taskq.submit('x', queue => 'plain') IS NOT NULL; SHOW synchronous_commit"),
	"t\non", 'a publishing commit leaves synchronous_commit as it was');
is(sql("BEGIN; SELECT taskq.submit('x', queue => 'plain') IS NOT NULL; ROLLBACK; SHOW synchronous_commit"),
	"t\non", 'and so does a rolled back one');

# a session that runs $sql after SET taskq.flush_after_notify = $flush
sub in_background
{
	my ($flush, $sql) = @_;
	my $s = $node->background_psql('postgres');
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	$s->query_safe("SET taskq.flush_after_notify = $flush");
	$s->query_safe('SET commit_delay = 100000');
	$s->query_safe('SET commit_siblings = 0');
	$s->query_until(qr/sent/, "\\echo sent\n$sql;\n");
	return ($s, $pid);
}

sub one_waits_on
{
	my ($event, @pids) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pg_stat_activity WHERE pid IN (" . join(',', @pids)
		  . ") AND wait_event = '$event'");
}

sub loops_done
{
	return $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE query LIKE 'CALL submit_loop%' AND state = 'active'");
}

# two sessions committing $n submits each, one after the other, with flushes
# of 100 ms: one of them is seen waiting on $event
sub two_loops_wait_on
{
	my ($flush, $n, $event, $what) = @_;
	my ($a, $a_pid) = in_background($flush, "CALL submit_loop($n)");
	my ($b, $b_pid) = in_background($flush, "CALL submit_loop($n)");
	ok(one_waits_on($event, $a_pid, $b_pid), $what);
	ok(loops_done(), 'the loops finished');
	$_->quit for ($a, $b);
}

two_loops_wait_on('on', 60, 'WALWrite',
	'flush_after_notify on: a publishing commit waits for the flush in progress, not for the NOTIFY lock');
two_loops_wait_on('off', 30, 'object',
	'off (PostgreSQL\'s order): it waits for the NOTIFY lock, held through the other\'s flush');
is(sql("SELECT count(*) FROM taskq.jobs WHERE queue = 'loop'"), '180', 'every job committed');

# under synchronous replication (a standby that never connects), PostgreSQL's order
sql("ALTER SYSTEM SET synchronous_standby_names = 'nobody'");
sql('SELECT pg_reload_conf()');
my ($e, $e_pid) = in_background('on', "SELECT taskq.submit('x', queue => 'syncrep')");
ok(one_waits_on('SyncRep', $e_pid), 'with a synchronous standby, a publishing commit waits for it');
is(sql("SELECT count(*) FROM taskq.jobs WHERE queue = 'syncrep'"), '0',
	'and stays invisible to other sessions meanwhile');
my ($f, $f_pid) = in_background('on', "SELECT taskq.submit('x', queue => 'syncrep')");
ok(one_waits_on('object', $f_pid),
	'holding the NOTIFY lock: no commit becomes visible before the standby has it');
sql("SELECT pg_cancel_backend($e_pid)");
ok(one_waits_on('SyncRep', $f_pid), 'the next one gets the lock once the first gives up waiting');
sql("SELECT pg_cancel_backend($f_pid)");
$node->poll_query_until('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'", '0');
is(sql("SELECT count(*) FROM taskq.jobs WHERE queue = 'syncrep'"), '2',
	'both jobs are committed (locally, as PostgreSQL does when such a wait is cancelled)');
$_->quit for ($e, $f);

sql('ALTER SYSTEM RESET synchronous_standby_names');
sql('SELECT pg_reload_conf()');
is(sql("SELECT taskq.submit('x', queue => 'plain') IS NOT NULL"), 't',
	'without the standby, commits return at once again');

$listener->quit;
$node->stop;
done_testing();
