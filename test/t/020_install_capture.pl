# Objects planted in public cannot capture taskq's calls.
#
# An unprivileged role with CREATE on schema public (mallory) plants trojan
# functions and operators there: exact-type overloads that PostgreSQL prefers
# to pg_catalog's polymorphic or coerced ones wherever public is on the
# search_path (public.=(regrole, regrole), public.*(numeric, integer),
# public.unnest(bigint[]), operators on taskq's enums ...), and same-signature
# look-alikes that win wherever public comes before pg_catalog (public.now(),
# public.btrim(text, text), public.length(text), public.pg_notify(text, text),
# public.=(text, text) ...).  Each one, when called, records current_user
# in mallory's table and logs a WARNING, then does the real work, so a capture
# is seen even when its transaction rolls back.
#
# A positive control proves the traps fire in unpinned SQL.  Then the
# superuser runs CREATE EXTENSION taskq with search_path 'public, pg_catalog',
# and every public function and view is exercised as the superuser, an admin,
# a worker, a plain role and mallory herself, all with search_path
# 'public, pg_catalog', while the executors run jobs (one handler even leaves
# that search_path behind in its session).  Nothing planted is ever called,
# every job runs as the role that submitted it, every SECURITY DEFINER
# function of the extension pins search_path, and mallory cannot put objects
# into schema taskq.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;

my $node = taskq_node('install_capture', 'taskq.batch_size' => '8', log_min_messages => 'warning');

# The test's own checks run with a pinned search_path, so they cannot trip
# the traps themselves.
sub sql
{
	return $node->safe_psql('postgres',
		"SET search_path = pg_catalog, pg_temp;\n$_[0]");
}

# Run SQL as role with the attacker-friendly search_path.
sub as
{
	my ($role, $query) = @_;
	return $node->safe_psql(
		'postgres',
		"SET search_path = public, pg_catalog;\n$query",
		connstr => $node->connstr('postgres') . " user=$role");
}

# Run SQL as role (hostile search_path) expecting an error whose SQLSTATE is
# sqlstate; the message must match pattern.
sub fails_as
{
	my ($role, $query, $sqlstate, $pattern, $name) = @_;
	my ($ret, $out, $err) = $node->psql(
		'postgres',
		"\\set VERBOSITY verbose\nSET search_path = public, pg_catalog;\n$query",
		connstr => $node->connstr('postgres') . " user=$role");
	ok($ret != 0 && $err =~ /ERROR:\s+$sqlstate:/ && $err =~ $pattern, $name)
	  or diag("exit $ret, stderr: $err");
}

sub captured { return sql("SELECT count(*) FROM public.captured"); }

# ---------------------------------------------------------------- roles

sql(q{
CREATE ROLE mallory LOGIN;
CREATE ROLE alice LOGIN;
CREATE ROLE boss LOGIN;
CREATE ROLE wkr LOGIN;
GRANT CREATE ON SCHEMA public TO mallory;
});

# ---------------------------------------------------------------- the traps

# Every trap calls public.trap(name), which records and warns.  The traps pin
# their own search_path so they never call each other.
my $traps = q{
CREATE TABLE public.captured (fn text, who text, query text,
                              at timestamptz DEFAULT clock_timestamp());
GRANT INSERT, SELECT ON public.captured TO PUBLIC;
CREATE FUNCTION public.trap(fn text) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog AS $$
BEGIN
    RAISE WARNING 'taskq-capture: % called as %', fn, current_user;
    INSERT INTO public.captured (fn, who, query) VALUES (fn, current_user, current_query());
END $$;
};

