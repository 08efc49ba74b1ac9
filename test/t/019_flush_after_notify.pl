# taskq.flush_after_notify: a transaction that publishes on taskq_jobs
# flushes its commit (and waits for synchronous standbys) after PostgreSQL's
# NOTIFY lock is released, still before COMMIT returns.  A synchronous
# standby that never answers makes the waits visible: a publishing commit
# waits for it (it is not left asynchronous), and two publishing commits wait
# side by side, where PostgreSQL alone queues the second behind the lock the
# first holds.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;

# (streaming allowed: a cluster without WAL senders never waits for a standby)
my $node = PostgreSQL::Test::Cluster->new('flush_after_notify');
$node->init(allows_streaming => 1);
$node->append_conf('postgresql.conf', taskq_conf());
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql('CREATE EXTENSION taskq');
is(sql("SELECT taskq.submit('x', queue => 'plain') IS NOT NULL; SHOW synchronous_commit"),
	"t\non", 'a publishing commit leaves synchronous_commit as it was');
is(sql("BEGIN; SELECT taskq.submit('x', queue => 'plain') IS NOT NULL; ROLLBACK; SHOW synchronous_commit"),
	"t\non", 'and so does a rolled back one');

# a synchronous standby that never connects
sql("ALTER SYSTEM SET synchronous_standby_names = 'nobody'");
sql('SELECT pg_reload_conf()');

# start a submit in its own session; returns the session and its pid
sub submit_in_background
{
	my ($flush) = @_;
	my $s = $node->background_psql('postgres');
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	$s->query_safe("SET taskq.flush_after_notify = $flush");
	$s->query_until(qr/sent/, "\\echo sent\nSELECT taskq.submit('x', queue => 'syncrep');\n");
	return ($s, $pid);
}

sub waits_on
{
	my ($pid, $event) = @_;
	return $node->poll_query_until('postgres',
		"SELECT wait_event FROM pg_stat_activity WHERE pid = $pid", $event);
}

my ($a, $a_pid) = submit_in_background('on');
ok(waits_on($a_pid, 'SyncRep'),
	'a publishing commit waits for the synchronous standby before it returns');
my ($b, $b_pid) = submit_in_background('on');
ok(waits_on($b_pid, 'SyncRep'),
	'a second one waits for it too, side by side: the NOTIFY lock is not held while waiting');

# PostgreSQL's own order: the commit holds the lock through its wait
my ($c, $c_pid) = submit_in_background('off');
ok(waits_on($c_pid, 'SyncRep'), 'with flush_after_notify off, a commit waits for the standby');
my ($d, $d_pid) = submit_in_background('on');
ok(waits_on($d_pid, 'object'), 'holding the NOTIFY lock: the next publishing commit queues behind it');

# give up on the standby: each commit stands, as a cancelled wait does in PostgreSQL
sql("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid IN ($a_pid, $b_pid, $c_pid)");
ok(waits_on($d_pid, 'SyncRep'), 'the queued one gets the lock, then waits for the standby without it');
sql("SELECT pg_cancel_backend($d_pid)");
$node->poll_query_until('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'", '0');
is(sql("SELECT count(*) FROM taskq.jobs WHERE queue = 'syncrep'"), '4',
	'the four jobs are committed');
$_->quit for ($a, $b, $c, $d);

sql('ALTER SYSTEM RESET synchronous_standby_names');
sql('SELECT pg_reload_conf()');
is(sql("SELECT taskq.submit('x', queue => 'plain') IS NOT NULL"), 't',
	'without the standby, commits return at once again');

$node->stop;
done_testing();
