# One call must not exhaust the shared lock table.  submit(depends_on => 20,000
# ids) took one advisory lock per parent, held to the end of the transaction:
# a few such calls ran the server out of shared memory (53200), which also
# crashed the launcher.  Parents are row-locked now (locks in the tuples), so
# an unprivileged producer submits children of 20,000 parents, several times
# in one transaction and from parallel sessions, while the executors and an
# external worker keep completing jobs; the launcher stays the same process.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;
use IPC::Run;

# the default lock table: 64 locks per backend slot
my $node = taskq_node('lock_exhaustion', max_locks_per_transaction => 64);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE EXTENSION taskq;
CREATE ROLE producer LOGIN;
DO $d$ BEGIN  -- (where the API is granted to taskq_user rather than PUBLIC)
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'taskq_user') THEN
        GRANT taskq_user TO producer;
    END IF;
END $d$;
CREATE FUNCTION noop(payload jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$;
SELECT taskq.register_handler('noop', 'noop(jsonb)');
CREATE FUNCTION nap(payload jsonb) RETURNS void LANGUAGE sql AS $$ SELECT pg_sleep(0.01) $$;
SELECT taskq.register_handler('nap', 'nap(jsonb)');
});
ok(executors_up($node, 2), 'the executors are up');
my $launcher = sql("SELECT pid FROM taskq.workers WHERE kind = 'launcher'");
ok($launcher > 0, 'the launcher runs');

# 20,000 parents for external workers, the producer's
$node->safe_psql('postgres', q{
SELECT count(taskq.submit('wide_parent', queue => 'wide')) FROM generate_series(1, 20000);
}, extra_params => [ '-U', 'producer' ]);
my $parents = q{ARRAY(SELECT id FROM taskq.jobs WHERE job_type = 'wide_parent' ORDER BY id)};

# one transaction: three children of all 20,000
my ($rc, $out, $err) = $node->psql('postgres', qq{
BEGIN;
SELECT taskq.submit('wide_child', queue => 'wide', depends_on => $parents) > 0;
SELECT taskq.submit('wide_child', queue => 'wide', depends_on => $parents) > 0;
SELECT taskq.submit_many(jsonb_build_array(jsonb_build_object(
    'job_type', 'wide_child', 'queue', 'wide', 'depends_on', to_jsonb($parents)))) > 0;
SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid();
COMMIT;
}, extra_params => [ '-U', 'producer', '-v', 'ON_ERROR_STOP=1' ]);
is($rc, 0, 'three children of 20,000 parents in one transaction') or diag($err);
my @lines = split /\n/, $out;
cmp_ok($lines[-1], '<', 100, "the transaction held $lines[-1] heavyweight locks");

# three parallel sessions, two children of 20,000 parents each, while the
# executors run in-database jobs and an external worker completes others
my @sessions;
for my $s (1 .. 3)
{
	my %h = (out => '', err => '');
	$h{run} = IPC::Run::start(
		[
			'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d',
			$node->connstr('postgres') . ' user=producer'
		],
		'<',
		\qq{BEGIN;
SELECT taskq.submit('wide_child', queue => 'wide', depends_on => $parents);
SELECT taskq.submit('wide_child', queue => 'wide', depends_on => $parents);
COMMIT;
},
		'>', \$h{out}, '2>', \$h{err});
	push @sessions, \%h;
}
my $noops = sql(q{
SELECT array_agg(taskq.submit('noop', queue => 'busy')) FROM generate_series(1, 200);
});
sql(q{SELECT taskq.submit('external', queue => 'busy') FROM generate_series(1, 50)});
my $worked = sql(q{
SELECT taskq.complete_many(array_agg(id), NULL, 'ext')
FROM taskq.claim(ARRAY['busy'], 'ext', 50, '10 minutes');
});
is($worked, 50, 'an external worker claims and completes meanwhile');
is(sql("SELECT taskq.wait('$noops', '120 s')"), 't', 'the executors complete their jobs meanwhile');
for my $h (@sessions)
{
	ok($h->{run}->finish, 'a parallel session submitted two children of 20,000 parents')
	  or diag($h->{err});
}
is(sql("SELECT count(*) FROM taskq.jobs WHERE job_type = 'wide_child' AND unfinished_parents = 20000"),
	9, 'nine children wait for all 20,000 parents');

# completing the parents releases the children
for (1 .. 2)
{
	sql(q{
SELECT taskq.complete_many(array_agg(id), NULL, 'ext')
FROM taskq.claim(ARRAY['wide'], 'ext', 10000, '10 minutes');
});
}
is(sql("SELECT string_agg(DISTINCT status || ' ' || unfinished_parents, ',') FROM taskq.jobs WHERE job_type = 'wide_child'"),
	'pending 0', 'the children are pending once their parents succeeded');

# The same protocol against the executors' batches: children linked to
# in-database parents (10 ms each) while the executors claim and complete
# them (a parent pending, in a batch, or succeeded) are all released and
# run; nobody deadlocks.
my $children_sql = join('', map {
	"SELECT taskq.submit('noop', queue => 'mix', payload => '{\"child\": true}', depends_on => ARRAY(SELECT id FROM taskq.jobs WHERE queue = 'mix' AND payload = '{}' ORDER BY id DESC LIMIT 20));\n"
} 1 .. 150);
my @linkers;
for my $s (1 .. 2)
{
	# (each its own copy: IPC::Run consumes its input)
	my %h = (in => $children_sql, out => '', err => '');
	$h{run} = IPC::Run::start(
		[
			'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d',
			$node->connstr('postgres') . ' user=producer'
		],
		'<', \$h{in}, '>', \$h{out}, '2>', \$h{err});
	push @linkers, \%h;
}
for (1 .. 20)
{
	$node->safe_psql('postgres',
		"SELECT count(taskq.submit('nap', queue => 'mix')) FROM generate_series(1, 30)",
		extra_params => [ '-U', 'producer' ]);
}
for my $h (@linkers)
{
	ok($h->{run}->finish, 'a session linked 150 children to running parents') or diag($h->{err});
}
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 0 FROM taskq.jobs WHERE queue = 'mix' AND status <> 'succeeded'"),
	'every parent and every child succeeded');
is(sql("SELECT count(*) FROM taskq.jobs WHERE queue = 'mix' AND payload = '{\"child\": true}'"),
	300, 'all 300 children ran');
note(sql("SELECT count(*) FROM taskq.job_logs l JOIN taskq.jobs j ON j.id = l.job_id
          WHERE j.queue = 'mix' AND l.status = 'blocked' AND l.message = 'submitted'")
	  . ' of the children waited for a parent');

is(sql("SELECT pid FROM taskq.workers WHERE kind = 'launcher'"), $launcher, 'the launcher is the same process');
ok(executors_up($node, 2), 'the executors are still up');
my $log = slurp_file($node->logfile);
unlike($log, qr/out of shared memory|53200/, 'the server never ran out of shared memory');
unlike($log, qr/terminated by signal|server process .* exited with exit code/, 'no process crashed');
unlike($log, qr/deadlock detected/, 'no deadlock');

$node->stop;
done_testing();
