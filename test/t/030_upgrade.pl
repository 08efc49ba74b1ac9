# ALTER EXTENSION taskq UPDATE: a 0.1.0 database with jobs in every state
# (blocked, pending, running, succeeded, failed, cancelled, a DAG, a
# schedule) updates to the current version; its catalog then equals a fresh
# install's, and its old jobs run to completion.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;

my $node = taskq_node('upgrade',
	shared_preload_libraries => 'taskq,pg_cron',
	'cron.database_name' => 'postgres',
	'cron.use_background_workers' => 'on',
	max_worker_processes => '32');

sub sql { return $node->safe_psql($_[1] // 'postgres', $_[0]); }

my $current = sql(q{SELECT default_version FROM pg_available_extensions WHERE name = 'taskq'});

# Everything of taskq's in the catalog, one sorted line per object.
my $catalog_sql = q{
WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname IN ('taskq', 'taskq_internal'))
SELECT string_agg(line, E'\n' ORDER BY line) FROM (
    SELECT format('schema %s acl=%s', n.nspname, n.nspacl) AS line
      FROM pg_namespace n WHERE n.oid IN (SELECT oid FROM ns)
    UNION ALL
    SELECT format('rel %s kind=%s acl=%s opts=%s rls=%s/%s', c.oid::regclass, c.relkind, c.relacl,
                  c.reloptions, c.relrowsecurity, c.relforcerowsecurity)
      FROM pg_class c WHERE c.relnamespace IN (SELECT oid FROM ns)
    UNION ALL
    SELECT format('col %s.%s #%s %s notnull=%s default=%s acl=%s', c.oid::regclass, a.attname, a.attnum,
                  format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attacl)
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE c.relnamespace IN (SELECT oid FROM ns) AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT format('index %s', pg_get_indexdef(i.indexrelid))
      FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace IN (SELECT oid FROM ns)
    UNION ALL
    SELECT format('constraint %s %s %s', co.conrelid::regclass, co.conname, pg_get_constraintdef(co.oid))
      FROM pg_constraint co WHERE co.connamespace IN (SELECT oid FROM ns)
    UNION ALL
    SELECT format('function %s returns %s lang=%s vol=%s secdef=%s strict=%s set=%s rows=%s cost=%s parallel=%s config=%s acl=%s src=%s bin=%s',
                  p.oid::regprocedure, pg_get_function_result(p.oid), l.lanname, p.provolatile, p.prosecdef,
                  p.proisstrict, p.proretset, p.prorows, p.procost, p.proparallel, p.proconfig, p.proacl,
                  md5(p.prosrc), p.probin)
      || ' args=' || pg_get_function_arguments(p.oid)
      FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.pronamespace IN (SELECT oid FROM ns)
    UNION ALL
    SELECT format('view %s %s', c.oid::regclass, md5(pg_get_viewdef(c.oid)))
      FROM pg_class c WHERE c.relnamespace IN (SELECT oid FROM ns) AND c.relkind IN ('v', 'm')
    UNION ALL
    SELECT format('policy %s.%s %s %s roles=%s using=%s check=%s', p.schemaname, p.tablename, p.policyname,
                  p.cmd, p.roles, p.qual, p.with_check)
      FROM pg_policies p WHERE p.schemaname IN ('taskq', 'taskq_internal')
    UNION ALL
    SELECT format('trigger %s enabled=%s', pg_get_triggerdef(t.oid), t.tgenabled)
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
     WHERE c.relnamespace IN (SELECT oid FROM ns) AND NOT t.tgisinternal
    UNION ALL
    SELECT format('type %s %s', t.oid::regtype,
                  (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid))
      FROM pg_type t WHERE t.typnamespace IN (SELECT oid FROM ns) AND t.typtype IN ('e', 'd', 'c')
      AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')
    UNION ALL
    SELECT format('extension %s %s config=%s', x.extname, x.extversion, x.extconfig::regclass[])
      FROM pg_extension x WHERE x.extname = 'taskq'
    UNION ALL
    SELECT format('member %s', pg_describe_object(d.classid, d.objid, d.objsubid))
      FROM pg_depend d WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
       AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'taskq')
) s};

