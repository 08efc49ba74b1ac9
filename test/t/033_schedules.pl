
# Schedules that can run.  taskq.schedule() refuses (55000, with a hint) a
# schedule pg_cron could not start: a NOLOGIN role, or, without
# cron.use_background_workers, a connection pg_hba.conf would not accept
# without a password; nothing is half-created.  health() reports failed
# pg_cron runs to the schedule's owner (not to other roles).  DROP
# EXTENSION taskq removes its pg_cron jobs (and a rolled-back DROP keeps
# them), leaving other pg_cron jobs alone.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use TaskqNode;

my $node = PostgreSQL::Test::Cluster->new('schedules');
$node->init;
$node->append_conf('postgresql.conf',
	taskq_conf(
		shared_preload_libraries => 'taskq,pg_cron',
		'cron.database_name' => 'postgres'));
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

# "sqlstate|message|detail|hint" of $call run as $role, or "ok"
sub try_as
{
	my ($role, $call) = @_;
	return sql(qq{SET ROLE $role; SELECT public.try_sql(\$c\$$call\$c\$)});
}

sql(q{
CREATE EXTENSION pg_cron;
CREATE EXTENSION taskq;
CREATE ROLE alice LOGIN IN ROLE taskq_user;
CREATE ROLE carol LOGIN IN ROLE taskq_user;
CREATE ROLE nolog NOLOGIN IN ROLE taskq_user;
CREATE ROLE watcher LOGIN IN ROLE taskq_monitor;
CREATE FUNCTION public.try_sql(call text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text; det text; hnt text;
BEGIN
    EXECUTE call;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
                            hnt = PG_EXCEPTION_HINT;
    RETURN concat_ws('|', st, msg, det, hnt);
END
$$;
GRANT EXECUTE ON FUNCTION public.try_sql(text) TO PUBLIC;
SELECT cron.schedule('not_taskq', '0 4 * * *', 'SELECT 1');
});
my $state = q{SELECT (SELECT count(*) FROM taskq.schedules) || '/' ||
                     (SELECT count(*) FROM cron.job WHERE jobname LIKE 'taskq:%')};

# 1. No background workers, cron.host = localhost, and the test cluster
#    listens on no TCP address: pg_cron could not connect.
my $r = try_as('alice', q{SELECT taskq.schedule('nightly', '0 3 * * *', 'report')});
like($r, qr/^55000\|pg_cron could not run this schedule as role alice\|.*listen_addresses is empty/,
	'without background workers and no TCP listener: 55000 and why');
like($r, qr/cron\.use_background_workers = on/, '... with the setting to change in the hint');
is(sql($state), '0/0', '... and nothing half-created');

# 2. A role that cannot log in: refused whatever the settings.
$r = try_as('nolog', q{SELECT taskq.schedule('n', '0 3 * * *', 'report')});
like($r, qr/^55000\|.*cannot log in \(NOLOGIN\).*ALTER ROLE nolog LOGIN/, 'a NOLOGIN role: 55000 with a hint');

# 3. cron.host = the socket directory: pg_hba.conf's "local all all trust"
#    (the test cluster's) lets pg_cron in, so the schedule is made.
$node->append_conf('postgresql.conf', "cron.host = '" . $node->host . "'\n");
$node->restart;
is(try_as('alice', q{SELECT taskq.schedule('nightly', '0 3 * * *', 'report')}), 'ok',
	'cron.host on the socket with a trust rule: scheduled');
is(sql($state), '1/1', '... one schedule, one pg_cron job');

# 4. The same with a password rule for alice first in pg_hba.conf: refused.
my $hba = $node->data_dir . '/pg_hba.conf';
my $orig = slurp_file($hba);
open my $fh, '>', $hba or die $!;
print $fh "local all alice scram-sha-256\n$orig";
close $fh;
$node->reload;
$r = try_as('alice', q{SELECT taskq.schedule('hourly', '0 * * * *', 'report')});
like($r, qr/^55000\|.*pg_hba\.conf line 1 asks .* for scram-sha-256/, 'a password rule in pg_hba.conf: 55000 naming the line');
like($r, qr/cron\.use_background_workers = on/, '... with the hint');
is(sql($state), '1/1', '... nothing added');
# a rule for a group alice is in counts too
open $fh, '>', $hba or die $!;
print $fh "local all +taskq_user md5\n$orig";
close $fh;
$node->reload;
like(try_as('alice', q{SELECT taskq.schedule('hourly', '0 * * * *', 'report')}),
	qr/^55000\|.*asks .* for md5/, 'a password rule for +taskq_user applies to its member');

# 5. With background workers no connection is made: scheduled.
$node->append_conf('postgresql.conf', "cron.use_background_workers = on\n");
$node->restart;
is(try_as('alice', q{SELECT taskq.schedule('hourly', '0 * * * *', 'report')}), 'ok',
	'cron.use_background_workers = on: scheduled despite the password rule');
like(try_as('nolog', q{SELECT taskq.schedule('n', '0 3 * * *', 'report')}), qr/^55000\|.*NOLOGIN/,
	'... but a NOLOGIN role still refused');
is(try_as('carol', q{SELECT taskq.schedule('carols', '0 5 * * *', 'report')}), 'ok', 'carol schedules too');
open $fh, '>', $hba or die $!;
print $fh $orig;
close $fh;
$node->reload;

# 6. health(): a failed run of alice's schedule (as pg_cron records one)
#    shows to alice with pg_cron's error, not to carol; a taskq_monitor
#    member sees the count and names, not the error.
sql(q{
INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status,
                                  return_message, start_time, end_time)
SELECT jobid, 900001, 0, 'postgres', 'alice', command, 'failed', 'connection failed', now(), now()
  FROM cron.job WHERE jobname = 'taskq:nightly';
});
my $health = q{SELECT status || ': ' || message FROM taskq.health() WHERE check_name = 'schedules'};
like(sql("SET ROLE alice; $health"), qr/^fail: 1 pg_cron runs failed .*nightly.*connection failed/,
	"the owner sees its schedule's failed run and pg_cron's error");