# name => [signature, return type, body returning the real result]
my @fn_traps = (
	[ 'now()', 'timestamptz', 'RETURN now();' ],
	[ 'clock_timestamp()', 'timestamptz', 'RETURN clock_timestamp();' ],
	[ 'unnest(a bigint[])', 'SETOF bigint', 'RETURN QUERY SELECT unnest(a);' ],
	[ 'unnest(a text[])', 'SETOF text', 'RETURN QUERY SELECT unnest(a);' ],
	[ 'unnest(a jsonb[])', 'SETOF jsonb', 'RETURN QUERY SELECT unnest(a);' ],
	[ 'array_position(a bigint[], e bigint)', 'integer', 'RETURN array_position(a, e);' ],
	[ 'array_position(a text[], e text)', 'integer', 'RETURN array_position(a, e);' ],
	[ 'cardinality(a bigint[])', 'integer', 'RETURN cardinality(a);' ],
	[ 'btrim(s text, c text)', 'text', 'RETURN btrim(s, c);' ],
	[ 'length(s text)', 'integer', 'RETURN length(s);' ],
	[ 'jsonb_typeof(j jsonb)', 'text', 'RETURN jsonb_typeof(j);' ],
	[ 'pg_notify(c text, p text)', 'void', 'PERFORM pg_notify(c, p);' ],
	[ 'format(f text, a bigint)', 'text', 'RETURN format(f, a);' ],
	[ 'format(f text, a text)', 'text', 'RETURN format(f, a);' ],
	[ 'current_setting(n text)', 'text', 'RETURN current_setting(n);' ],
	[ 'current_setting(n text, m boolean)', 'text', 'RETURN current_setting(n, m);' ],
	[ 'isfinite(t timestamptz)', 'boolean', 'RETURN isfinite(t);' ],
	[ 'pg_advisory_xact_lock(a integer, b integer)', 'void', 'PERFORM pg_advisory_xact_lock(a, b);' ],
	[ 'pg_advisory_xact_lock_shared(a integer, b integer)', 'void',
		'PERFORM pg_advisory_xact_lock_shared(a, b);' ],
	[ 'pg_has_role(r regrole, g text, m text)', 'boolean', 'RETURN pg_has_role(r::oid, g, m);' ],
	[ 'array_to_string(a bigint[], d text)', 'text', 'RETURN array_to_string(a, d);' ],
	[ 'to_regnamespace(n text)', 'regnamespace', 'RETURN to_regnamespace(n);' ],
	[ 'set_config(n text, v text, l boolean)', 'text', 'RETURN set_config(n, v, l);' ],);

# [operator, left type, right type, return type, real expression of a and b]
my @op_traps = (
	[ '=', 'regrole', 'regrole', 'boolean', 'a::oid = b::oid' ],
	[ '<>', 'regrole', 'regrole', 'boolean', 'a::oid <> b::oid' ],
	[ '=', 'text', 'text', 'boolean', 'a OPERATOR(pg_catalog.=) b' ],
	[ '<>', 'text', 'text', 'boolean', 'a OPERATOR(pg_catalog.<>) b' ],
	[ '=', 'bigint', 'bigint', 'boolean', 'a OPERATOR(pg_catalog.=) b' ],
	[ '~~', 'text', 'text', 'boolean', 'a LIKE b' ],
	[ '||', 'bigint[]', 'bigint', 'bigint[]', 'a || b' ],
	[ '||', 'text[]', 'text', 'text[]', 'a || b' ],
	[ '*', 'numeric', 'integer', 'numeric', 'a * b::numeric' ],
	[ '*', 'interval', 'double precision', 'interval', 'a OPERATOR(pg_catalog.*) b' ],
	[ '+', 'timestamptz', 'interval', 'timestamptz', 'a OPERATOR(pg_catalog.+) b' ],
	[ '-', 'timestamptz', 'interval', 'timestamptz', 'a OPERATOR(pg_catalog.-) b' ],
	[ '<', 'timestamptz', 'timestamptz', 'boolean', 'a OPERATOR(pg_catalog.<) b' ],
	[ '<=', 'timestamptz', 'timestamptz', 'boolean', 'a OPERATOR(pg_catalog.<=) b' ],
	[ '?|', 'jsonb', 'text[]', 'boolean', 'a ?| b' ],
	[ '->>', 'jsonb', 'text', 'text', 'a ->> b' ],);

