# Rate limits across a restart (issue 23): a queue's token bucket lives in
# shared memory and starts empty when the server starts, so a restart in the
# middle of a window never grants a fresh burst on top of what the window
# already took.  The buckets are filled to their burst at a fast rate, then
# the rate drops to 1/h: no token is earned while the test runs, so each
# count below is exact, for external claims and for the executors.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;

my $node = taskq_node('rate_restart', restart_after_crash => 'on');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE EXTENSION taskq;
CREATE TABLE done (job bigint PRIMARY KEY);
CREATE FUNCTION record(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO done VALUES (taskq.current_job_id())
$$;
SELECT taskq.register_handler('record', 'record(jsonb)');
-- the tokens of queue q's bucket now, as its limit says
CREATE FUNCTION tokens(q text) RETURNS float8 LANGUAGE sql AS $$
    SELECT s.tokens FROM taskq.queues, taskq._rate_state(ARRAY[name], ARRAY[rate_per_second],
                                                          ARRAY[rate_burst]) s
     WHERE name = q $$;
CREATE FUNCTION throttled(q text) RETURNS bigint LANGUAGE sql AS $$
    SELECT s.throttled FROM taskq.queues, taskq._rate_state(ARRAY[name], ARRAY[rate_per_second],
                                                             ARRAY[rate_burst]) s
     WHERE name = q $$;
});
ok(executors_up($node, 2), 'the executors are up');

# fill queue q's bucket to burst, then slow it to 1/h
sub fill
{
	my ($q, $burst) = @_;
	sql("SELECT taskq.configure_queue('$q', rate_limit => '1000000/s', rate_burst => $burst)");
	# a claim of the empty queue makes its bucket, the next one fills it
	sql("SELECT count(*) FROM taskq.claim(ARRAY['$q'], 'fill', 1)") for 1 .. 2;
	sql("SELECT taskq.configure_queue('$q', rate_limit => '1/h', rate_burst => $burst)");
	ok(sql("SELECT tokens('$q') >= $burst"), "$q: bucket full");
}

sub claim
{
	return sql("SELECT count(*) FROM taskq.claim(ARRAY['$_[0]'], 'ext', 100)");
}

############################################################################
# External workers
############################################################################
fill('ext', 10);
sql("SELECT taskq.submit('ext_job', queue => 'ext') FROM generate_series(1, 50)");
is(claim('ext'), 10, 'a claim takes the whole burst');
is(claim('ext'), 0, 'and then nothing');
ok(sql("SELECT taskq.claim_retry_after(ARRAY['ext']) > interval '30 minutes'"),
	'claim_retry_after says to come back when the next token is due');

$node->restart;
is(claim('ext'), 0, 'after a restart mid-window: no new burst');
ok(sql("SELECT tokens('ext') < 1"), 'the bucket started empty');

$node->stop('immediate');
$node->start;
is(claim('ext'), 0, 'after a crash mid-window: no new burst');

############################################################################
# Executors
############################################################################
ok(executors_up($node, 2), 'the executors are back');
fill('exec', 3);
sql("SELECT taskq.submit('record', queue => 'exec') FROM generate_series(1, 10)");
ok($node->poll_query_until('postgres', "SELECT count(*) = 3 FROM done"), 'the executors run the burst');
# the executors keep claiming and find the bucket empty
my $seen = sql("SELECT throttled('exec')");
ok($node->poll_query_until('postgres', "SELECT throttled('exec') > $seen + 5"),
	'the executors are throttled');
is(sql("SELECT count(*) FROM done"), 3, 'and run no more');
is(sql("SELECT count(*) FROM taskq.jobs WHERE queue = 'exec' AND status = 'pending'"), 7,
	'the rest wait');

$node->restart;
ok(executors_up($node, 2), 'the executors are up after the restart');
ok($node->poll_query_until('postgres', "SELECT throttled('exec') > 5"),
	'they claim after the restart and are throttled');
is(sql("SELECT count(*) FROM done"), 3, 'a restart gave the executors no new burst');

# a changed limit applies at once
sql("SELECT taskq.configure_queue('exec', rate_limit => '1000000/s', rate_burst => 100)");
ok($node->poll_query_until('postgres', "SELECT count(*) = 10 FROM done"),
	'a raised limit lets the rest run');

############################################################################
# Job types: one bucket over every queue, empty after a restart too
############################################################################
sql("SELECT taskq.configure_job_type('typed', rate_limit => '1000000/s', rate_burst => 4)");
sql("SELECT count(*) FROM taskq.claim(ARRAY['tq'], 'fill', 1)") for 1 .. 2;
sql("SELECT taskq.configure_job_type('typed', rate_limit => '1/h', rate_burst => 4)");
sql("SELECT taskq.submit('typed', queue => q) FROM unnest(ARRAY['tq', 'tq2']) q, generate_series(1, 5)");
is(sql("SELECT count(*) FROM taskq.claim(ARRAY['tq', 'tq2'], 'ext', 100)"), 4,
	"a claim takes the type's burst, over two queues");
is(sql("SELECT count(*) FROM taskq.claim(ARRAY['tq2'], 'ext', 100)"), 0, 'and then nothing');
$node->restart;
is(sql("SELECT count(*) FROM taskq.claim(ARRAY['tq', 'tq2'], 'ext', 100)"), 0,
	"after a restart mid-window: no new burst for the type");

$node->stop;
done_testing();
