# Notifications tell a role nothing about other roles' jobs.  PostgreSQL has
# no privilege on LISTEN, so alice, an ordinary role, listens on every
# channel name she can know (the old taskq_jobs and taskq_work, and both of
# hers) while bob's jobs are submitted, run by the executors and by an
# external worker, succeed and fail: she hears only her own jobs.  An admin
# hears everyone's; an external worker (taskq_worker) hears every queue that
# got work.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use TaskqNode;

my $node = taskq_node('notify_privacy');
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{CREATE EXTENSION taskq;
CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN;
CREATE ROLE boss LOGIN IN ROLE taskq_admin; CREATE ROLE wkr LOGIN IN ROLE taskq_worker;
DO $$ BEGIN  -- (where submitting needs taskq_user)
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'taskq_user') THEN
        GRANT taskq_user TO alice, bob;
    END IF;
END $$;
CREATE FUNCTION public.payroll(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF payload ? 'fail' THEN
        RAISE EXCEPTION 'payroll failed';
    END IF;
    RETURN '{"paid": true}';
END $$;
SELECT taskq.register_handler('payroll_export_ceo', 'public.payroll(jsonb)')});
ok(executors_up($node, 2), 'the executors are up');

# a session as $role; what it was told so far is kept in $heard{$role}
my (%session, %heard);
sub connect_as
{
	my ($role) = @_;
	$session{$role} = $node->background_psql('postgres', on_error_stop => 1);
	$session{$role}->query_safe("SET ROLE $role");
	$heard{$role} = '';
}

sub as
{
	my ($role, $sql) = @_;
	my $out = $session{$role}->query_safe($sql);
	$heard{$role} .= "$out\n";
	# the result without the notifications psql printed with it
	return join("\n", grep { !/^Asynchronous notification/ } split(/\n/, $out));
}

# wait (bounded) until $role has heard $pattern
sub hears
{
	my ($role, $pattern) = @_;
	for (1 .. 600)
	{
		return 1 if $heard{$role} =~ $pattern;
		as($role, 'SELECT 1');
		select(undef, undef, undef, 0.05) unless $heard{$role} =~ $pattern;
	}
	return 0;
}

connect_as($_) for qw(alice bob boss wkr);

my %channel;
for my $role (qw(alice bob boss wkr))
{
	$channel{$role} = as($role, 'SELECT taskq.channel()');
	$channel{"$role work"} = as($role, 'SELECT taskq.work_channel()');
}
like($channel{alice}, qr/^taskq_jobs_[0-9a-f]{32}$/, 'a job channel is taskq_jobs_ and 32 hex digits');
like($channel{'alice work'}, qr/^taskq_work_[0-9a-f]{32}$/, 'a work channel is taskq_work_ and 32 hex digits');
isnt($channel{alice}, $channel{bob}, 'alice and bob have their own job channels');
isnt($channel{'alice work'}, $channel{'bob work'}, 'and their own work channels');
isnt($channel{alice}, $channel{boss}, 'the admins\' channel is another');
is($channel{'wkr work'}, $channel{'boss work'}, 'workers and admins share the workers\' work channel');
isnt($channel{'wkr work'}, $channel{'alice work'}, 'which is not alice\'s');
is(as('alice', 'SELECT taskq.channel()'), $channel{alice}, 'the same name when asked again');
my $denied = $node->psql('postgres', 'SET ROLE alice; SELECT taskq._channel(\'jobs\', NULL)');
isnt($denied, 0, 'alice cannot ask for another channel by name');
$denied = $node->psql('postgres', 'SET ROLE alice; SELECT * FROM taskq.channel_secret');
isnt($denied, 0, 'nor read the secret');

as('alice', "LISTEN taskq_jobs; LISTEN taskq_work; LISTEN $channel{alice}; LISTEN \"$channel{'alice work'}\"");
as('boss', "LISTEN $channel{boss}");
as('wkr', "LISTEN $channel{'wkr work'}");
as('bob', "LISTEN $channel{bob}");

