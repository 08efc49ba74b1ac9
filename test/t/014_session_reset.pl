# Session state does not leak from one job to the next when they run in the
# same executor batch (one transaction, each handler in a subtransaction).
# test/t/001 checks the reset between batches of one job; this test runs
# jobs of two owners in one batch: a "dirty" job of alice (who may read a
# secret table) changes everything it can in its session, and the jobs of
# bob that follow in the same transaction must see none of it.  A handler
# may not change its role at all.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;

# one executor, batches of many jobs
my $node = taskq_node('session_reset', 'taskq.workers' => '1', 'taskq.batch_size' => '64');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE EXTENSION taskq;
CREATE ROLE alice LOGIN IN ROLE taskq_user;
CREATE ROLE bob LOGIN IN ROLE taskq_user;
CREATE TABLE secret (v int);
INSERT INTO secret VALUES (42);
GRANT SELECT ON secret TO alice;
CREATE SEQUENCE alice_seq;
GRANT USAGE ON alice_seq TO alice;
CREATE TABLE events (seq bigserial PRIMARY KEY, job bigint, name text, pid int,
                     xid xid8, who text, info jsonb);
GRANT ALL ON events, events_seq_seq TO PUBLIC;

-- Changes every piece of session state it can; payload.fail makes it raise
-- at the end (its changes must be undone on that path too).
CREATE FUNCTION dirty(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    tries jsonb := '{}';
    c refcursor := 'leaked_cursor';
BEGIN
    BEGIN
        SET ROLE postgres;
        tries := tries || jsonb_build_object('set_role', 'allowed');
    EXCEPTION WHEN OTHERS THEN
        tries := tries || jsonb_build_object('set_role', SQLERRM);
    END;
    BEGIN
        PERFORM set_config('role', 'postgres', false);
        tries := tries || jsonb_build_object('set_config_role', 'allowed');
    EXCEPTION WHEN OTHERS THEN
        tries := tries || jsonb_build_object('set_config_role', SQLERRM);
    END;
    BEGIN
        SET SESSION AUTHORIZATION postgres;
        tries := tries || jsonb_build_object('session_authorization', 'allowed');
    EXCEPTION WHEN OTHERS THEN
        tries := tries || jsonb_build_object('session_authorization', SQLERRM);
    END;
    BEGIN
        RESET ROLE;
        tries := tries || jsonb_build_object('reset_role', 'allowed');
    EXCEPTION WHEN OTHERS THEN
        tries := tries || jsonb_build_object('reset_role', SQLERRM);
    END;
    SET work_mem = '77MB';
    SET search_path = pg_catalog, dirty_schema;
    PERFORM set_config('application_name', 'dirty', false);
    PERFORM set_config('statement_timeout', '1ms', false);
    PERFORM pg_catalog.pg_advisory_lock(4242);
    PERFORM pg_catalog.pg_advisory_lock_shared(4243);
    CREATE TEMP TABLE leaked_temp (x int);
    BEGIN
        LISTEN leaked_channel;
    EXCEPTION WHEN feature_not_supported THEN
        tries := tries || jsonb_build_object('listen', SQLERRM);
    END;
    PREPARE leaked_stmt AS SELECT 1;
    OPEN c FOR SELECT v FROM public.secret;
    PERFORM nextval('public.alice_seq');
    INSERT INTO public.events (job, name, pid, xid, who, info)
    VALUES (taskq.current_job_id(), 'dirty', pg_backend_pid(), pg_current_xact_id(),
            current_user, tries || jsonb_build_object(
                'search_path', current_setting('search_path'),
                'locks', (SELECT count(*) FROM pg_locks
                          WHERE pid = pg_backend_pid() AND locktype = 'advisory'
                            AND objid IN (4242, 4243)),
                'temp', to_regclass('pg_temp.leaked_temp') IS NOT NULL,
                'prepared', (SELECT count(*) FROM pg_prepared_statements),
                'lastval', lastval()));
    IF (payload->>'fail')::boolean THEN
        RAISE EXCEPTION 'dirty job fails after making its mess';
    END IF;
END $$;

-- Records what a job sees of its session.
CREATE FUNCTION inspect(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    c refcursor := 'leaked_cursor';
    r record;
    fetched text;
    lv text;
BEGIN
    BEGIN
        FETCH c INTO r;
        fetched := 'read ' || r.v;
    EXCEPTION WHEN OTHERS THEN
        fetched := SQLERRM;
    END;
    BEGIN
        lv := lastval()::text;
    EXCEPTION WHEN OTHERS THEN
        lv := SQLERRM;
    END;
    INSERT INTO public.events (job, name, pid, xid, who, info)
    VALUES (taskq.current_job_id(), 'inspect', pg_backend_pid(), pg_current_xact_id(),
            current_user, jsonb_build_object(
                'session_user', session_user::text,
                'search_path', current_setting('search_path'),
                'work_mem', current_setting('work_mem'),
                'application_name', current_setting('application_name'),
                'statement_timeout', current_setting('statement_timeout'),
                'locks', (SELECT count(*) FROM pg_locks
                          WHERE pid = pg_backend_pid() AND locktype = 'advisory'
                            AND objid IN (4242, 4243)),
                'temp', to_regclass('pg_temp.leaked_temp') IS NOT NULL,
                'temp_tables', (SELECT count(*) FROM pg_class
                                WHERE relnamespace = pg_my_temp_schema()),
                'listen', (SELECT count(*) FROM pg_listening_channels()),
                'prepared', (SELECT count(*) FROM pg_prepared_statements),
                'cursor', fetched,
                'lastval', lv));
END $$;
SELECT taskq.register_handler('dirty', 'dirty(jsonb)');
SELECT taskq.register_handler('inspect', 'inspect(jsonb)');
});
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 1 FROM taskq.workers WHERE kind = 'executor' AND state = 'idle'"),
	'the executor is up');

