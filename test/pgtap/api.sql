-- pgTAP: taskq's schema and a matrix of bad calls to every public function.
-- Everything runs in one transaction that is rolled back, so no executor
-- ever sees these jobs and nothing is left behind.
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
SET client_min_messages = warning;

BEGIN;
SELECT plan(217);

------------------------------------------------------------------------------
-- Schema
------------------------------------------------------------------------------
SELECT has_schema('taskq');
SELECT has_table('taskq', t, 'table taskq.' || t || ' exists')
FROM unnest(ARRAY['jobs', 'job_dependencies', 'job_logs', 'handlers', 'queues']) t;
SELECT has_view('taskq', v, 'view taskq.' || v || ' exists')
FROM unnest(ARRAY['dead_letter_queue', 'queue_depth']) v;
SELECT has_column('taskq', 'jobs', c, 'taskq.jobs has column ' || c)
FROM unnest(ARRAY['id', 'queue', 'job_type', 'priority', 'status', 'payload', 'result',
                  'last_error', 'attempts', 'max_attempts', 'backoff', 'timeout', 'cpu_units',
                  'memory_mb', 'run_at', 'idempotency_key', 'owner', 'worker',
                  'lease_expires_at', 'created_at', 'started_at', 'finished_at', 'updated_at']) c;
SELECT col_type_is('taskq', 'jobs', 'id', 'bigint', 'job ids are bigint');
SELECT col_type_is('taskq', 'jobs', 'priority', 'taskq.priority', 'jobs.priority is taskq.priority');
SELECT col_type_is('taskq', 'jobs', 'status', 'taskq.job_status', 'jobs.status is taskq.job_status');
SELECT col_type_is('taskq', 'jobs', 'payload', 'jsonb', 'jobs.payload is jsonb');
SELECT col_type_is('taskq', 'jobs', 'owner', 'regrole', 'job owners are role OIDs, not names');
SELECT col_not_null('taskq', 'jobs', c, 'jobs.' || c || ' is NOT NULL')
FROM unnest(ARRAY['queue', 'job_type', 'priority', 'status', 'payload', 'owner', 'run_at']) c;
SELECT has_pk('taskq', 'jobs', 'jobs has a primary key');
SELECT col_is_pk('taskq', 'job_dependencies', ARRAY['job_id', 'depends_on'], 'an edge is (job_id, depends_on)');
SELECT col_is_fk('taskq', 'job_dependencies', 'job_id', 'job_dependencies.job_id references jobs');
SELECT col_is_fk('taskq', 'job_dependencies', 'depends_on', 'job_dependencies.depends_on references jobs');
SELECT col_is_pk('taskq', 'handlers', 'job_type', 'one handler per job type');
SELECT col_is_pk('taskq', 'queues', 'name', 'one settings row per queue');

SELECT has_enum('taskq', 'priority', 'enum taskq.priority exists');
SELECT enum_has_labels('taskq', 'priority', ARRAY['critical', 'high', 'normal', 'low'],
                       'priorities are declared critical, high, normal, low');
SELECT has_enum('taskq', 'job_status', 'enum taskq.job_status exists');
SELECT enum_has_labels('taskq', 'job_status',
                       ARRAY['blocked', 'pending', 'running', 'succeeded', 'failed', 'cancelled'],
                       'job statuses are declared in lifecycle order');
SELECT ok('critical'::taskq.priority < 'high' AND 'high'::taskq.priority < 'normal'
          AND 'normal'::taskq.priority < 'low', 'ORDER BY priority puts critical first');

SELECT has_index('taskq', 'jobs', 'jobs_runnable_idx', 'the claim has its index');
SELECT has_index('taskq', 'jobs', 'jobs_running_idx', 'lease expiry has its index');
SELECT has_index('taskq', 'jobs', 'jobs_idempotency_idx', 'idempotency keys have their index');
SELECT index_is_unique('taskq', 'jobs', 'jobs_idempotency_idx', 'a live idempotency key is unique');
SELECT is((SELECT pg_get_expr(indpred, indrelid) FROM pg_index WHERE indexrelid = 'taskq.jobs_runnable_idx'::regclass),
          '(status = ''pending''::taskq.job_status)', 'the claim index holds pending jobs only');
