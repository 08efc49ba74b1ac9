# Failover to a synchronous standby under load.  A client submits jobs in a
# loop and writes down every id the server acknowledged; handlers record
# their job in a table with a primary key.  No taskq worker runs on the
# standby.  Every process of the primary is killed with SIGKILL and the
# standby promoted: every acknowledged job is there, the executors start on
# the new primary, every job succeeds, and each left exactly one effect row.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;

my $taskq_conf = taskq_conf('taskq.backoff_base' => '100ms', synchronous_commit => 'on');

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', $taskq_conf);
$primary->start;

$primary->safe_psql('postgres', q{
CREATE EXTENSION taskq;
CREATE TABLE effects (job bigint PRIMARY KEY, at timestamptz NOT NULL);
-- slow enough that a backlog builds up and jobs are running at the failover
CREATE FUNCTION record(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO effects VALUES (taskq.current_job_id(), clock_timestamp());
    PERFORM pg_sleep(0.05 + random() * 0.05);
END $$;
SELECT taskq.register_handler('record', 'record(jsonb)');
});
ok( executors_up($primary, 2),
	'the executors run on the primary');

$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;
$primary->append_conf('postgresql.conf', "synchronous_standby_names = '*'");
$primary->reload;
ok( $primary->poll_query_until(
		'postgres',
		"SELECT EXISTS (SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync' AND state = 'streaming')"),
	'the standby replicates synchronously');
is($primary->safe_psql('postgres', 'SHOW synchronous_commit'), 'on', 'synchronous_commit is on');

############################################################################
# Continuous submission through a connection string that names both nodes
# and wants the read-write one: after the failover it reaches the new primary.
############################################################################
my $dir      = PostgreSQL::Test::Utils::tempdir;
my $acked    = "$dir/acked";
my $stopfile = "$dir/stop";
my $connstr =
	'host=' . $primary->host . ',' . $standby->host
  . ' port=' . $primary->port . ',' . $standby->port
  . ' dbname=postgres target_session_attrs=read-write connect_timeout=5';
# Every other round submits a batch: six independent jobs and a parent-child pair.
my $loop = <<"EOS";
n=0
while [ ! -e '$stopfile' ]; do
    n=\$((n + 1))
    if [ \$((n % 2)) -eq 0 ]; then
        q="SELECT taskq.submit_many(jsonb_agg(jsonb_build_object('job_type', 'record')) || '[{\\"job_type\\": \\"record\\"}, {\\"job_type\\": \\"record\\", \\"after\\": [6]}]')
             FROM generate_series(1, 6)"
    else
        q="SELECT taskq.submit('record', jsonb_build_object('n', \$n))"
    fi
    # only ids the server acknowledged (psql exited 0) are written down
    if out=\$(psql -XAtq -d "$connstr" -c "\$q" 2>>'$dir/errors'); then
        echo "\$out" >> '$acked'
    else
        sleep 0.1
    fi
done
EOS
my $submitter = IPC::Run::start([ 'bash', '-c', $loop ],
	'>', "$dir/loop.out", '2>', "$dir/loop.err");

sub acked_ids
{
	return () unless -e $acked;
	return grep { /^\d+$/ } split /\n/, slurp_file($acked);
}

# wait until the submitter got $n acknowledgements in all
sub wait_acked
{
	my ($n) = @_;
	my $deadline = time() + 120;
	while (time() < $deadline)
	{
		return 1 if scalar(acked_ids()) >= $n;
		select(undef, undef, undef, 0.1);
	}
	return 0;
}

ok(wait_acked(100), 'the submitter got 100 acknowledgements');
ok( $primary->poll_query_until(
		'postgres',
		"SELECT count(*) FILTER (WHERE status = 'succeeded') >= 50
		    AND count(*) FILTER (WHERE status IN ('pending', 'blocked')) >= 20
		   FROM taskq.jobs"),
	'the primary executes jobs and a backlog has built up');

############################################################################
# Nothing of taskq runs on the standby.
############################################################################
$standby->poll_query_until('postgres',
	"SELECT count(*) >= 100 FROM taskq.jobs")
  or die 'the standby does not replay the jobs';
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');
is($standby->safe_psql('postgres', 'SELECT count(*) FROM taskq.workers'),
	'0', 'taskq.workers on the standby is empty');
is( $standby->safe_psql(
		'postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'taskq%'"),
	'0', 'pg_stat_activity on the standby shows no taskq process');
unlike(slurp_file($standby->logfile), qr/taskq (launcher|executor)/,
	'the standby log has no taskq worker line');

# A claim on the standby must not raise a scan floor: replay fires no trigger
# to lower it again, so a job replayed below it would never be claimed after
# promotion.  (In a database of its own, so the checks below see only the
# submitter's jobs.)  Nothing is due, so the claim takes no row and succeeds.
$primary->safe_psql('postgres', 'CREATE DATABASE probe');
$primary->safe_psql('probe', 'CREATE EXTENSION taskq');
$primary->safe_psql('probe',
	"SELECT taskq.submit('probe', queue => 'probe', run_at => now() + interval '1 hour')");
$standby->poll_query_until('probe', "SELECT count(*) = 1 FROM taskq.jobs")
  or die 'the standby does not replay the probe database';
is($standby->safe_psql('probe', "SELECT count(*) FROM taskq.claim(ARRAY['probe'], 'standby-probe', 1)"),
	'0', 'a claim on the standby finds nothing due');
my $due = $primary->safe_psql('probe',
	"SELECT taskq.submit('probe', queue => 'probe', run_at => now() - interval '1 minute')");

############################################################################
# The primary dies (every process, SIGKILL); the standby is promoted.
############################################################################
my $before = scalar(acked_ids());
my $postmaster = $primary->{_pid};
my @children = split /\n/, `pgrep -P $postmaster`;
my $on_primary = $primary->safe_psql('postgres',
	"SELECT count(*) FILTER (WHERE status = 'succeeded') || ' succeeded, '
	     || count(*) FILTER (WHERE status <> 'succeeded') || ' not yet' FROM taskq.jobs");
$primary->kill9;
kill 9, @children;
note "killed the primary and its " . scalar(@children) . " children with $before acknowledged ids; primary had: $on_primary";

$standby->promote;
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 'f', 'the standby is promoted');
my $promoted_at = $standby->safe_psql('postgres', 'SELECT now()');
ok( executors_up($standby, 2),
	'the executors start on the new primary');
ok( $standby->poll_query_until(
		'postgres',
		"SELECT backend_type FROM pg_stat_activity WHERE backend_type = 'taskq launcher'",
		'taskq launcher'),
	'and so does the launcher');

# the submitter carries on against the new primary
my $target = scalar(acked_ids()) + 25;
ok(wait_acked($target), 'the submitter is acknowledged by the new primary');
IPC::Run::run([ 'touch', $stopfile ]);
$submitter->finish;
my @acked = acked_ids();
note scalar(@acked) . ' ids acknowledged in all';

ok( $standby->poll_query_until(
		'postgres',
		"SELECT count(*) = 0 FROM taskq.jobs WHERE status IN ('blocked', 'pending', 'running')"),
	'every job finished on the new primary');

my $ids = '{' . join(',', @acked) . '}';
is( $standby->safe_psql(
		'postgres',
		"SELECT count(*) FROM unnest('$ids'::bigint[]) a(id)
		  WHERE NOT EXISTS (SELECT 1 FROM taskq.jobs j WHERE j.id = a.id)"),
	'0', 'every acknowledged job exists on the new primary');
is( $standby->safe_psql(
		'postgres',
		"SELECT count(*) FROM unnest('$ids'::bigint[]) a(id)
		   JOIN taskq.jobs j USING (id) WHERE j.status = 'succeeded'"),
	scalar(@acked), 'every acknowledged job succeeded');
is( $standby->safe_psql(
		'postgres',
		"SELECT string_agg(DISTINCT status || ': ' || coalesce(last_error, ''), '; ')
		   FROM taskq.jobs WHERE status <> 'succeeded'"),
	'', 'every job succeeded, acknowledged or not');
is( $standby->safe_psql(
		'postgres',
		"SELECT count(*) FROM taskq.jobs j WHERE NOT EXISTS (SELECT 1 FROM effects e WHERE e.job = j.id)"),
	'0', 'every job left its effect row');
is( $standby->safe_psql(
		'postgres',
		"SELECT count(*) FROM effects e WHERE NOT EXISTS (SELECT 1 FROM taskq.jobs j WHERE j.id = e.job)"),
	'0', 'and no effect row lacks its job (one row per job: the key forbids two)');
cmp_ok( $standby->safe_psql(
		'postgres',
		"SELECT count(*) FROM taskq.jobs WHERE status = 'succeeded' AND finished_at > '$promoted_at'"),
	'>', 0, 'the new primary finished jobs the old one had not');
is( $standby->safe_psql(
		'postgres',
		"SELECT count(*) FROM taskq.job_dependencies d
		   JOIN effects c ON c.job = d.job_id JOIN effects p ON p.job = d.depends_on
		  WHERE c.at <= p.at"),
	'0', 'no child ran before its parent');
cmp_ok($standby->safe_psql('postgres', 'SELECT count(*) FROM taskq.job_dependencies'),
	'>', 0, 'there were parent-child pairs');
note 'jobs retried after the failover: '
  . $standby->safe_psql('postgres', "SELECT count(*) FROM taskq.jobs WHERE attempts > 1")
  . ', returned as orphans: '
  . $standby->safe_psql('postgres',
	"SELECT count(*) FROM taskq.job_logs WHERE error LIKE '% died while running the job'");

is($standby->safe_psql('probe', "SELECT id FROM taskq.claim(ARRAY['probe'], 'after-promotion', 1)"),
	$due, 'after promotion the job replayed below the standby claim\'s head is claimed');

$standby->stop;
done_testing();
