# taskq publishes on its job channels (taskq_jobs_*) and work channels
# (taskq_work_*) only while a session may be listening on one of that kind:
# with nobody listening a submit never takes PostgreSQL's NOTIFY lock, and a
# LISTEN waits out the commits that decided not to publish, so no
# notification owed to a listener is skipped (taskq loaded without
# shared_preload_libraries cannot tell, and always publishes).
# A synchronous standby that never answers holds commits in their last step
# (wait event SyncRep) long enough to watch; a NOTIFY of a transaction stuck
# there holds the NOTIFY lock.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;

my $node = PostgreSQL::Test::Cluster->new('publish_to_listeners');
$node->init(allows_streaming => 1);
$node->append_conf('postgresql.conf', taskq_conf());
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

# A synchronous standby that never answers: commits stop in their last step.
sub standby_stalls
{
	my ($on) = @_;
	sql($on ? "ALTER SYSTEM SET synchronous_standby_names = 'nobody'"
		: 'ALTER SYSTEM RESET synchronous_standby_names');
	sql('SELECT pg_reload_conf()');
}

sql('CREATE EXTENSION taskq; CREATE TABLE holder (i int)');
# the superuser's channels: the admins' (every transition) and the workers'
my $jobs = sql('SELECT taskq.channel()');
my $work = sql('SELECT taskq.work_channel()');
standby_stalls(1);

# a session, its pid, and $sql sent without waiting for it
sub in_background
{
	my ($sql) = @_;
	my $s = $node->background_psql('postgres');
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	$s->query_until(qr/sent/, "\\echo sent\n$sql;\n") if defined $sql;
	return ($s, $pid);
}

sub waits_on
{
	my ($pid, $event) = @_;
	return $node->poll_query_until('postgres',
		"SELECT wait_event = '$event' FROM pg_stat_activity WHERE pid = $pid");
}

# A session whose transaction notified and now waits for the standby,
# holding PostgreSQL's NOTIFY lock.
sub hold_notify_lock
{
	return in_background('BEGIN; INSERT INTO holder VALUES (1); NOTIFY other_channel; COMMIT');
}

# Cancelling a SyncRep wait ends the commit (locally committed, WARNING).
sub release
{
	my ($pid) = @_;
	sql("SELECT pg_cancel_backend($pid)");
	return $node->poll_query_until('postgres',
		"SELECT coalesce(wait_event, '') <> 'SyncRep' FROM pg_stat_activity WHERE pid = $pid");
}

# 1. Nobody listens: a submit does not queue behind the NOTIFY lock.
my ($holder, $holder_pid) = hold_notify_lock();
ok(waits_on($holder_pid, 'SyncRep'), 'a transaction that notified waits for the standby, holding the NOTIFY lock');
my ($quiet, $quiet_pid) = in_background("SELECT taskq.submit('x', queue => 'quiet')");
ok(waits_on($quiet_pid, 'SyncRep'),
	'with nobody listening, a submit commits past the NOTIFY lock (it waits for the standby only)');

# 2. LISTEN waits for that commit, which decided not to publish, to end;
# a LISTEN cancelled while it waits waits again when retried.
my $listener = $node->background_psql('postgres', on_error_stop => 0);
my $listener_pid = $listener->query_safe('SELECT pg_backend_pid()');
$listener->query_safe("SET statement_timeout = '300ms'");
$listener->query("LISTEN $jobs");
like($listener->{stderr}, qr/statement timeout/,
	'LISTEN on a job channel waits for the commit that did not publish (here until its timeout)');
$listener->{stderr} = '';    # (BackgroundPsql keeps it)
$listener->query_safe('RESET statement_timeout');
$listener->query_until(qr/sent/, "\\echo sent\nLISTEN $jobs;\n");
ok(waits_on($listener_pid, 'Extension'), 'retried, it waits again');
ok(release($quiet_pid), 'that commit ends');
is($listener->query_safe('SELECT 1'), '1', 'and then LISTEN returns');
$quiet->quit;

# 3. A listener is counted: the next submit publishes and queues for the lock.
my ($loud, $loud_pid) = in_background("SELECT taskq.submit('x', queue => 'loud')");
ok(waits_on($loud_pid, 'object'), 'with a listener, a submit waits for the NOTIFY lock to publish');
ok(release($holder_pid), 'the NOTIFY lock holder ends');
ok(waits_on($loud_pid, 'SyncRep'), 'the submit got the lock');
ok(release($loud_pid), 'and ends');
my $heard = $listener->query_safe('SELECT 1');
like($heard, qr/"status": "pending", "queue": "loud"/, 'the listener heard the job submitted after it listened');
$_->quit for ($holder, $loud);