# The same after CREATE EXTENSION, on taskq's own types.
my @op_traps_taskq = (
	[ '=', 'taskq.job_status', 'taskq.job_status', 'boolean', 'a::text = b::text' ],
	[ '<>', 'taskq.job_status', 'taskq.job_status', 'boolean', 'a::text <> b::text' ],
	[ '=', 'taskq.priority', 'taskq.priority', 'boolean', 'a::text = b::text' ],
	[ '>', 'taskq.priority', 'taskq.priority', 'boolean', 'enum_gt(a, b)' ],);
my @fn_traps_taskq = (
	[ 'enum_range(p taskq.priority)', 'taskq.priority[]', 'RETURN enum_range(p);' ],);

my $n_trap = 0;
sub plant_sql
{
	my ($fns, $ops) = @_;
	my $out = '';
	for my $f (@$fns)
	{
		my ($sig, $ret, $body) = @$f;
		$out .=
		    "CREATE FUNCTION public.$sig RETURNS $ret LANGUAGE plpgsql VOLATILE "
		  . "SET search_path = pg_catalog AS \$\$ BEGIN "
		  . "PERFORM public.trap('$sig'); $body END \$\$;\n";
	}
	for my $o (@$ops)
	{
		my ($op, $l, $r, $ret, $expr) = @$o;
		my $fn = 'op_trap_' . $n_trap++;
		$out .=
		    "CREATE FUNCTION public.$fn(a $l, b $r) RETURNS $ret LANGUAGE plpgsql "
		  . "VOLATILE SET search_path = pg_catalog AS \$\$ BEGIN "
		  . "PERFORM public.trap('$op($l, $r)'); RETURN $expr; END \$\$;\n"
		  . "CREATE OPERATOR public.$op (LEFTARG = $l, RIGHTARG = $r, FUNCTION = public.$fn);\n";
	}
	return $out;
}

as('mallory', $traps . plant_sql(\@fn_traps, \@op_traps));

# Positive control: the traps fire in unpinned SQL, even with the default
# search_path (pg_catalog implicitly first) for the exact-type overloads.
$node->safe_psql(
	'postgres', q{
SELECT 'alice'::regrole = 'alice'::regrole;
SELECT 1.5 * 2;
SELECT ARRAY[1::bigint] || 2::bigint;
}, connstr => $node->connstr('postgres') . ' user=alice');
as('alice', q{SELECT now(); SELECT length('x');});
is( sql(q{SELECT string_agg(x, ', ' ORDER BY x COLLATE "C")
           FROM (SELECT DISTINCT fn || ' as ' || who AS x FROM public.captured) s}),
	'*(numeric, integer) as alice, ='
	  . '(regrole, regrole) as alice, length(s text) as alice, '
	  . 'now() as alice, ||(bigint[], bigint) as alice',
	'control: planted objects capture unpinned calls');
as('mallory', 'TRUNCATE public.captured');

# ---------------------------------------------------------------- install

$node->safe_psql(
	'postgres', q{
SET search_path = public, pg_catalog;
CREATE EXTENSION taskq;
});
is(captured(), '0', 'CREATE EXTENSION called nothing planted in public');

as('mallory', plant_sql(\@fn_traps_taskq, \@op_traps_taskq));
$node->safe_psql('postgres', q{SET search_path = public, pg_catalog; SELECT 'running'::taskq.job_status = 'running'},
	connstr => $node->connstr('postgres') . ' user=alice');
is(sql("SELECT string_agg(fn || ' as ' || who, ', ') FROM public.captured"),
	'=(taskq.job_status, taskq.job_status) as alice',
	'control: the operator on taskq.job_status captures unpinned calls');
as('mallory', 'TRUNCATE public.captured');
my $log_from = -s $node->logfile;    # the controls' warnings are above