like(sql("SET ROLE carol; $health"), qr/^ok: /, "another role does not see alice's failure");
like(sql("SET ROLE watcher; $health"), qr/^fail: 1 pg_cron runs failed in the last hour \(schedules: nightly\)$/,
	'a taskq_monitor member sees the count and name, not the error text');
is(sql(q{SET ROLE watcher; SELECT value FROM taskq.metrics()
          WHERE metric = 'taskq_health_status' AND labels->>'check' = 'schedules'}), '2',
	'... and taskq_health_status{check="schedules"} is 2');

# 7. DROP EXTENSION taskq removes taskq's pg_cron jobs; rolled back, keeps them.
is(sql(q{SELECT count(*) FROM cron.job WHERE jobname LIKE 'taskq:%'}), '3', 'three taskq pg_cron jobs');
sql(q{BEGIN; DROP EXTENSION taskq; ROLLBACK;});
is(sql(q{SELECT count(*) FROM cron.job WHERE jobname LIKE 'taskq:%'}), '3', 'a rolled-back DROP EXTENSION keeps them');
sql(q{DROP EXTENSION taskq});
is(sql(q{SELECT count(*) FROM cron.job WHERE jobname LIKE 'taskq:%'}), '0', 'DROP EXTENSION taskq removes them');
is(sql(q{SELECT string_agg(jobname, ',') FROM cron.job}), 'not_taskq', '... and leaves other pg_cron jobs');
# the roles remain, as documented; they can be dropped once nothing uses them
is(sql(q{SELECT count(*) FROM pg_roles WHERE rolname IN ('taskq_user', 'taskq_worker', 'taskq_monitor', 'taskq_admin')}),
	'4', 'the predefined roles remain after DROP EXTENSION');

$node->stop;
done_testing();