# 4. Subtransactions: what a rolled back savepoint published is never sent.
standby_stalls(0);
sql(qq{BEGIN;
SELECT taskq.submit('x', queue => 'kept');
NOTIFY $jobs, 'plain notify';
SAVEPOINT s;
SELECT taskq.submit('x', queue => 'undone');
ROLLBACK TO s;
SAVEPOINT t;
SELECT taskq.submit('x', queue => 'kept too');
RELEASE t;
COMMIT});
$heard = $listener->query_safe('SELECT 1');
like($heard, qr/"queue": "kept".*"queue": "kept too"/s, 'the jobs of the transaction and of its released savepoint are heard, in order');
unlike($heard, qr/undone/, 'the job of the rolled back savepoint is not');
like($heard, qr/plain notify.*"queue": "kept"/s,
	'taskq\'s notifications come at commit, after a NOTIFY the transaction made later');
# A savepoint released inside one that is rolled back goes with it; what
# its parent published before it, and a savepoint released afterwards, stay.
sql(qq{BEGIN;
SAVEPOINT outer_sp;
SELECT taskq.submit('x', queue => 'outer kept');
SAVEPOINT s1;
SELECT taskq.submit('x', queue => 'inner undone');
SAVEPOINT s2;
SELECT taskq.submit('x', queue => 'innermost undone');
RELEASE s2;
ROLLBACK TO s1;
SAVEPOINT s3;
SELECT taskq.submit('x', queue => 'after kept');
RELEASE s3;
RELEASE outer_sp;
COMMIT});
$heard = $listener->query_safe('SELECT 1');
like($heard, qr/"queue": "outer kept".*"queue": "after kept"/s,
	'nested savepoints: what the kept levels published is heard, in order');
unlike($heard, qr/undone/, 'nested savepoints: a released savepoint inside a rolled back one is not');

# 5. A listener that exits is no longer counted.
$listener->quit;
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $listener_pid");
standby_stalls(1);
($holder, $holder_pid) = hold_notify_lock();
ok(waits_on($holder_pid, 'SyncRep'), 'the NOTIFY lock is held again');
($quiet, $quiet_pid) = in_background("SELECT taskq.submit('x', queue => 'quiet again')");
ok(waits_on($quiet_pid, 'SyncRep'), 'once the listener is gone, a submit no longer takes the NOTIFY lock');
release($_) for ($holder_pid, $quiet_pid);
$_->quit for ($holder, $quiet);

# 6. The work channels are counted on their own: with only a listener on
# one, a claim (a transition published on the job channels only) sends
# nothing, and a submit announces its queue once, however many jobs.
my $worker = $node->background_psql('postgres');
$worker->query_safe("LISTEN $work");
($holder, $holder_pid) = hold_notify_lock();
ok(waits_on($holder_pid, 'SyncRep'), 'the NOTIFY lock is held once more');
my ($claimer, $claimer_pid) =
  in_background("SELECT count(*) FROM taskq.claim(ARRAY['quiet'], 'w', 1, '1 min')");
ok(waits_on($claimer_pid, 'SyncRep'),
	'with a listener on a work channel only, a claim commits past the NOTIFY lock');
release($claimer_pid);
is(sql("SELECT worker FROM taskq.jobs WHERE queue = 'quiet'"), 'w', 'the claim took the job');
my ($batch, $batch_pid) = in_background(
	q{SELECT count(*) FROM taskq.submit_many('[{"job_type": "x", "queue": "work"}, {"job_type": "x", "queue": "work"}, {"job_type": "x", "queue": "work"}]')});
ok(waits_on($batch_pid, 'object'), 'a submit waits for the NOTIFY lock to announce its queue');
release($holder_pid);
ok(waits_on($batch_pid, 'SyncRep'), 'the submit got the lock');

# That commit sent on the work channels and dropped its job channels'
# notifications: a LISTEN on a job channel waits for it, on a work one not.
my $late = $node->background_psql('postgres', on_error_stop => 0);
$late->query_safe("SET statement_timeout = '300ms'");
$late->query("LISTEN $jobs");
like($late->{stderr}, qr/statement timeout/,
	'LISTEN on a job channel waits for a commit that published on the work channels only');
