# taskq stops its workers before a DROP DATABASE or ALTER DATABASE ... RENAME
# of taskq.database (they would block it), but only for a statement that
# will run: one by a role that does not own the database, or a DROP inside
# a transaction block, fails with PostgreSQL's usual error and leaves the
# workers and their running jobs alone, however often it is repeated.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;

my $node = taskq_node('guard_perms');

sub sql { return $node->safe_psql('postgres', $_[0]); }

# stderr of $sql run by $role, each statement on its own (psql reads stdin)
sub try_as
{
	my ($role, $db, $sql) = @_;
	my ($ret, $out, $err) = $node->psql($db, $sql, extra_params => [ '-U', $role ]);
	return $err;
}

sub worker_pids
{
	return sql("SELECT string_agg(pid::text, ',' ORDER BY pid) FROM taskq.workers");
}

sql(q{
CREATE EXTENSION taskq;
CREATE ROLE mallory LOGIN CREATEDB;
CREATE FUNCTION nap(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    WHILE clock_timestamp() < t0 + interval '300 s' LOOP
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT taskq.register_handler('nap', 'nap(jsonb)');
});
ok(executors_up($node, 2), 'two executors are up');
my $job = sql("SELECT taskq.submit('nap')");
ok( $node->poll_query_until(
		'postgres', "SELECT EXISTS (SELECT 1 FROM taskq.workers WHERE job_id = $job AND state = 'running')"),
	'a long job is running');
my $pids = worker_pids();

for my $round (1 .. 3)
{
	like(try_as('mallory', 'postgres', 'DROP DATABASE postgres'),
		qr/ERROR:  must be owner of database postgres/,
		"round $round: mallory's DROP DATABASE fails as usual");
	like(try_as('mallory', 'template1', 'DROP DATABASE postgres'),
		qr/ERROR:  must be owner of database postgres/,
		"round $round: also from another database");
	like(try_as('mallory', 'template1', "BEGIN;\nDROP DATABASE postgres;\nROLLBACK;"),
		qr/ERROR:  DROP DATABASE cannot run inside a transaction block/,
		"round $round: and inside BEGIN");
	like(try_as('mallory', 'template1', 'ALTER DATABASE postgres RENAME TO elsewhere'),
		qr/ERROR:  must be owner of database postgres/,
		"round $round: so does mallory's RENAME");
	like(try_as('postgres', 'template1', "BEGIN;\nDROP DATABASE postgres;\nROLLBACK;"),
		qr/ERROR:  DROP DATABASE cannot run inside a transaction block/,
		"round $round: a superuser's DROP inside BEGIN fails");
	like(try_as('postgres', 'postgres', 'DROP DATABASE postgres'),
		qr/ERROR:  cannot drop the currently open database/,
		"round $round: and so does one from the database itself");
}
is(worker_pids(), $pids, 'the launcher and executors kept their pids');
# its claim commits with its batch (or first, once jobs are slow)
like( sql("SELECT status || ' ' || attempts FROM taskq.jobs WHERE id = $job"),
	qr/^(pending 0|running 1)$/, 'the long job still runs in its first attempt');
is(sql("SELECT count(*) FROM taskq.workers WHERE job_id = $job AND state = 'running'"),
	'1', 'on its executor');
is(sql("SELECT count(*) FROM taskq.job_logs WHERE job_id = $job AND error IS NOT NULL"),
	'0', 'it was never interrupted');

# the statement that will run still gets the workers out of its way
sql("SELECT taskq.cancel($job)");
my ($ret, $out, $err) = $node->psql('template1', 'ALTER DATABASE postgres RENAME TO elsewhere');
is($ret, 0, 'the superuser renames the database') or diag $err;
($ret, $out, $err) = $node->psql('template1', 'ALTER DATABASE elsewhere RENAME TO postgres');
is($ret, 0, 'and back');
ok(executors_up($node, 2), 'the workers come back');

$node->stop;
done_testing();