# --- a 0.1.0 database with work in every state --------------------------
# This library refuses to run 0.1.0's functions (test below), so the work is
# written as 0.1.0 wrote it: job rows, edges, log rows, a handler, a schedule.
sql(q{
CREATE EXTENSION taskq VERSION '0.1.0';
CREATE EXTENSION pg_cron;
CREATE ROLE upgrade_alice LOGIN;
CREATE TABLE runs (job bigint, who text);
GRANT INSERT ON runs TO PUBLIC;
CREATE FUNCTION note(payload jsonb) RETURNS void LANGUAGE sql AS
    $$ INSERT INTO public.runs VALUES (taskq.current_job_id(), current_user) $$;
INSERT INTO taskq.handlers (job_type, handler, registered_by) VALUES ('note', 'note(jsonb)', 'postgres');
CREATE FUNCTION old_job(status taskq.job_status, queue text, job_type text, parents bigint[] DEFAULT '{}')
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    id bigint;
    done boolean := status IN ('succeeded', 'failed', 'cancelled');
BEGIN
    INSERT INTO taskq.jobs (queue, job_type, priority, effective_priority, status, payload, result,
                            last_error, attempts, max_attempts, backoff, cpu_units, memory_mb, run_at,
                            owner, worker, lease_expires_at, unfinished_parents, in_database,
                            started_at, finished_at)
    VALUES (queue, job_type, 'normal', 'normal', status, '{"old": true}',
            CASE WHEN status = 'succeeded' THEN '{"ok": true}'::jsonb END,
            CASE WHEN status = 'failed' THEN 'old failure' END,
            CASE WHEN status IN ('running', 'succeeded', 'failed') THEN 1 ELSE 0 END,
            CASE WHEN status = 'failed' THEN 1 ELSE 3 END, '1 second', 1, 0, now(),
            'upgrade_alice', CASE WHEN status = 'running' THEN 'old worker' END,
            CASE WHEN status = 'running' THEN now() + interval '1 hour' END,
            cardinality(parents), job_type = 'note',
            CASE WHEN status IN ('running', 'succeeded', 'failed') THEN now() END,
            CASE WHEN done THEN now() END)
    RETURNING jobs.id INTO id;
    INSERT INTO taskq.job_dependencies (job_id, depends_on) SELECT id, unnest(parents);
    INSERT INTO taskq.job_logs (job_id, status, attempt, message)
    VALUES (id, CASE WHEN cardinality(parents) > 0 THEN 'blocked' ELSE 'pending' END::taskq.job_status, 0, 'submitted');
    IF status NOT IN ('pending', 'blocked') THEN
        INSERT INTO taskq.job_logs (job_id, status, attempt, message) VALUES (id, status, 1, 'old');
    END IF;
    RETURN id;
END $$;
INSERT INTO taskq.schedules (name, cron, job_type, payload, priority, queue, owner, cron_jobid)
VALUES ('up_nightly', '0 3 * * *', 'note', '{}', 'normal', 'up', 'upgrade_alice',
        cron.schedule_in_database('taskq:up_nightly', '0 3 * * *',
                                  $$SELECT taskq.submit('note', '{}'::jsonb, 'normal'::taskq.priority, 'up')$$,
                                  'postgres', 'upgrade_alice'));
});
is(sql(q{SELECT extversion FROM pg_extension WHERE extname = 'taskq'}), '0.1.0', 'installed 0.1.0');

my %job;
$job{$_->[0]} = sql("SELECT old_job($_->[1])") for (
	[ext_pending => q{'pending', 'up', 'ext'}],
	[ext_running => q{'running', 'up_run', 'ext'}],
	[ext_done => q{'succeeded', 'up_done', 'ext'}],
	[ext_failed => q{'failed', 'up_fail', 'ext'}],
	[ext_cancelled => q{'cancelled', 'up', 'ext'}]);
# a DAG: an in-database child waits for alice's external parent
$job{child} = sql(qq{SELECT old_job('blocked', 'up', 'note', ARRAY[$job{ext_pending}])});
$job{grandchild} = sql(qq{SELECT old_job('blocked', 'up', 'note', ARRAY[$job{child}])});
is(sql(q{SELECT string_agg(DISTINCT status::text, ',' ORDER BY status::text) FROM taskq.jobs}),
	'blocked,cancelled,failed,pending,running,succeeded', 'jobs in every state before the update');

# --- an old schema under this library: errors and waiting workers ----------
my ($ret, $out, $err) = $node->psql('postgres', q{SELECT taskq.submit('ext', queue => 'up')});
like($err, qr/schema in this database is version 0\.1\.0, but its library is version \Q$current\E.*\n.*HINT:\s+Run ALTER EXTENSION taskq UPDATE/s,
	'a call into the old schema fails with a hint to update');