my $prompt = $node->background_psql('postgres', on_error_stop => 0);
$prompt->query_safe("SET statement_timeout = '300ms'");
$prompt->query("LISTEN $work");
unlike($prompt->{stderr}, qr/statement timeout/, 'LISTEN on a work channel does not wait for it');
release($batch_pid);
$heard = $worker->query_safe('SELECT 1');
my @announced = $heard =~ /Asynchronous notification "$work" with payload "(.*?)"/g;
is("@announced", 'work', 'the work channel\'s listener heard the queue once, for three jobs');
$_->quit for ($holder, $claimer, $batch, $late, $prompt, $worker);

standby_stalls(0);
is(sql("SELECT string_agg(queue, ', ' ORDER BY id) FROM taskq.jobs"),
	'quiet, loud, kept, kept too, outer kept, after kept, quiet again, work, work, work',
	'every job committed, but the rolled back one');

# 7. The work channels announce only work for external workers: not a job the
# executors will run, but that job once its handler is unregistered.
$worker = $node->background_psql('postgres');
$worker->query_safe("LISTEN $work");
sql(q{CREATE FUNCTION noop(jsonb) RETURNS void LANGUAGE sql AS '';
SELECT taskq.pause('moved');
SELECT taskq.register_handler('moving', 'noop(jsonb)');
SELECT taskq.submit('moving', queue => 'moved')});
unlike($worker->query_safe('SELECT 1'), qr/Asynchronous notification/,
	'a job with a handler is not announced on the work channel');
sql(q{SELECT taskq.unregister_handler('moving')});
like($worker->query_safe('SELECT 1'), qr/"$work" with payload "moved"/,
	'unregistering its handler announces it');

# 8. taskq.notify_level = terminal keeps the job channels to the ends of
# jobs; the work channels still announce new work.  none silences both.
my $jobs_listener = $node->background_psql('postgres');
$jobs_listener->query_safe("LISTEN $jobs");
sql(q{SET taskq.notify_level = terminal;
SELECT taskq.submit('x', queue => 'terminal');
SELECT count(taskq.complete(id)) FROM taskq.claim(ARRAY['terminal'], 'w', 1, '1 min')});
$heard = $jobs_listener->query_safe('SELECT 1');
like($heard, qr/"status": "succeeded", "queue": "terminal"/,
	'notify_level terminal: the job\'s success is published on the job channel');
unlike($heard, qr/"status": "(pending|running)"/, 'its other transitions are not');
like($worker->query_safe('SELECT 1'), qr/"$work" with payload "terminal"/,
	'the work channel announced the job');
sql(q{SET taskq.notify_level = none;
SELECT taskq.submit('x', queue => 'none');
SELECT count(taskq.complete(id)) FROM taskq.claim(ARRAY['none'], 'w', 1, '1 min')});
unlike($jobs_listener->query_safe('SELECT 1') . $worker->query_safe('SELECT 1'),
	qr/Asynchronous notification/, 'notify_level none: nothing on either channel');
$_->quit for ($jobs_listener, $worker);
$node->stop;

# 9. Loaded without shared_preload_libraries, taskq cannot count listeners
# and always publishes: with nobody listening, a submit queues for the lock.
$node = PostgreSQL::Test::Cluster->new('not_preloaded');
$node->init(allows_streaming => 1);
$node->start;
sql('CREATE EXTENSION taskq; CREATE TABLE holder (i int)');
# the superuser's channels: the admins' (every transition) and the workers'
$jobs = sql('SELECT taskq.channel()');
$work = sql('SELECT taskq.work_channel()');
standby_stalls(1);
($holder, $holder_pid) = hold_notify_lock();
ok(waits_on($holder_pid, 'SyncRep'), 'not preloaded: the NOTIFY lock is held');
($loud, $loud_pid) = in_background("SELECT taskq.submit('x', queue => 'not preloaded')");
ok(waits_on($loud_pid, 'object'), 'not preloaded: a submit waits for the NOTIFY lock though nobody listens');
release($holder_pid);
ok(waits_on($loud_pid, 'SyncRep'), 'and gets it once the holder ends');
release($loud_pid);
$_->quit for ($holder, $loud);
standby_stalls(0);
is(sql("SELECT count(*) FROM taskq.jobs WHERE queue = 'not preloaded'"), '1', 'the job is committed');

$node->stop;
done_testing();