SELECT has_index('taskq', 'job_dependencies', 'job_dependencies_depends_on_idx', 'dependents of a job are found by index');
SELECT col_is_pk('taskq', 'job_logs', ARRAY['job_id', 'id'], 'a job''s logs are found by the primary key, in order');
SELECT ok((SELECT relrowsecurity FROM pg_class WHERE oid = ('taskq.' || t)::regclass),
          'row-level security is enabled on taskq.' || t)
FROM unnest(ARRAY['jobs', 'job_logs', 'job_dependencies']) t;

SELECT has_function('taskq', 'submit', ARRAY['text', 'jsonb', 'taskq.priority', 'text', 'bigint[]',
                    'timestamp with time zone', 'integer', 'interval', 'integer', 'integer', 'text', 'interval',
                    'text', 'text']);
SELECT has_function('taskq', f, a) FROM (VALUES
    ('submit_many', ARRAY['jsonb']),
    ('add_dependency', ARRAY['bigint', 'bigint']),
    ('cancel', ARRAY['bigint']),
    ('retry', ARRAY['bigint']),
    ('pause', ARRAY['text']),
    ('resume', ARRAY['text']),
    ('configure_queue', ARRAY['text', 'integer', 'interval', 'integer', 'integer', 'text', 'integer']),
    ('register_handler', ARRAY['text', 'regprocedure']),
    ('unregister_handler', ARRAY['text']),
    ('claim', ARRAY['text[]', 'text', 'integer', 'interval', 'integer', 'integer']),
    ('complete', ARRAY['bigint', 'jsonb', 'text']),
    ('complete_many', ARRAY['bigint[]', 'jsonb[]', 'text']),
    ('fail', ARRAY['bigint', 'text', 'boolean', 'text']),
    ('heartbeat', ARRAY['bigint', 'text', 'interval']),
    ('wait', ARRAY['bigint[]', 'interval'])) AS f(f, a);
SELECT function_returns('taskq', 'submit', 'bigint', 'submit returns the job id');
SELECT function_returns('taskq', 'submit_many', 'setof bigint', 'submit_many returns the job ids');
SELECT function_returns('taskq', 'claim', 'setof taskq.jobs', 'claim returns job rows');
SELECT function_returns('taskq', 'wait', 'boolean', 'wait returns whether all finished');
SELECT function_returns('taskq', 'complete_many', 'integer', 'complete_many returns how many it completed');
SELECT ok(has_function_privilege('taskq_user', ('taskq.' || f)::regproc, 'EXECUTE')
          AND NOT has_function_privilege('public', ('taskq.' || f)::regproc, 'EXECUTE'),
          'taskq_user, not PUBLIC, may call taskq.' || f)
FROM unnest(ARRAY['submit', 'submit_many', 'add_dependency', 'cancel', 'retry', 'claim',
                  'complete', 'complete_many', 'fail', 'heartbeat', 'wait']) f;

