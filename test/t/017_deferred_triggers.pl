# Deferred triggers that a handler queues run as the job's owner, in the
# job's own subtransaction: at the batch's commit they would run as the
# executor's superuser.  mallory, a plain role, owns a table with a deferred
# constraint trigger of her own; her job's handler writes to the table.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;

my $node = taskq_node('deferred_triggers', 'taskq.batch_size' => '64');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE EXTENSION taskq;
CREATE ROLE mallory LOGIN IN ROLE taskq_user;
GRANT CREATE ON SCHEMA public TO mallory;
CREATE TABLE fired (who text, superuser boolean, escalation text);
GRANT INSERT ON fired TO PUBLIC;

SET ROLE mallory;
CREATE TABLE mine (v int);
-- mallory's own trigger: notes who runs it and tries to become superuser
CREATE FUNCTION mine_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    outcome text := 'refused';
BEGIN
    BEGIN
        ALTER ROLE mallory SUPERUSER;
        outcome := 'granted';
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
    INSERT INTO public.fired
    SELECT current_user, rolsuper, outcome FROM pg_roles WHERE rolname = current_user;
    IF NEW.v < 0 THEN
        RAISE EXCEPTION 'negative value %', NEW.v;
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER mine_check AFTER INSERT ON mine
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION mine_check();
RESET ROLE;

-- the handler, registered by the admin: runs as the job's owner
CREATE FUNCTION put(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO public.mine VALUES ((payload->>'v')::int)
$$;
SELECT taskq.register_handler('put', 'put(jsonb)');
});
ok(executors_up($node, 2), 'the executors are up');

# a batch: good jobs around one whose deferred trigger raises
sql("SELECT taskq.pause('default')");
my @good;
my $bad;
for my $v (1 .. 4, -1, 5 .. 8)
{
	my $id = sql(qq{SET ROLE mallory; SELECT taskq.submit('put', '{"v": $v}', max_attempts => 1)});
	if ($v < 0) { $bad = $id; } else { push @good, $id; }
}
sql("SELECT taskq.resume('default')");
is(sql("SELECT taskq.wait('{" . join(',', @good, $bad) . "}', '60 s')"), 't', 'the jobs finished');

is(sql("SELECT string_agg(DISTINCT who, ',') FROM fired"), 'mallory',
	"the deferred trigger ran as the job's owner");
is(sql("SELECT count(*) FROM fired WHERE superuser OR escalation <> 'refused'"), '0',
	'and could not make her superuser');
is(sql("SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'"), 'f', 'mallory is no superuser');
my $good = join(',', @good);
is(sql("SELECT count(*) FROM taskq.jobs WHERE id IN ($good) AND status = 'succeeded' AND attempts = 1"),
	'8', 'the jobs around the failing one succeeded at their first attempt');
is(sql("SELECT status FROM taskq.jobs WHERE id = $bad"), 'failed',
	'the job whose deferred trigger raised failed');
like(sql("SELECT last_error FROM taskq.jobs WHERE id = $bad"), qr/negative value -1/,
	'with its own error');
is(sql("SELECT string_agg(v::text, ',' ORDER BY v) FROM mine"), '1,2,3,4,5,6,7,8',
	'only the failed job\'s row is missing');

# A deferred trigger that defers again while the job's triggers fire (SET
# CONSTRAINTS ALL DEFERRED, then queues more) would leave work for the
# batch's commit, where it would run as the executor's superuser: refused.
sql(q{
SET ROLE mallory;
CREATE TABLE again (v int);
CREATE FUNCTION again_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    outcome text := 'refused';
BEGIN
    IF NEW.v = 1 THEN
        SET CONSTRAINTS ALL DEFERRED;
        INSERT INTO public.again VALUES (2);
    ELSE
        BEGIN
            ALTER ROLE mallory SUPERUSER;
            outcome := 'granted';
        EXCEPTION WHEN insufficient_privilege THEN
            NULL;
        END;
        INSERT INTO public.fired
        SELECT current_user, rolsuper, 'again: ' || outcome FROM pg_roles WHERE rolname = current_user;
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER again_check AFTER INSERT ON again
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION again_check();
RESET ROLE;
CREATE FUNCTION put_again(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO public.again VALUES (1)
$$;
SELECT taskq.register_handler('put_again', 'put_again(jsonb)');
});
my $again = sql(q{SET ROLE mallory; SELECT taskq.submit('put_again', max_attempts => 1)});
is(sql("SELECT taskq.wait('{$again}', '60 s')"), 't', 'the re-deferring job finished');
is(sql("SELECT status FROM taskq.jobs WHERE id = $again"), 'failed', 'it failed');
like(sql("SELECT last_error FROM taskq.jobs WHERE id = $again"), qr/may not defer constraints again/,
	'because its trigger deferred again');
is(sql("SELECT count(*) FROM fired WHERE escalation LIKE 'again:%' AND (superuser OR escalation <> 'again: refused' OR who <> 'mallory')"),
	'0', 'nothing of it ran as anyone but mallory');
is(sql("SELECT count(*) FROM again"), '0', 'and its writes rolled back');
is(sql("SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'"), 'f', 'mallory is still no superuser');

$node->stop;
done_testing();