# bob's jobs: run by the executors (one succeeds, one fails), and for
# external workers (one completed, one failed by the worker)
my $ok_id = as('bob', q{SELECT taskq.submit('payroll_export_ceo', '{}', queue => 'hr-confidential')});
my $fail_id = as('bob', q{SELECT taskq.submit('payroll_export_ceo', '{"fail": 1}', queue => 'hr-confidential', max_attempts => 1)});
as('bob', q{SELECT taskq.submit_many('[{"job_type": "payroll_external", "queue": "hr-confidential-ext"},
                                       {"job_type": "payroll_external", "queue": "hr-confidential-ext"}]')});
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM taskq.jobs WHERE id IN ($ok_id, $fail_id) AND status IN ('succeeded', 'failed')"),
	'the executors ran bob\'s in-database jobs');
ok(hears('wkr', qr/"$channel{'wkr work'}" with payload "hr-confidential-ext"/),
	'the external worker heard the queue of bob\'s external jobs');
my @claimed = split /\n/, as('wkr', q{SELECT id FROM taskq.claim(ARRAY['hr-confidential-ext'], 'wkr', 2) ORDER BY id});
is(scalar(@claimed), 2, 'and claimed both jobs');
as('wkr', "SELECT taskq.complete($claimed[0], '{\"secret\": 1}')");
as('wkr', "SELECT taskq.fail($claimed[1], 'export failed', false)");
is(sql("SELECT string_agg(status::text, ' ' ORDER BY id) FROM taskq.jobs WHERE owner = 'bob'::regrole"),
	'succeeded failed succeeded failed', 'bob\'s jobs ran and ended');

# Then alice's own job, run by an executor: once she heard it end, she has
# heard everything published before it.
my $mine = as('alice', q{SELECT taskq.submit('payroll_export_ceo', '{}', queue => 'alice-q')});
ok(hears('alice', qr/"id": $mine, "status": "succeeded"/), 'alice heard her own job succeed');
like($heard{alice}, qr/"$channel{alice}" with payload "\{"id": $mine, "status": "pending", "queue": "alice-q"/,
	'and its submission, on her channel');
ok(hears('bob', qr/"id": $claimed[1], "status": "failed"/), 'bob heard his jobs on his channel');
ok(hears('boss', qr/"id": $mine, "status": "succeeded"/), 'the admin heard alice\'s job');
like($heard{boss}, qr/"queue": "hr-confidential", "job_type": "payroll_export_ceo"/,
	'and bob\'s');
like($heard{boss}, qr/"id": $fail_id, "status": "failed"/, 'including the failure');

unlike($heard{alice}, qr/hr-|"id": (?:$ok_id|$fail_id|$claimed[0]|$claimed[1]),/,
	'alice heard nothing of bob\'s jobs');
unlike($heard{alice}, qr/Asynchronous notification "taskq_(jobs|work)" /,
	'nothing at all on taskq_jobs or taskq_work');
my @alice_channels = $heard{alice} =~ /Asynchronous notification "([^"]+)"/g;
my %seen = map { $_ => 1 } @alice_channels;
is(join(' ', sort keys %seen), join(' ', sort($channel{alice})),
	'alice heard on her job channel only (her job ran in the database: no work for her workers)');
unlike($heard{wkr}, qr/alice-q/, 'the workers\' channel does not announce a job the executors run');

# an external job of alice's is announced on her work channel
as('alice', q{SELECT taskq.submit('alice_external', queue => 'alice-ext')});
ok(hears('alice', qr/"$channel{'alice work'}" with payload "alice-ext"/),
	'alice\'s work channel announces her external job\'s queue');
ok(hears('wkr', qr/payload "alice-ext"/), 'so does the workers\' channel');
unlike($heard{bob}, qr/alice/, 'bob heard nothing of alice\'s jobs');

# a resumed queue: workers and the owners of its jobs hear it, not others
sql(q{SELECT taskq.pause('hr-resume')});
as('bob', q{SELECT taskq.submit('payroll_external', queue => 'hr-resume')});
as('bob', "LISTEN \"$channel{'bob work'}\"");
as('boss', q{SELECT taskq.resume('hr-resume')});
ok(hears('bob', qr/"$channel{'bob work'}" with payload "hr-resume"/), 'bob hears his queue resumed');
ok(hears('boss', qr/"status": "resumed", "queue": "hr-resume"/), 'the admin hears the resume');
as('alice', q{SELECT taskq.submit('payroll_export_ceo', '{}', queue => 'alice-q2')});
ok(hears('alice', qr/"queue": "alice-q2", "job_type": "payroll_export_ceo", "attempt": 1\}/),
	'alice heard her next job');
unlike($heard{alice}, qr/hr-/, 'and still nothing of bob\'s');

# A database without taskq where a role made its own taskq.channel_secret
# (of another type): a LISTEN there reads no secret, and crashes nothing.
my $started = sql('SELECT pg_postmaster_start_time()');
sql('CREATE ROLE squatter LOGIN');
sql('CREATE DATABASE squat OWNER squatter');
my ($ret, $out, $err) = $node->psql('squat', q{
CREATE SCHEMA taskq;
CREATE TABLE taskq.channel_secret (secret int8);
INSERT INTO taskq.channel_secret VALUES (12345);
LISTEN taskq_jobs_x;
LISTEN taskq_work_x;
SELECT 1;}, extra_params => [ '-U', 'squatter' ]);
is($ret, 0, 'LISTEN beside a planted taskq.channel_secret works') or diag($err);
is(sql('SELECT pg_postmaster_start_time()'), $started, 'and the server did not restart');

$_->quit for values %session;
$node->stop;
done_testing();