------------------------------------------------------------------------------
-- Fixtures (rolled back with everything else)
------------------------------------------------------------------------------
CREATE ROLE taskq_tap_user IN ROLE taskq_user;
CREATE FUNCTION pg_temp.tap_handler(payload jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT payload';
CREATE FUNCTION pg_temp.tap_text_handler(payload text) RETURNS jsonb LANGUAGE sql AS 'SELECT NULL::jsonb';
CREATE FUNCTION pg_temp.tap_definer_handler(payload jsonb) RETURNS jsonb
    LANGUAGE sql SECURITY DEFINER AS 'SELECT payload';
CREATE TEMP TABLE tap_jobs (name text PRIMARY KEY, id bigint);
INSERT INTO tap_jobs VALUES
    ('pending', taskq.submit('tap', queue => 'tap_api')),
    ('running', taskq.submit('tap', queue => 'tap_api_run')),
    ('done', taskq.submit('tap', queue => 'tap_api_done'));
SELECT is(count(*), 2::bigint, 'claimed the fixtures to run and to finish')
FROM taskq.claim(ARRAY['tap_api_run', 'tap_api_done'], 'tap worker', 10);
SELECT lives_ok(format('SELECT taskq.complete(%s)', (SELECT id FROM tap_jobs WHERE name = 'done')),
                'complete a running job');
CREATE FUNCTION pg_temp.job(name text) RETURNS bigint LANGUAGE sql AS 'SELECT id FROM tap_jobs WHERE tap_jobs.name = $1';
GRANT SELECT ON tap_jobs TO taskq_tap_user;

------------------------------------------------------------------------------
-- Bad calls: every public function, NULL in each argument, bad values
------------------------------------------------------------------------------
-- submit
SELECT throws_ok($$SELECT taskq.submit(NULL)$$, '22004', NULL, 'submit: NULL job_type');
SELECT throws_ok($$SELECT taskq.submit('tap', NULL)$$, '22004', NULL, 'submit: NULL payload');
SELECT throws_ok($$SELECT taskq.submit('tap', '{}', NULL)$$, '22004', NULL, 'submit: NULL priority');
SELECT throws_ok($$SELECT taskq.submit('tap', '{}', 'normal', NULL)$$, '22004', NULL, 'submit: NULL queue');
SELECT lives_ok($$SELECT taskq.submit('tap', queue => 'tap_api', depends_on => NULL)$$, 'submit: NULL depends_on means none');
SELECT lives_ok($$SELECT taskq.submit('tap', queue => 'tap_api', run_at => NULL)$$, 'submit: NULL run_at means now');
SELECT lives_ok($$SELECT taskq.submit('tap', queue => 'tap_api', max_attempts => NULL)$$, 'submit: NULL max_attempts means the default');
SELECT lives_ok($$SELECT taskq.submit('tap', queue => 'tap_api', timeout => NULL)$$, 'submit: NULL timeout means none');
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_api', cpu_units => NULL)$$, '22023', NULL, 'submit: NULL cpu_units');
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_api', memory_mb => NULL)$$, '22023', NULL, 'submit: NULL memory_mb');
SELECT lives_ok($$SELECT taskq.submit('tap', queue => 'tap_api', idempotency_key => NULL)$$, 'submit: NULL idempotency_key means none');
SELECT lives_ok($$SELECT taskq.submit('tap', queue => 'tap_api', backoff => NULL)$$, 'submit: NULL backoff means the default');
SELECT throws_ok($$SELECT taskq.submit('tap', priority => 'urgent')$$, '22P02', NULL, 'submit: unknown priority');
SELECT throws_ok($$SELECT taskq.submit('', queue => 'tap_api')$$, '22023', 'job_type must not be empty', 'submit: empty job_type');
SELECT throws_ok($$SELECT taskq.submit('   ', queue => 'tap_api')$$, '22023', NULL, 'submit: blank job_type');
SELECT throws_ok($$SELECT taskq.submit(repeat('j', 201), queue => 'tap_api')$$, '22023', NULL, 'submit: job_type too long');
SELECT throws_ok($$SELECT taskq.submit('tap', queue => '')$$, '22023', 'queue must not be empty', 'submit: empty queue');
SELECT throws_ok($$SELECT taskq.submit('tap', '[]', queue => 'tap_api')$$, '22023', NULL, 'submit: payload not an object');
SELECT throws_ok($$SELECT taskq.submit('tap', '"s"', queue => 'tap_api')$$, '22023', NULL, 'submit: payload a JSON string');
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_api', cpu_units => 0)$$, '22023', NULL, 'submit: zero cpu_units');
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_api', cpu_units => 1000001)$$, '22023', NULL, 'submit: cpu_units above taskq.max_cpu_units');
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_api', memory_mb => -1)$$, '22023', NULL, 'submit: negative memory_mb');
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_api', memory_mb => 2147483647)$$, '22023', NULL, 'submit: memory_mb above taskq.max_memory_mb');
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_api', max_attempts => 0)$$, '22023', NULL, 'submit: zero max_attempts');
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_api', timeout => '-1 second')$$, '22023', NULL, 'submit: negative timeout');
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_api', timeout => '0')$$, '22023', NULL, 'submit: zero timeout');
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_api', backoff => '-1 second')$$, '22023', NULL, 'submit: negative backoff');
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_api', run_at => '-infinity')$$, '22023', NULL, 'submit: infinite run_at');
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_api', idempotency_key => '')$$, '22023', NULL, 'submit: empty idempotency_key');
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_api', depends_on => '{-5}')$$, '23503', 'job -5 does not exist', 'submit: depends_on a missing job');
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_api', depends_on => ARRAY[NULL]::bigint[])$$, '22004', NULL, 'submit: NULL in depends_on');

-- submit_many
SELECT throws_ok($$SELECT taskq.submit_many(NULL)$$, '22004', NULL, 'submit_many: NULL');
SELECT throws_ok($$SELECT taskq.submit_many('{"job_type": "tap"}')$$, '22023', NULL, 'submit_many: not an array');
SELECT throws_ok($$SELECT taskq.submit_many('null')$$, '22023', NULL, 'submit_many: JSON null');
SELECT throws_ok($$SELECT taskq.submit_many('[["tap"]]')$$, '22023', NULL, 'submit_many: element not an object');
SELECT throws_ok($$SELECT taskq.submit_many('[{"job_type": "tap", "queue": "tap_api", "after": [0]}]')$$, '22023', NULL, 'submit_many: "after" naming itself');
SELECT throws_ok($$SELECT taskq.submit_many('[{"job_type": "tap", "queue": "tap_api", "after": [1]}, {"job_type": "tap", "queue": "tap_api"}]')$$, '22023', NULL, 'submit_many: forward "after"');
SELECT throws_ok($$SELECT taskq.submit_many('[{"job_type": "tap", "queue": "tap_api", "colour": "red"}]')$$, '22023', NULL, 'submit_many: unknown key');
SELECT throws_ok($$SELECT taskq.submit_many('[{"job_type": null, "queue": "tap_api"}]')$$, '22004', NULL, 'submit_many: null job_type');
SELECT is((SELECT count(*) FROM taskq.submit_many('[]')), 0::bigint, 'submit_many: an empty batch submits nothing');

-- add_dependency
SELECT throws_ok($$SELECT taskq.add_dependency(NULL, pg_temp.job('pending'))$$, '22004', NULL, 'add_dependency: NULL job_id');
SELECT throws_ok($$SELECT taskq.add_dependency(pg_temp.job('pending'), NULL)$$, '22004', NULL, 'add_dependency: NULL depends_on');
SELECT throws_ok($$SELECT taskq.add_dependency(pg_temp.job('pending'), pg_temp.job('pending'))$$, '22023', NULL, 'add_dependency: on itself');
SELECT throws_ok($$SELECT taskq.add_dependency(pg_temp.job('pending'), -7)$$, '23503', 'job -7 does not exist', 'add_dependency: on a missing job');
SELECT throws_ok($$SELECT taskq.add_dependency(pg_temp.job('done'), pg_temp.job('pending'))$$, '55000', NULL, 'add_dependency: to a finished job');
SELECT lives_ok($$SELECT taskq.add_dependency(pg_temp.job('pending'), pg_temp.job('done'))$$, 'add_dependency: on a succeeded job');
SELECT throws_ok($$SELECT taskq.add_dependency(pg_temp.job('running'), pg_temp.job('pending'))$$, '55000', NULL, 'add_dependency: to a running job');

-- cancel, retry
SELECT throws_ok($$SELECT taskq.cancel(NULL)$$, '22004', NULL, 'cancel: NULL');
SELECT throws_ok($$SELECT taskq.cancel(-1)$$, 'P0002', NULL, 'cancel: a missing job');
SELECT throws_ok($$SELECT taskq.cancel(pg_temp.job('done'))$$, '55000', NULL, 'cancel: a succeeded job');
SELECT throws_ok($$SELECT taskq.retry(NULL)$$, '22004', NULL, 'retry: NULL');
SELECT throws_ok($$SELECT taskq.retry(-1)$$, 'P0002', NULL, 'retry: a missing job');
SELECT throws_ok($$SELECT taskq.retry(pg_temp.job('pending'))$$, '55000', NULL, 'retry: a pending job');
SELECT throws_ok($$SELECT taskq.retry(pg_temp.job('done'))$$, '55000', NULL, 'retry: a succeeded job');

-- pause, resume, configure_queue
SELECT throws_ok($$SELECT taskq.pause(NULL)$$, '22004', NULL, 'pause: NULL');
SELECT throws_ok($$SELECT taskq.pause('')$$, '22023', NULL, 'pause: empty name');
SELECT throws_ok($$SELECT taskq.pause(repeat('q', 201))$$, '22023', NULL, 'pause: name too long');
SELECT throws_ok($$SELECT taskq.resume(NULL)$$, '22004', NULL, 'resume: NULL');
SELECT throws_ok($$SELECT taskq.resume(' ')$$, '22023', NULL, 'resume: blank name');
SELECT throws_ok($$SELECT taskq.configure_queue(NULL)$$, '22004', NULL, 'configure_queue: NULL queue');
SELECT throws_ok($$SELECT taskq.configure_queue('tap_api', 0)$$, '22023', NULL, 'configure_queue: zero concurrency');
SELECT throws_ok($$SELECT taskq.configure_queue('tap_api', NULL, '0')$$, '22023', NULL, 'configure_queue: zero default_timeout');
SELECT throws_ok($$SELECT taskq.configure_queue('tap_api', NULL, NULL, 0)$$, '22023', NULL, 'configure_queue: zero default_max_attempts');
SELECT lives_ok($$SELECT taskq.configure_queue('tap_api', NULL, NULL, NULL)$$, 'configure_queue: NULL settings mean defaults');

-- register_handler, unregister_handler
SELECT throws_ok($$SELECT taskq.register_handler(NULL, 'pg_temp.tap_handler(jsonb)')$$, '22004', NULL, 'register_handler: NULL job_type');
SELECT throws_ok($$SELECT taskq.register_handler('tap_h', NULL)$$, '22004', NULL, 'register_handler: NULL handler');
SELECT throws_ok($$SELECT taskq.register_handler('', 'pg_temp.tap_handler(jsonb)')$$, '22023', NULL, 'register_handler: empty job_type');
SELECT throws_ok($$SELECT taskq.register_handler('tap_h', 'pg_temp.tap_text_handler(text)')$$, '42P13', NULL, 'register_handler: wrong argument type');
SELECT throws_ok($$SELECT taskq.register_handler('tap_h', 'pg_temp.tap_definer_handler(jsonb)')$$, '42P13', NULL, 'register_handler: SECURITY DEFINER');
SELECT throws_ok($$SELECT taskq.register_handler('tap_h', 'pg_catalog.jsonb_typeof(jsonb)')$$, '42P13', NULL, 'register_handler: returns text');
SELECT throws_ok($$SELECT taskq.register_handler('tap_h', 0)$$, '42883', NULL, 'register_handler: a function that does not exist');
SELECT throws_ok($$SELECT taskq.unregister_handler(NULL)$$, '22004', NULL, 'unregister_handler: NULL');
SELECT throws_ok($$SELECT taskq.unregister_handler('tap_never_registered')$$, '42704', NULL, 'unregister_handler: nothing registered');

-- claim
SELECT throws_ok($$SELECT taskq.claim(ARRAY['tap_api'], NULL)$$, '22004', NULL, 'claim: NULL worker');
SELECT throws_ok($$SELECT taskq.claim(ARRAY['tap_api'], '')$$, '22023', NULL, 'claim: empty worker');
SELECT throws_ok($$SELECT taskq.claim(ARRAY['tap_api'], 'executor/0')$$, '22023', NULL, 'claim: reserved worker name');
SELECT throws_ok($$SELECT taskq.claim(ARRAY['tap_api'], 'w', NULL)$$, '22023', NULL, 'claim: NULL max_jobs');
SELECT throws_ok($$SELECT taskq.claim(ARRAY['tap_api'], 'w', 0)$$, '22023', NULL, 'claim: zero max_jobs');
SELECT throws_ok($$SELECT taskq.claim(ARRAY['tap_api'], 'w', 1, NULL)$$, '22023', NULL, 'claim: NULL lease');
SELECT throws_ok($$SELECT taskq.claim(ARRAY['tap_api'], 'w', 1, '-1 minute')$$, '22023', NULL, 'claim: negative lease');
SELECT throws_ok($$SELECT taskq.claim(ARRAY['tap_api'], 'w', 1, '1 minute', 0)$$, '22023', NULL, 'claim: zero cpu_units');
SELECT throws_ok($$SELECT taskq.claim(ARRAY['tap_api'], 'w', 1, '1 minute', 1, -1)$$, '22023', NULL, 'claim: negative memory_mb');
SELECT is((SELECT count(*) FROM taskq.claim(ARRAY['tap_api_nothing_here'], 'w')), 0::bigint, 'claim: an empty queue gives no rows');
SELECT is((SELECT count(*) FROM taskq.claim('{}', 'w')), 0::bigint, 'claim: no queues gives no rows');

-- complete, fail, heartbeat
SELECT throws_ok($$SELECT taskq.complete(NULL)$$, '22004', NULL, 'complete: NULL job_id');
SELECT throws_ok($$SELECT taskq.complete(-1)$$, 'P0002', NULL, 'complete: a missing job');
SELECT throws_ok($$SELECT taskq.complete(pg_temp.job('pending'))$$, '55000', NULL, 'complete: a job that is not running');
SELECT throws_ok($$SELECT taskq.complete(pg_temp.job('running'), NULL, 'someone else')$$, '55000', NULL, 'complete: another worker''s job');
SELECT throws_ok($$SELECT taskq.fail(NULL, 'e')$$, '22004', NULL, 'fail: NULL job_id');
SELECT throws_ok($$SELECT taskq.fail(-1, 'e')$$, 'P0002', NULL, 'fail: a missing job');
SELECT throws_ok($$SELECT taskq.fail(pg_temp.job('done'), 'e')$$, '55000', NULL, 'fail: a finished job');
SELECT throws_ok($$SELECT taskq.heartbeat(NULL)$$, '22004', NULL, 'heartbeat: NULL job_id');
SELECT throws_ok($$SELECT taskq.heartbeat(pg_temp.job('pending'))$$, '55000', NULL, 'heartbeat: a job that is not running');
SELECT throws_ok($$SELECT taskq.heartbeat(pg_temp.job('running'), 'tap worker', '0')$$, '22023', NULL, 'heartbeat: zero extension');
SELECT ok(taskq.heartbeat(pg_temp.job('running'), NULL, NULL) > now(), 'heartbeat: NULL worker and extend mean any and the same lease');
SELECT lives_ok($$SELECT taskq.fail(pg_temp.job('running'), NULL, NULL, NULL)$$, 'fail: NULL error, retryable and worker are allowed');
SELECT is((SELECT last_error FROM taskq.jobs WHERE id = pg_temp.job('running')), 'failed without an error message',
          'fail: a NULL error is recorded as such');

-- wait
SELECT throws_ok($$SELECT taskq.wait(NULL)$$, '22004', NULL, 'wait: NULL job_ids');
SELECT is(taskq.wait('{}', '0'), true, 'wait: no jobs are all finished');
SELECT is(taskq.wait(ARRAY[pg_temp.job('done')], NULL), true, 'wait: a finished job, NULL timeout');
SELECT is(taskq.wait(ARRAY[pg_temp.job('pending'), pg_temp.job('done')], '0'), false, 'wait: a pending job times out');

-- permissions: a plain role is refused admin functions
SET ROLE taskq_tap_user;
SELECT throws_ok($$SELECT taskq.register_handler('tap_h', 'pg_temp.tap_handler(jsonb)')$$, '42501', NULL, 'register_handler: plain roles are refused');
SELECT throws_ok($$SELECT taskq.pause('tap_api')$$, '42501', NULL, 'pause: plain roles are refused');
SELECT throws_ok($$SELECT taskq.resume('tap_api')$$, '42501', NULL, 'resume: plain roles are refused');
SELECT throws_ok($$SELECT taskq.configure_queue('tap_api', 1)$$, '42501', NULL, 'configure_queue: plain roles are refused');
SELECT throws_ok($$SELECT taskq.cancel(pg_temp.job('pending'))$$, 'P0002', NULL, 'cancel: another role''s job does not exist');
SELECT throws_ok($$INSERT INTO taskq.queues (name) VALUES ('tap_api')$$, '42501', NULL, 'tables are not writable directly');
RESET ROLE;

------------------------------------------------------------------------------
-- Names with quotes, semicolons and unicode are data, never SQL
------------------------------------------------------------------------------
SELECT lives_ok($$INSERT INTO tap_jobs SELECT 'quoted', taskq.submit(
                    'x''); DROP TABLE taskq.jobs; --', queue => 'tap "q"; SELECT 1',
                    idempotency_key => $k$'; --$k$)$$, 'submit: quotes and semicolons in names');
SELECT is((SELECT job_type || ' | ' || queue || ' | ' || idempotency_key FROM taskq.jobs WHERE id = pg_temp.job('quoted')),
          $v$x'); DROP TABLE taskq.jobs; -- | tap "q"; SELECT 1 | '; --$v$, 'such names are stored verbatim');
SELECT lives_ok($$INSERT INTO tap_jobs SELECT 'unicode', taskq.submit('задача 任务 ✓', '{"ключ": "值 🚀"}', queue => 'очередь 队列 🚀')$$,
                'submit: unicode names and payload');
SELECT is((SELECT job_type || ' | ' || queue || ' | ' || (payload->>'ключ') FROM taskq.jobs WHERE id = pg_temp.job('unicode')),
          'задача 任务 ✓ | очередь 队列 🚀 | 值 🚀', 'unicode is stored verbatim');
SELECT lives_ok($$SELECT taskq.pause('tap "q"; SELECT 1')$$, 'pause: a queue name with quotes');
SELECT is((SELECT count(*) FROM taskq.claim(ARRAY['tap "q"; SELECT 1'], 'w')), 0::bigint, 'claim: the paused odd queue gives nothing');
SELECT lives_ok($$SELECT taskq.resume('tap "q"; SELECT 1')$$, 'resume: a queue name with quotes');
SELECT is((SELECT count(*) FROM taskq.claim(ARRAY['tap "q"; SELECT 1', 'очередь 队列 🚀'], 'w ''"; --', 10)), 2::bigint,
          'claim: odd queue and worker names');
SELECT lives_ok($$SELECT taskq.configure_queue('очередь 队列 🚀', concurrency => 1)$$, 'configure_queue: a unicode queue name');
SELECT lives_ok($$SELECT taskq.register_handler('x''); DROP TABLE taskq.jobs; --', 'pg_temp.tap_handler(jsonb)')$$,
                'register_handler: a job type with quotes');
SELECT lives_ok($$SELECT taskq.unregister_handler('x''); DROP TABLE taskq.jobs; --')$$, 'unregister_handler: a job type with quotes');
SELECT has_table('taskq', 'jobs', 'taskq.jobs survived');

SELECT * FROM finish();
ROLLBACK;