# One batch: inspect, dirty, inspect, dirty (fails), inspect.  Separate
# transactions give increasing run_at, hence this claim order.
sql("SELECT taskq.pause('batch')");
my @ids;
for my $j (
	[ 'bob',   'inspect', '{}' ],
	[ 'alice', 'dirty',   '{}' ],
	[ 'bob',   'inspect', '{}' ],
	[ 'alice', 'dirty',   '{"fail": true}' ],
	[ 'bob',   'inspect', '{}' ])
{
	my ($role, $type, $payload) = @$j;
	push @ids, sql(
		"SET ROLE $role; SELECT taskq.submit('$type', '$payload', queue => 'batch', max_attempts => 1)");
}
my ($base, $dirty, $after, $dirty_fail, $after_fail) = @ids;
sql("SELECT taskq.resume('batch')");
is(sql("SELECT taskq.wait('{" . join(',', @ids) . "}', '60 s')"), 't', 'the jobs finished');
is( sql(
		"SELECT string_agg(status::text, ' ' ORDER BY id) FROM taskq.jobs WHERE id IN (" . join(',', @ids) . ")"),
	'succeeded succeeded succeeded failed succeeded',
	'the dirty jobs ran (the second one failed as planned), the inspections succeeded');
is(sql("SELECT last_error FROM taskq.jobs WHERE id = $dirty_fail"),
	'dirty job fails after making its mess',
	'the second dirty job failed where planned (it could open its cursor again)');
is( sql(
		"SELECT count(DISTINCT pid) || ' ' || count(DISTINCT xid) FROM events WHERE job IN ($base, $dirty, $after, $after_fail)"),
	'1 1', 'all ran in one executor process, in one batch transaction');
is( sql(
		"SELECT string_agg(job::text, ',' ORDER BY seq) FROM events"),
	"$base,$dirty,$after,$after_fail", 'in submission order');

sub info { return sql("SELECT info->>'$_[1]' FROM events WHERE job = $_[0]"); }

# the dirty job did change its session
is(sql("SELECT who FROM events WHERE job = $dirty"), 'alice', 'the dirty job ran as alice');
like(info($dirty, 'set_role'), qr/^cannot set parameter "role" within security-definer function$/,
	'SET ROLE is refused in a handler');
like(info($dirty, 'set_config_role'), qr/^cannot set parameter "role"/,
	"set_config('role') is refused too");
like(info($dirty, 'session_authorization'), qr/^cannot set parameter "session_authorization"|permission denied/,
	'SET SESSION AUTHORIZATION is refused');
like(info($dirty, 'reset_role'), qr/^cannot set parameter "role"/, 'RESET ROLE is refused');
is(info($dirty, 'search_path'), 'pg_catalog, dirty_schema', 'the dirty job changed search_path');
is(info($dirty, 'locks'),       '2',    'took two session advisory locks');
is(info($dirty, 'temp'),        'true', 'created a temp table');
is(info($dirty, 'prepared'),    '1',    'prepared a statement');
like(info($dirty, 'lastval'), qr/^\d+$/, 'and used a sequence');
like(info($dirty, 'listen'), qr/cannot execute LISTEN within a background process/,
	'LISTEN is refused in a background worker');

# what the following jobs of bob saw, after a successful and a failed dirty job
for my $case ([ $after, 'after the dirty job' ], [ $after_fail, 'after the failed dirty job' ])
{
	my ($id, $when) = @$case;
	note "$when: " . sql("SELECT info FROM events WHERE job = $id");
	is(sql("SELECT who FROM events WHERE job = $id"), 'bob', "$when: runs as its owner bob");
	for my $k (qw(session_user search_path work_mem application_name statement_timeout))
	{
		is(info($id, $k), info($base, $k), "$when: $k is as before");
	}
	is(info($id, 'locks'),       '0',     "$when: no advisory lock is held");
	is(info($id, 'temp'),        'false', "$when: the temp table is gone");
	is(info($id, 'temp_tables'), '0',     "$when: no temp relation is left");
	is(info($id, 'listen'),      '0',     "$when: no LISTEN");
	is(info($id, 'prepared'),    '0',     "$when: no prepared statement");
	is(info($id, 'cursor'), 'cursor "leaked_cursor" does not exist',
		"$when: alice's open cursor is gone (bob cannot read her secret through it)");
	is(info($id, 'lastval'), 'lastval is not yet defined in this session',
		"$when: alice's sequence use is forgotten");
}
is( sql(
		"SELECT count(*) FROM pg_locks l JOIN taskq.workers w ON w.pid = l.pid
		  WHERE l.locktype = 'advisory' AND l.objid IN (4242, 4243)"),
	'0', 'the idle executor holds none of the advisory locks');

$node->stop;
done_testing();