# Handlers (not SECURITY DEFINER: they run as the job's owner).  leave_path
# leaves the attacker-friendly search_path set in the executor's session.
sql(q{
GRANT taskq_admin TO boss;
GRANT taskq_worker TO wkr;
GRANT taskq_user, taskq_monitor TO alice, mallory, wkr;  -- (every function is called by each role below)
CREATE TABLE public.runs (job_id bigint, who text);
GRANT INSERT, SELECT ON public.runs TO PUBLIC;
CREATE FUNCTION public.record_run(payload jsonb) RETURNS jsonb LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO public.runs VALUES (taskq.current_job_id(), current_user);
    RETURN jsonb_build_object('who', current_user);
END $$;
CREATE FUNCTION public.leave_path(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.runs VALUES (taskq.current_job_id(), current_user);
    PERFORM pg_catalog.set_config('search_path', 'public, pg_catalog', false);
END $$;
CREATE FUNCTION public.nap(payload jsonb) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO public.runs VALUES (taskq.current_job_id(), current_user);
    PERFORM pg_sleep(600);   -- until cancelled
END $$;
});
as('postgres', q{
SELECT taskq.register_handler('rec', 'public.record_run(jsonb)');
SELECT taskq.register_handler('leave', 'public.leave_path(jsonb)');
});
as('boss', q{SELECT taskq.register_handler('nap', 'public.nap(jsonb)');});

# ---------------------------------------------------------------- exercise

# In-database jobs of every role, handlers interleaved so that jobs run in
# the same executor session after leave_path.
my @roles = qw(postgres boss wkr alice mallory);
my @db_jobs;
for my $round (1 .. 3)
{
	for my $role (@roles)
	{
		push @db_jobs,
		  split /\n/,
		  as($role,
			"SELECT taskq.submit('leave', '{}');
			 SELECT taskq.submit('rec', '{\"r\": $round}', 'high');
			 SELECT id FROM taskq.submit_many('[{\"job_type\": \"rec\"}, {\"job_type\": \"leave\", \"priority\": \"low\"}]') id;
			 SELECT id FROM taskq.submit_many('[{\"job_type\": \"rec\"}, {\"job_type\": \"rec\", \"after\": [0], \"idempotency_key\": \"k$round\"}]') id;"
		  );
	}
}
my $db_list = join(',', @db_jobs);
is(as('postgres', "SELECT taskq.wait('{$db_list}', '90 s')"), 't', 'in-database jobs finished');
is( sql("SELECT count(*) FROM taskq.jobs WHERE id IN ($db_list) AND status = 'succeeded'"),
	scalar(@db_jobs), 'every in-database job succeeded');
is( sql(qq{SELECT count(*) FROM taskq.jobs j JOIN public.runs r ON r.job_id = j.id
           WHERE j.id IN ($db_list) AND r.who = j.owner::text}),
	scalar(@db_jobs), 'each in-database job ran once, as the role that submitted it');
is( sql(qq{SELECT count(*) FROM public.runs r JOIN taskq.jobs j ON j.id = r.job_id
           WHERE r.who <> j.owner::text}),
	'0', 'no job ran as another role');

# Every function and view, by each kind of role.
for my $role (@roles)
{
	as($role, q{
SELECT taskq._caller(), taskq._is_admin(), taskq.current_job_id();
SELECT count(*) FROM taskq._worker_slots();
SELECT count(*) FROM taskq._resources();
SELECT count(*) FROM taskq._rates();
SELECT count(*) FROM taskq._counters();
SELECT taskq._oldest_runnable_age() IS NULL;
SELECT count(*) FROM taskq.latency('1 hour');
SELECT count(*) FROM taskq.metrics();
SELECT taskq.metrics_prometheus() IS NOT NULL;
SELECT count(*) FROM taskq.health();
SELECT count(*) FROM taskq.workers;
SELECT count(*) FROM taskq.resources;
SELECT count(*) FROM taskq.throughput;
SELECT count(*) FROM taskq.queue_depth;
SELECT count(*) FROM taskq.dead_letter_queue;
SELECT count(*) FROM taskq.jobs;
SELECT count(*) FROM taskq.job_logs;
SELECT count(*) FROM taskq.job_dependencies;
SELECT count(*) FROM taskq.handlers;
SELECT count(*) FROM taskq.queues;
SELECT count(*) FROM taskq.schedules;
});
}

# External jobs (no handler): a small DAG per role in a queue of its own,
# claimed and finished by a worker role and by the owner itself, with a
# permanent failure and a retry of each kind, a cycle attempt and a cancel.
for my $role (qw(alice mallory boss))
{
	my $q = "xq_$role";
	my ($a, $b, $c, $d) = split /\n/, as($role, qq{
SELECT taskq.submit('ext', '{"step": "a"}', queue => '$q', idempotency_key => 'a');
SELECT taskq.submit('ext', '{"step": "a"}', queue => '$q', idempotency_key => 'a');
SELECT taskq.submit('ext', '{}', queue => '$q', run_at => '3000-01-01 00:00:00+00');
SELECT taskq.submit('ext', '{}', queue => '$q', depends_on => '{}');
});
	is($a, $b, "$role: idempotency key returned the same job");
	as($role, "SELECT taskq.add_dependency($d, $a)");
	my ($x1, $x2) = split /\n/, as($role, qq{
SELECT id FROM taskq.submit_many('[{"job_type": "ext", "queue": "$q", "depends_on": [$d]},
                                    {"job_type": "ext", "queue": "$q", "after": [0]}]') id;
});
	as($role, "SELECT taskq.add_dependency($x1, $c)");
	fails_as($role, "SELECT taskq.add_dependency($a, $x2)", '22023', qr/would create a cycle/,
		"$role: cycle rejected");
	fails_as($role, "SELECT taskq.add_dependency($a, $a)", '22023', qr/cannot depend on itself/,
		"$role: self-dependency rejected");
	as($role, "SELECT taskq.dag($x2); SELECT taskq.dag($x2, 'dot'); SELECT taskq.cancel($c);");
	is(sql("SELECT string_agg(status::text, ',' ORDER BY id) FROM taskq.jobs WHERE id IN ($a, $d, $x1, $x2)"),
		'pending,blocked,cancelled,cancelled', "$role: cancel cascaded to the dependents only");

	# the worker claims a, fails it for good; the owner retries it; the
	# worker completes it, which releases d
	is(as('wkr', "SELECT string_agg(id::text, ',') FROM taskq.claim(ARRAY['$q'], 'w1', 10, '1 minute', 4, 100)"),
		$a, "$role: the worker claimed the only runnable job");
	as('wkr', qq{
SELECT taskq.heartbeat($a, 'w1');
SELECT taskq.heartbeat($a, 'w1', '2 minutes');
SELECT taskq.fail($a, 'no', false, 'w1');
});
	as($role, "SELECT taskq.retry($a)");
	is(as('wkr', "SELECT string_agg(id::text, ',') FROM taskq.claim(NULL, 'w2', 5)"),
		$a, "$role: claimed again after the retry");
	as('wkr', "SELECT taskq.complete($a, '{\"ok\": true}', 'w2')");
	# the owner works its own job d: a permanent failure, retry_failed, done
	is(as($role, "SELECT string_agg(id::text, ',') FROM taskq.claim(ARRAY['$q'], 'self', 1)"),
		$d, "$role: the owner claimed its released job");
	as($role, "SELECT taskq.fail($d, 'again', false, 'self')");
	is(as($role, "SELECT taskq.retry_failed(queue => '$q')"), '1', "$role: retry_failed");
	as($role, qq{
SELECT count(*) FROM taskq.claim(ARRAY['$q'], 'self', 1);
SELECT taskq.complete($d, NULL, 'self');
SELECT taskq.purge_failed(older_than => '1 day');
});
	is(as($role, "SELECT taskq.wait(ARRAY[$a, $c, $d, $x1, $x2], '10 s')"), 't',
		"$role: its external jobs are all finished");
	is(sql("SELECT string_agg(status::text, ',' ORDER BY id) FROM taskq.jobs WHERE id IN ($a, $d)"),
		'succeeded,succeeded', "$role: both worked jobs succeeded");
}

# Administration, and cancelling a running in-database job.
as('boss', q{
SELECT taskq.pause('xq');
SELECT taskq.resume('xq');
SELECT taskq.configure_queue('xq', 2, '1 minute', 2);
SELECT taskq.configure_queue('xq');
SELECT taskq.register_handler('tmp', 'public.record_run(jsonb)');
SELECT taskq.unregister_handler('tmp');
});
fails_as('alice', "SELECT taskq.register_handler('x', 'public.record_run(jsonb)')",
	'42501', qr/permission denied/, 'a plain role cannot register a handler');
fails_as('mallory', "SELECT taskq.schedule('s', '* * * * *', 'rec')",
	'0A000', qr/pg_cron is not installed/, 'schedule without pg_cron: clear error');
fails_as('mallory', "SELECT taskq.unschedule('s')", '42704', qr/does not exist/,
	'unschedule of nothing: clear error');

my $nap = as('alice', "SELECT taskq.submit('nap', '{}')");
# its row may read pending until its batch commits: ask the executor
ok( $node->poll_query_until(
		'postgres', "SELECT EXISTS (SELECT 1 FROM taskq.workers WHERE job_id = $nap AND state = 'running')"),
	'napping job is running');
as('alice', "SELECT taskq.cancel($nap); SELECT taskq.wait(ARRAY[$nap], '30 s');");
is(sql("SELECT status FROM taskq.jobs WHERE id = $nap"), 'cancelled', 'running job cancelled');

# A few more in-database jobs after all of the above, to make sure the
# executors have gone through their whole cycle again.
my @late = split /\n/, as('mallory', "SELECT taskq.submit('rec', '{}') FROM generate_series(1, 20)");
is(as('mallory', "SELECT taskq.wait('{" . join(',', @late) . "}', '60 s')"), 't', 'late jobs finished');

# ---------------------------------------------------------------- verdict

is(captured(), '0', 'nothing planted in public was ever called')
  or diag(sql("SELECT string_agg(fn || ' as ' || who || ': ' || left(query, 200), E'\n') FROM public.captured"));
my $log = substr(slurp_file($node->logfile), $log_from);
my @hits = ($log =~ /^.*WARNING:\s+taskq-capture.*$/mg);
is(scalar(@hits), 0, 'no capture warning in the server log (not even in rolled-back work)')
  or diag(join("\n", @hits[0 .. ($#hits < 9 ? $#hits : 9)]));

is( sql(q{
SELECT coalesce(string_agg(p.oid::regprocedure::text, ', '), 'none')
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'taskq'
WHERE p.prosecdef
  AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
}), 'none', 'every SECURITY DEFINER function of taskq pins search_path to pg_catalog, pg_temp');
cmp_ok(
	sql(q{
SELECT count(*) FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'taskq'
WHERE p.prosecdef}), '>=', 20, 'the extension has its SECURITY DEFINER API');

fails_as('mallory', "CREATE FUNCTION taskq.now() RETURNS int LANGUAGE sql AS 'SELECT 1'",
	'42501', qr/permission denied for schema taskq/, 'mallory cannot create objects in schema taskq');
fails_as('mallory', "UPDATE taskq.jobs SET owner = 'postgres' WHERE owner = 'mallory'",
	'42501', qr/permission denied/, 'mallory cannot rewrite job owners');
fails_as('mallory', "SELECT taskq._insert_job('rec', '{}', 'normal', 'default', '{}', now(), 1, NULL, 1, 0, NULL, NULL, NULL, NULL, 'postgres')",
	'42501', qr/permission denied/, 'mallory cannot call the internal insert');

$node->stop;
done_testing();
