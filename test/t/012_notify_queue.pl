# A LISTEN session that does not read its notifications.
#
# A listener that sits in an open transaction does not consume the NOTIFY
# queue, so the queue cannot be truncated behind it and grows with every
# taskq status change.  This test proves that job processing does not depend
# on listeners: with such a listener holding the queue, executors keep
# running jobs at full speed, taskq.health() reports the queue, and the
# listener gets every notification once it reads again.
#
# Above taskq.notify_queue_limit (default 50 %) taskq stops publishing, so its
# own notifications cannot fill the queue; the test lowers the limit below
# what a stuck listener holds back and checks that jobs still run, nothing is
# published and health() fails the check.
#
# What is NOT covered, honestly: filling the queue with the default limit.
# On PostgreSQL 15 the queue holds 8 GB (max_notify_queue_pages, which would
# make it small, came in a later release): reaching 50 % takes gigabytes of
# notifications, far beyond a test's budget.  A queue filled by someone
# else's notifications still makes taskq's NOTIFY fail at commit, like any
# other notifying transaction's.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;
use Time::HiRes qw(time);

my $node = taskq_node('notify_queue', 'taskq.notify_level' => 'all');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE EXTENSION taskq;
CREATE TABLE done (job bigint PRIMARY KEY);
CREATE FUNCTION record(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO done VALUES (taskq.current_job_id())
$$;
SELECT taskq.register_handler('record', 'record(jsonb)');
});
ok( executors_up($node, 2),
	'the executors are up');
# the superuser's job channel: the admins' one, every job's transitions
my $jobs = sql('SELECT taskq.channel()');

# the listener: LISTEN (committed), then an open transaction it never ends
my $listener = $node->background_psql('postgres');
$listener->query_safe("LISTEN $jobs");
$listener->query_safe('BEGIN');
$listener->query_safe('SELECT 1');
my $listener_pid = $listener->query_safe('SELECT pg_backend_pid()');
is( sql(
		"SELECT state FROM pg_stat_activity WHERE pid = $listener_pid"),
	'idle in transaction', 'the listener sits in an open transaction');
is(sql('SELECT pg_notification_queue_usage()'), '0', 'the queue is empty to begin with');

# Submit in several transactions, so the queue grows page after page.
my $n  = 1000;
my $t0 = time();
for my $round (1 .. 10)
{
	sql("SELECT count(taskq.submit('record', jsonb_build_object('pad', repeat('x', 100))))
	       FROM generate_series(1, " . ($n / 10) . ")");
}
is( sql(
		"SELECT taskq.wait(array_agg(id), '60 s') FROM taskq.jobs"),
	't', "all $n jobs finished while the listener holds the queue");
my $took = time() - $t0;
cmp_ok($took, '<', 60, sprintf('in %.1fs', $took));
is(sql("SELECT count(*) FROM taskq.jobs WHERE status = 'succeeded'"), $n, 'every job succeeded');
is(sql('SELECT count(*) FROM done'), $n, 'each with its effect');

my $usage = sql('SELECT pg_notification_queue_usage()');
cmp_ok($usage, '>', 0, "the listener holds back the NOTIFY queue (usage $usage)");
my ($status, $message) = split /\|/, sql(
	"SELECT status, message FROM taskq.health() WHERE check_name = 'notification_queue'");
is($status, 'ok', 'health(): the notification_queue check is ok at this size');
like($message, qr/^NOTIFY queue [0-9.]+% full$/, 'with the fill level in its message');

# More jobs still run while the listener holds the queue.
my $more = sql("SELECT taskq.submit('record')");
is(sql("SELECT taskq.wait('{$more}', '30 s')"), 't', 'a job submitted later runs too');

# The listener ends its transaction and reads everything.
my $got = $listener->query_safe('COMMIT');
my $deadline = time() + 60;
my %succeeded;
my $notes = 0;
my $bad_keys = 0;
my $out_of_order = 0;
while (time() < $deadline)
{
	%succeeded = ();
	$notes = 0;
	$bad_keys = 0;
	$out_of_order = 0;
	my %seen;    # job id => statuses in the order received
	while ($got =~ /Asynchronous notification "$jobs" with payload "(.*?)" received/g)
	{
		my $payload = $1;
		$notes++;
		$seen{$1} .= "$2 "
		  if $payload =~ /"id"\s*:\s*(\d+).*"status"\s*:\s*"(\w+)"/;
		$succeeded{$1} = 1
		  if $payload =~ /"id"\s*:\s*(\d+).*"status"\s*:\s*"succeeded"/;
		my @keys = sort($payload =~ /"(\w+)"\s*:/g);
		$bad_keys++ unless join(',', @keys) eq 'attempt,id,job_type,queue,status';
	}
	$out_of_order = grep { $_ ne 'pending running succeeded ' } values %seen;
	last if scalar(keys %succeeded) >= $n + 1;
	select(undef, undef, undef, 0.2);
	$got .= $listener->query_safe('SELECT 1');
}
is(scalar(keys %succeeded), $n + 1, 'the listener got a "succeeded" notification for every job');
cmp_ok($notes, '>=', 3 * ($n + 1), "and $notes notifications in all (pending, running, succeeded per job)");
is($bad_keys, 0, 'every payload has exactly id, status, queue, job_type, attempt');
is($out_of_order, 0, 'each job was seen pending, running, succeeded, in that order');
$listener->quit;

# Above taskq.notify_queue_limit taskq stops publishing: a listener that never
# reads cannot fill the queue (which would fail every notifying transaction,
# job processing with it), and health() says so.  The limit is set (with a
# restart, so every executor has it) below one page of the queue, instead of
# filling gigabytes: the first page of notifications is published, then none.
$node->append_conf('postgresql.conf', "taskq.notify_queue_limit = 0.0000001\n");
$node->restart;
ok( executors_up($node, 2),
	'the executors are back after the restart');
my $stuck = $node->background_psql('postgres');
$stuck->query_safe("LISTEN $jobs");
$stuck->query_safe('BEGIN');
$stuck->query_safe('SELECT 1');
my $batch = sql("SELECT array_agg(taskq.submit('record')) FROM generate_series(1, 200)");
is(sql("SELECT taskq.wait('$batch', '60 s')"), 't', '200 more jobs ran');
my $held = sql('SELECT pg_notification_queue_usage()');
cmp_ok($held, '>', 0, "the second listener holds back the queue ($held)");
($status, $message) = split /\|/, sql(
	"SELECT status, message FROM taskq.health() WHERE check_name = 'notification_queue'");
is($status, 'fail', 'health(): notification_queue fails above the limit');
like($message, qr/stopped publishing/, 'and says taskq stopped publishing');
$batch = sql("SELECT array_agg(taskq.submit('record')) FROM generate_series(1, 200)");
is(sql("SELECT taskq.wait('$batch', '60 s')"), 't', 'jobs still run above the limit');
is(sql("SELECT count(*) FROM taskq.jobs WHERE id = ANY ('$batch') AND status = 'succeeded'"),
	200, 'every one of them succeeded');
is(sql('SELECT pg_notification_queue_usage()'), $held,
	'and not one of their status changes was published (the queue did not grow)');
$stuck->query_safe('COMMIT');
$stuck->quit;

$node->stop;
done_testing();