($ret, $out, $err) = $node->psql('postgres', q{SELECT taskq.cancel(1)});
like($err, qr/HINT:\s+Run ALTER EXTENSION taskq UPDATE/, '... every call');
ok($node->wait_for_log(qr/taskq: schema version 0\.1\.0 in database "postgres", library version \Q$current\E: workers wait/),
	'the workers wait for the update, and say so');
is(sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'taskq executor'}), '0',
	'... without starting executors');

# --- the update ------------------------------------------------------------
($ret, $out, $err) = $node->psql('postgres', 'ALTER EXTENSION taskq UPDATE');
is($ret, 0, 'ALTER EXTENSION taskq UPDATE succeeds');
like($err, qr/WARNING:\s+taskq: role upgrade_alice owns jobs or schedules and was granted taskq_user/,
	'a role that used taskq keeps its rights, and is told so');
is(sql(q{SELECT pg_has_role('upgrade_alice', 'taskq_user', 'MEMBER')}), 't', '... as a taskq_user member');
is(sql(q{SELECT extversion FROM pg_extension WHERE extname = 'taskq'}), $current, "updated to $current");

# --- the catalog equals a fresh install's ----------------------------------
sql('CREATE DATABASE fresh');
sql('CREATE EXTENSION taskq', 'fresh');
my $updated = sql($catalog_sql);
my $fresh = sql($catalog_sql, 'fresh');
my %in_fresh = map { $_ => 1 } split /\n/, $fresh;
my %in_updated = map { $_ => 1 } split /\n/, $updated;
my @missing = grep { !$in_updated{$_} } sort keys %in_fresh;
my @extra = grep { !$in_fresh{$_} } sort keys %in_updated;
ok(scalar(keys %in_fresh) > 100, 'the catalog description covers taskq (' . scalar(keys %in_fresh) . ' lines)');
is_deeply(\@missing, [], 'nothing of a fresh install is missing after the update');
is_deeply(\@extra, [], 'the update leaves nothing a fresh install lacks');

# --- the old jobs run to completion -----------------------------------------
ok(executors_up($node, 2), 'the executors are up');
sql(qq{SELECT taskq.complete($job{ext_running}, NULL, 'old worker')});
sql(qq{SELECT taskq.complete(id, NULL, 'new worker') FROM taskq.claim(ARRAY['up'], 'new worker', 10)});
is(sql(qq{SELECT taskq.wait(ARRAY[$job{child}, $job{grandchild}], '60 s')}), 't',
	'the DAG submitted before the update runs after it');
is(sql(qq{SELECT string_agg(who, ',' ORDER BY job) FROM runs}), 'upgrade_alice,upgrade_alice',
	'... as its owner');
is(sql(qq{SELECT string_agg(status::text, ',' ORDER BY id) FROM taskq.jobs WHERE id IN
	($job{ext_pending}, $job{ext_running}, $job{ext_done}, $job{ext_failed}, $job{ext_cancelled})}),
	'succeeded,succeeded,succeeded,failed,cancelled', 'every old job ended as it should');
sql(qq{SELECT taskq.retry($job{ext_failed})});
is(sql(qq{SELECT status FROM taskq.jobs WHERE id = $job{ext_failed}}), 'pending',
	'a job dead-lettered before the update can be retried');
my $new = sql(q{SET ROLE upgrade_alice; SELECT taskq.submit('note', queue => 'up')});
is(sql(qq{SELECT taskq.wait(ARRAY[$new], '60 s')}), 't', 'the old role submits and runs new jobs');
is(sql(q{SELECT count(*) FROM cron.job WHERE jobname = 'taskq:up_nightly' AND username = 'upgrade_alice'}),
	'1', 'the schedule survives');
sql(q{SET ROLE upgrade_alice; SELECT taskq.unschedule('up_nightly')});
is(sql(q{SELECT count(*) FROM cron.job WHERE jobname = 'taskq:up_nightly'}), '0', '... and is removed by its owner');

# --- bad versions ------------------------------------------------------------
($ret, $out, $err) = $node->psql('fresh', q{ALTER EXTENSION taskq UPDATE TO '9.9.9'});
like($err, qr/has no update path from version "\Q$current\E" to version "9.9.9"/,
	'an update to an unknown version is refused');
($ret, $out, $err) = $node->psql('postgres', q{CREATE DATABASE other; });
($ret, $out, $err) = $node->psql('other', q{CREATE EXTENSION taskq VERSION '0.0.1'});
like($err, qr/extension "taskq" has no installation script nor update path for version "0.0.1"/,
	'an unknown version is refused');
is($node->safe_psql('other', q{SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'taskq%'}), '0',
	'... and leaves nothing behind');

$node->stop;
done_testing();
