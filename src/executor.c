/*
 * executor.c: an executor background worker.  It claims batches of runnable
 * jobs whose type has an in-database handler and runs each handler as the
 * job's owner, in its own subtransaction of ONE transaction per batch that
 * also claims the batch and records every outcome: a handler's work commits
 * exactly when its job is recorded as succeeded, and a batch costs one commit.
 *
 * The claim is not committed before the handlers run, so a crash gives the
 * whole batch back uncharged.  The job whose handler was running is charged:
 * its id is written to a file first (crash_marks.c), which the launcher reads
 * after a crash; a handler that kills its backend every time ends in the
 * dead-letter queue instead of a crash loop.  Slow jobs (the batch size has
 * adapted to one job) commit their claim first, so that their row shows them
 * running; a crash then charges them through the launcher's _recover.
 *
 * Cancel: taskq.cancel() flags the job in the batch we publish in shared
 * memory (TaskqHeldBatch) and returns without waiting for our row locks; a
 * job not started yet is skipped, the running one is interrupted by
 * executor_tick, one whose handler traps the interrupt ends the executor
 * (executor_exit records its batch), and a flagged job is recorded cancelled.
 */
#include "postgres.h"

#include <signal.h>

#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/prepare.h"
#include "commands/sequence.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/bufmgr.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/pmsignal.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/regproc.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/portal.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timeout.h"

#include "taskq.h"

/* what became of one job of a batch */
typedef enum JobOutcome
{
	OUTCOME_NONE = 0,			/* not run: no longer held by us */
	OUTCOME_SUCCEEDED,
	OUTCOME_FAILED,				/* counts as an attempt */
	OUTCOME_CANCELLED,			/* taskq.cancel() asked for it */
	OUTCOME_GIVEN_BACK			/* not its fault (shutdown): attempt returned */
} JobOutcome;

typedef struct ClaimedJob
{
	int64		id;
	int32		attempt;
	int32		max_attempts;
	Oid			owner;
	Oid			handler;		/* InvalidOid if unregistered meanwhile */
	Datum		payload;
	int64		timeout_ms;		/* 0: none */
	int32		cpu_units;
	int32		memory_mb;
	bool		held;
	bool		deferred;		/* claimed without a write: its row reads pending */
	int			area;			/* where it is published: TaskqState->held[.][area] */
	int			index;			/* and at which index */
	TimestampTz started;		/* when its handler started */
	JobOutcome	outcome;
	Datum		result;			/* jsonb, when result_isnull is false */
	bool		result_isnull;
	char	   *error;
	bool		retryable;
} ClaimedJob;

int64		taskq_current_job = 0;
int32		taskq_current_job_attempt = 0;
/* set while run_batch claims: that claim only locks its jobs (_claim) */
bool		taskq_claim_deferred = false;

static volatile sig_atomic_t got_sigterm = false;
static volatile TimestampTz sigterm_at = 0;

/* read by the tick handler, which runs in signal context */
static volatile TimestampTz job_deadline = 0;
static volatile sig_atomic_t job_timed_out = false;
static volatile sig_atomic_t job_stopped_by_shutdown = false;
static volatile sig_atomic_t job_terminated_itself = false;
static TimeoutId tick_timeout;

/* the running job's cancel flag in shared memory, polled by the tick */
static volatile bool *job_cancel_flag = NULL;
/* when the tick first interrupted the running job; the job it ended us for */
static volatile TimestampTz job_stop_sent_at = 0;
static volatile int64 escalated_job = 0;
static volatile sig_atomic_t escalated_for_timeout = false;

/* set before raising an error that retrying cannot fix */
static bool job_error_permanent = false;

static TaskqWorkerSlot *MySlot = NULL;
static int	my_slot_index;
static char worker_name[64];
/*
 * Settings of the executor's own SQL; handlers get the session's values back.
 * search_path: objects planted in public must not capture our SQL.  The plan
 * settings: see the head of taskq--*.sql.
 */
static const char *const executor_settings[][2] = {
	{"search_path", "pg_catalog, pg_temp"},
	{"enable_seqscan", "off"},
	{"plan_cache_mode", "force_generic_plan"},
};
static char *handler_settings[lengthof(executor_settings)];
/* the batch being run */
static MemoryContext batch_cxt = NULL;
static List *running_batch = NIL;	/* inside run_batch: what executor_exit records */
static bool running_claim_committed = false;	/* its claim committed first */
static double avg_job_ms = 0;
static int	consecutive_errors = 0;
static int	batch_limit = 8;
/* most jobs a batch may claim for its handlers' writes to fit the subxid cache */
static int	subxid_batch_cap = PGPROC_MAX_CACHED_SUBXIDS;
static int	isolate_batches = 0;	/* run this many next batches one job each */
static char batch_error[512];	/* why the last batch transaction failed */

static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr next_run_plan = NULL;
static SPIPlanPtr lock_plan = NULL;
static SPIPlanPtr lock_skip_plan = NULL;
static SPIPlanPtr complete_held_plan = NULL;
static SPIPlanPtr take_held_plan = NULL;
static SPIPlanPtr complete_plan = NULL;
static SPIPlanPtr fail_plan = NULL;
static SPIPlanPtr cancel_plan = NULL;
static SPIPlanPtr cancel_unlocked_plan = NULL;
static SPIPlanPtr charge_plan = NULL;
static SPIPlanPtr constraints_plan = NULL;
/* the job's deferred triggers are firing (call_handler): none may defer again */
static bool draining_deferred_triggers = false;

/*
 * SIGTERM: stop after the shutdown grace.  Sent by this very process (a
 * handler calling pg_terminate_backend(pg_backend_pid())), it also stops the
 * job at once and fails its attempt: giving it back would loop forever.
 */
#ifdef SA_SIGINFO
static void
executor_sigterm(int signo, siginfo_t *info, void *context)
#else
static void
executor_sigterm(SIGNAL_ARGS)
#endif
{
	int			save_errno = errno;

#ifdef SA_SIGINFO
	if (info != NULL && info->si_pid == MyProcPid && taskq_current_job != 0)
	{
		job_terminated_itself = true;
		QueryCancelPending = true;
		InterruptPending = true;
	}
#endif
	if (!got_sigterm)
		sigterm_at = GetCurrentTimestamp();
	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * Runs every 50 ms while a batch executes (signal context): stops the running
 * handler when taskq.cancel() flagged its job, at its timeout, or when the
 * shutdown grace period is over.  A handler can trap the cancel (EXCEPTION
 * WHEN query_canceled) but not a FATAL: TASKQ_CANCEL_ESCALATE_MS after the
 * first cancel, the executor ends itself as SIGTERM ends a backend, and
 * executor_exit records the batch.
 */
static void
executor_tick(void)
{
	TimestampTz now;
	bool		stop = false;

	if (taskq_current_job == 0)
		return;
	now = GetCurrentTimestamp();
	if (job_cancel_flag != NULL && *job_cancel_flag)
		stop = true;
	if (job_deadline != 0 && now >= job_deadline)
	{
		job_timed_out = true;
		stop = true;
	}
	if (got_sigterm &&
		(TaskqState->stop_now ||
		 now >= sigterm_at + (TimestampTz) taskq_shutdown_grace_ms * 1000))
	{
		job_stopped_by_shutdown = true;
		stop = true;
	}
	if (!stop)
		return;
	if (job_stop_sent_at == 0)
		job_stop_sent_at = now;
	else if (now >= job_stop_sent_at + (TimestampTz) TASKQ_CANCEL_ESCALATE_MS * 1000)
	{
		escalated_job = taskq_current_job;
		escalated_for_timeout = job_timed_out;
		ProcDiePending = true;
	}
	QueryCancelPending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

static void
prepare_plans(void)
{
	Oid			claim_args[4] = {TEXTOID, INT4OID, INT4OID, INT4OID};
	Oid			lock_args[2] = {INT8ARRAYOID, TEXTOID};
	Oid			complete_args[3] = {INT8ARRAYOID, TEXTOID, JSONBARRAYOID};
	Oid			fail_args[6] = {INT8ARRAYOID, TEXTOID, INT4ARRAYOID, TEXTARRAYOID,
	BOOLARRAYOID, BOOLOID};
	Oid			cancel_args[1] = {INT8OID};
	Oid			charge_args[5] = {INT8OID, INT4OID, TIMESTAMPTZOID, TEXTOID, TEXTOID};
	Oid			held_args[5] = {INT8ARRAYOID, TEXTOID, JSONBARRAYOID, INT4ARRAYOID,
	TIMESTAMPTZARRAYOID};
	Oid			take_args[4] = {INT8ARRAYOID, TEXTOID, INT4ARRAYOID, TIMESTAMPTZARRAYOID};

	if (claim_plan != NULL)
		return;
	/* a job claimed without a write reads pending: its attempt is one more */
	claim_plan = taskq_prepare_kept(
		"SELECT j.id, j.attempts + (j.status = 'pending')::int, j.owner::oid,"
		"       h.handler::oid, j.payload,"
		"       coalesce((extract(epoch FROM j.timeout) * 1000)::int8, 0),"
		"       j.cpu_units, j.memory_mb, j.max_attempts, j.status = 'pending'"
		"  FROM taskq._claim(true, NULL, $1, $2, NULL, $3, $4, NULL) j"
		"  LEFT JOIN taskq.handlers h ON h.job_type = j.job_type"
		" ORDER BY j.effective_priority, j.run_at, j.id",
		4, claim_args, 0);
	next_run_plan = taskq_prepare_kept("SELECT taskq._next_run_at()", 0, NULL, 0);
	lock_plan = taskq_prepare_kept(
		"SELECT j.id FROM taskq.jobs j"	/* status::text: see jobs_running_idx */
		" WHERE j.id = ANY ($1) AND j.status::text = 'running' AND j.worker = $2"
		" ORDER BY j.id FOR NO KEY UPDATE OF j",
		2, lock_args, 0);
	/* at exit: a job locked by a canceller is left to it (or to the launcher) */
	lock_skip_plan = taskq_prepare_kept(
		"SELECT j.id FROM taskq.jobs j"
		" WHERE j.id = ANY ($1) AND j.status::text = 'running' AND j.worker = $2"
		" ORDER BY j.id FOR NO KEY UPDATE OF j SKIP LOCKED",
		2, lock_args, 0);
	complete_plan = taskq_prepare_kept("SELECT taskq._complete_batch($1, $2, $3)",
									   3, complete_args, 0);
	complete_held_plan = taskq_prepare_kept("SELECT taskq._complete_held($1, $2, $3, $4, $5)",
											5, held_args, 0);
	take_held_plan = taskq_prepare_kept("SELECT taskq._take_held($1, $2, $3, $4)",
										4, take_args, 0);
	fail_plan = taskq_prepare_kept("SELECT taskq._fail($1, $2, $3, $4, $5, $6)",
								   6, fail_args, 0);
	cancel_plan = taskq_prepare_kept(
		"SELECT taskq._cancel_job($1, 'cancelled while running')", 1, cancel_args, 0);
	/* after our batch rolled back: the job is no longer locked by us */
	cancel_unlocked_plan = taskq_prepare_kept(
		"WITH l AS (SELECT j.id FROM taskq.jobs j"
		"            WHERE j.id = $1 AND j.status IN ('pending', 'running')"
		"            FOR NO KEY UPDATE OF j SKIP LOCKED)"
		"SELECT taskq._cancel_job(l.id, 'cancelled while running') FROM l",
		1, cancel_args, 0);
	charge_plan = taskq_prepare_kept("SELECT taskq._charge_crashed($1, $2, $3, $4, $5)",
									 5, charge_args, 0);
	constraints_plan = taskq_prepare_kept("SET CONSTRAINTS ALL IMMEDIATE", 0, NULL, 0);
}

/* Log and swallow the error being handled; abort the transaction. */
static void
recover_from_error(const char *what)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(TopMemoryContext);
	edata = CopyErrorData();
	FlushErrorState();
	AbortCurrentTransaction();
	ereport(LOG,
			(errmsg("taskq executor: %s failed: %s", what, edata->message)));
	snprintf(batch_error, sizeof(batch_error), "the executor's batch transaction failed: %s",
			 edata->message);
	FreeErrorData(edata);
	taskq_current_job = 0;
	job_deadline = 0;
	job_cancel_flag = NULL;
}

/*
 * Our plans are made once per session (generic plans), for taskq.jobs as it
 * was then.  One made while the table was nearly empty may read all of it
 * once it is big (a hash join over its whole primary key took 0.9 ms per
 * claim at 5,000 jobs): when the table has doubled since, plan again.
 * (ANALYZE also invalidates them, but autovacuum comes at its own pace.)
 */
static void
replan_if_jobs_grew(void)
{
	static BlockNumber planned_blocks = 0;
	Oid			relid = get_relname_relid("jobs", get_namespace_oid("taskq", true));
	Relation	rel;
	BlockNumber blocks;

	if (!OidIsValid(relid))
		return;
	rel = table_open(relid, AccessShareLock);
	blocks = RelationGetNumberOfBlocks(rel);
	table_close(rel, NoLock);
	if (blocks < planned_blocks)
		planned_blocks = blocks;	/* truncated: its plans were made again */
	else if (blocks >= 2 * planned_blocks + 16)
	{
		ResetPlanCache();
		planned_blocks = blocks;
	}
}

/*
 * Make a claimed batch's ids visible to taskq.cancel() in held area "area"
 * (empty until now), before the claim commits: whoever sees a job running
 * under our name finds it there.
 */
static void
publish_batch(List *jobs, int area)
{
	TaskqHeldBatch *held = &TaskqState->held[my_slot_index][area];
	ListCell   *lc;
	int			n = 0;

	if (list_length(jobs) > TASKQ_MAX_BATCH)
		elog(ERROR, "taskq: a batch of %d jobs is over %d", list_length(jobs), TASKQ_MAX_BATCH);
	Assert(held->n == 0);
	/* no reader looks past n, which is 0: fill first, then publish */
	foreach(lc, jobs)
	{
		ClaimedJob *job = lfirst(lc);

		job->area = area;
		job->index = n;
		held->ids[n] = job->id;
		held->cancel[n] = false;
		held->done[n] = 0;
		n++;
	}
	SpinLockAcquire(&TaskqState->mutex);
	held->n = n;
	SpinLockRelease(&TaskqState->mutex);
}

static void
unpublish_batch(int area)
{
	SpinLockAcquire(&TaskqState->mutex);
	TaskqState->held[my_slot_index][area].n = 0;
	SpinLockRelease(&TaskqState->mutex);
}

/*
 * The job's handler succeeded: too late for a cancel from now on, unless one
 * came first (then false: the job is to be cancelled, its work rolled back).
 */
static bool
mark_succeeded(ClaimedJob *job)
{
	TaskqHeldBatch *held = &TaskqState->held[my_slot_index][job->area];
	bool		ok;

	SpinLockAcquire(&TaskqState->mutex);
	ok = !held->cancel[job->index];
	if (ok)
		held->done[job->index] = TASKQ_HELD_SUCCEEDED;
	SpinLockRelease(&TaskqState->mutex);
	return ok;
}

/*
 * Every outcome of the batch is decided: a flagged job that did not succeed
 * is cancelled, and later cancels wait for our commit, which comes at once.
 */
static void
decide_outcomes(List *jobs)
{
	ListCell   *lc;

	SpinLockAcquire(&TaskqState->mutex);
	foreach(lc, jobs)
	{
		ClaimedJob *job = lfirst(lc);
		TaskqHeldBatch *held = &TaskqState->held[my_slot_index][job->area];

		if (job->index >= held->n || held->ids[job->index] != job->id)
			continue;
		if (job->held && job->outcome != OUTCOME_SUCCEEDED && held->cancel[job->index])
			job->outcome = OUTCOME_CANCELLED;
		held->done[job->index] = TASKQ_HELD_RECORDING;
	}
	SpinLockRelease(&TaskqState->mutex);
}

/* Has taskq.cancel() flagged this job? */
static bool
cancel_requested(ClaimedJob *job)
{
	TaskqHeldBatch *held = &TaskqState->held[my_slot_index][job->area];
	bool		flagged;

	SpinLockAcquire(&TaskqState->mutex);
	flagged = job->index < held->n && held->ids[job->index] == job->id &&
		held->cancel[job->index];
	SpinLockRelease(&TaskqState->mutex);
	return flagged;
}

/*
 * Claim up to batch_limit jobs, each fitting cpu/memory, inside the current
 * transaction (SPI connected), into cxt, published in held area "area".
 * When nothing was claimed, sets *sleep_ms to how long an idle executor may
 * sleep.
 */
static List *
claim_jobs(int cpu, int memory, MemoryContext cxt, int area, long *sleep_ms)
{
	List	   *jobs = NIL;
	Datum		args[4];
	int			rc;

	*sleep_ms = taskq_poll_interval_ms;
	prepare_plans();
	replan_if_jobs_grew();
	args[0] = CStringGetTextDatum(worker_name);
	args[1] = Int32GetDatum(batch_limit);
	args[2] = Int32GetDatum(cpu);
	args[3] = Int32GetDatum(memory);
	rc = SPI_execute_plan(claim_plan, args, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "taskq: claim failed: %s", SPI_result_code_string(rc));

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext old = MemoryContextSwitchTo(cxt);
		ClaimedJob *job = palloc0(sizeof(ClaimedJob));

		job->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		job->attempt = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		job->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
		job->handler = DatumGetObjectId(SPI_getbinval(tup, desc, 4, &isnull));
		if (isnull)
			job->handler = InvalidOid;
		job->payload = datumCopy(SPI_getbinval(tup, desc, 5, &isnull), false, -1);
		job->timeout_ms = DatumGetInt64(SPI_getbinval(tup, desc, 6, &isnull));
		job->cpu_units = DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull));
		job->memory_mb = DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull));
		job->max_attempts = DatumGetInt32(SPI_getbinval(tup, desc, 9, &isnull));
		job->deferred = DatumGetBool(SPI_getbinval(tup, desc, 10, &isnull));
		jobs = lappend(jobs, job);
		MemoryContextSwitchTo(old);
	}
	publish_batch(jobs, area);

	if (jobs == NIL)
	{
		rc = SPI_execute_plan(next_run_plan, NULL, NULL, true, 1);
		if (rc == SPI_OK_SELECT && SPI_processed == 1)
		{
			bool		isnull;
			Datum		next = SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
			{
				long		ms = (DatumGetTimestampTz(next) - GetCurrentTimestamp()) / 1000;

				/* a job due now that we could not claim: wait for a wake-up */
				if (ms > 0)
					*sleep_ms = Min(*sleep_ms, ms + 1);
			}
		}
	}
	return jobs;
}

/* Largest cpu/memory need of a batch: its jobs run one at a time. */
static void
batch_needs(List *jobs, int *cpu, int *memory)
{
	ListCell   *lc;

	*cpu = *memory = 0;
	foreach(lc, jobs)
	{
		ClaimedJob *job = lfirst(lc);

		*cpu = Max(*cpu, job->cpu_units);
		*memory = Max(*memory, job->memory_mb);
	}
}

/*
 * Reserve the free capacity, claim a batch into cxt, and keep only what the
 * batch needs.  Inside a transaction (the batch's own, or claim_batch's).
 */
static List *
reserve_and_claim(MemoryContext cxt, int area, long *sleep_ms)
{
	int			cpu;
	int			memory;
	List	   *jobs;

	*sleep_ms = taskq_poll_interval_ms;
	/* this claim serves every wake-up asked of us so far */
	(void) taskq_take_wake_request(MySlot);
	if (!taskq_reserve_all_free(MySlot, &cpu, &memory))
		return NIL;				/* woken when capacity comes free */
	taskq_set_slot_state(MySlot, TASKQ_STATE_CLAIMING, 0);
	jobs = claim_jobs(cpu, memory, cxt, area, sleep_ms);
	/* a full batch: more may be waiting, for an executor that sleeps */
	if (list_length(jobs) >= batch_limit)
		taskq_wake_one_executor();
	batch_needs(jobs, &cpu, &memory);
	taskq_keep_reserved(MySlot, cpu, memory);
	return jobs;
}

/*
 * A claim failed: abort, and back off so that a persistent error cannot
 * flood the log.  Returns how long to sleep.
 */
static long
recover_from_claim_error(void)
{
	if (consecutive_errors++ < 8)
		recover_from_error("claiming jobs");
	else
	{
		MemoryContextSwitchTo(TopMemoryContext);
		FlushErrorState();
		AbortCurrentTransaction();
	}
	return Min((long) taskq_poll_interval_ms << Min(consecutive_errors, 8), 60000L);
}

/* Claim a batch in a transaction of its own (slow jobs: execute_once). */
static List *
claim_batch(long *sleep_ms)
{
	List	   *volatile jobs = NIL;
	volatile bool failed = false;

	*sleep_ms = taskq_poll_interval_ms;
	MemoryContextReset(batch_cxt);

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "taskq: claiming jobs");

		/* no batch is held now: both areas are free */
		if (taskq_extension_ready())
			jobs = reserve_and_claim(batch_cxt, 0, sleep_ms);
		else
			taskq_set_slot_state(MySlot, TASKQ_STATE_WAITING, 0);
		PopActiveSnapshot();
		SPI_finish();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		*sleep_ms = recover_from_claim_error();
		taskq_release_all(MySlot);
		unpublish_batch(0);
		failed = true;
		jobs = NIL;
	}
	PG_END_TRY();
	if (!failed)
		consecutive_errors = 0;
	pgstat_report_activity(STATE_IDLE, NULL);
	return jobs;
}

/*
 * Undo what a handler may have left in the session, so the next job starts
 * clean.  (GUCs and the user id are restored by the subtransaction.)  Open
 * cursors survive a committed subtransaction: the next job of the batch,
 * maybe another owner's, must not fetch from them.
 */
static void
reset_session_state(void)
{
	Oid			temp_ns;
	Oid			temp_toast_ns;

	LockReleaseSession(USER_LOCKMETHOD);
	Async_UnlistenAll();
	DropAllPreparedStatements();
	PortalHashTableDeleteAll();
	ResetSequenceCaches();
	GetTempNamespaceState(&temp_ns, &temp_toast_ns);
	if (OidIsValid(temp_ns))
		ResetTempTableNamespace();
}

/* Refuse to run a job whose owner is gone or may not call the handler. */
static void
check_job_runnable(ClaimedJob *job)
{
	job_error_permanent = true;
	if (!OidIsValid(job->handler))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("no handler is registered for this job's type any more")));
	if (!SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(job->handler)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("the handler function registered for this job's type (OID %u) was dropped",
						job->handler),
				 errhint("Register a handler again with taskq.register_handler().")));
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(job->owner)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role %u that submitted the job does not exist", job->owner)));
	taskq_check_handler_trusted(job->handler);
	if (object_aclcheck(ProcedureRelationId, job->handler, job->owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may not execute handler %s",
						GetUserNameFromId(job->owner, false),
						format_procedure(job->handler))));
	job_error_permanent = false;
}

/* Call the handler as the job's owner; the result goes to job->result. */
static void
call_handler(ClaimedJob *job)
{
	FmgrInfo	flinfo;
	LOCAL_FCINFO(fcinfo, 1);
	Datum		result;
	Oid			save_userid;
	int			save_sec_context;
	int			nest_level;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(job->owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	nest_level = NewGUCNestLevel();
	if (job->memory_mb > 0)
	{
		char		buf[32];

		snprintf(buf, sizeof(buf), "%dMB", job->memory_mb);
		(void) set_config_option("work_mem", buf, PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SET, true, 0, false);
	}

	for (int i = 0; i < lengthof(executor_settings); i++)
		(void) set_config_option(executor_settings[i][0], handler_settings[i],
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SET, true, 0, false);

	fmgr_info(job->handler, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = job->payload;
	fcinfo->args[0].isnull = false;
	result = FunctionCallInvoke(fcinfo);

	job->result_isnull = fcinfo->isnull || get_func_rettype(job->handler) != JSONBOID;
	if (!job->result_isnull)
	{
		MemoryContext old;

		/* too big to keep: the job fails, and a retry would be as big */
		job_error_permanent = true;
		taskq_check_result_size(result, job->id);
		job_error_permanent = false;
		old = MemoryContextSwitchTo(batch_cxt);

		job->result = PointerGetDatum(PG_DETOAST_DATUM_COPY(result));
		MemoryContextSwitchTo(old);
	}

	/*
	 * Deferred triggers the handler queued fire now, as the job's owner and
	 * in the job's subtransaction: at the batch's commit they would run as
	 * the executor's superuser, and a broken deferred constraint would fail
	 * the whole batch.
	 */
	draining_deferred_triggers = true;
	if (SPI_execute_plan(constraints_plan, NULL, NULL, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "taskq: checking deferred constraints failed");
	draining_deferred_triggers = false;

	/* revert every SET the handler made, SET LOCAL or not */
	AtEOXact_GUC(false, nest_level);
	SetUserIdAndSecContext(save_userid, save_sec_context);
}

/*
 * taskq.c's utility hook, for every utility statement: while a job's
 * deferred triggers fire, none may SET CONSTRAINTS ... DEFERRED.  A trigger
 * that did would queue work past the job, to the batch's commit, where it
 * would run as the executor (a superuser) instead of the job's owner.
 */
void
taskq_guard_handler_utility(Node *stmt)
{
	if (draining_deferred_triggers && IsA(stmt, ConstraintsSetStmt) &&
		((ConstraintsSetStmt *) stmt)->deferred)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("a deferred trigger of a taskq job may not defer constraints again"),
				 errdetail("A job's deferred triggers fire when its handler returns, as the job's owner; "
						   "nothing may be deferred past that.")));
}

static void
run_job(ClaimedJob *job)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	TimestampTz started = GetCurrentTimestamp();

	taskq_set_slot_state(MySlot, TASKQ_STATE_RUNNING, job->id);
	pgstat_report_activity(STATE_RUNNING, "taskq: running a job");
	/* should the handler crash the server, this job alone is charged */
	job->started = started;
	taskq_crash_mark_set(job->id, job->attempt - 1, started);
	job_timed_out = false;
	job_stopped_by_shutdown = false;
	job_terminated_itself = false;
	job_stop_sent_at = 0;
	job_cancel_flag = &TaskqState->held[my_slot_index][job->area].cancel[job->index];

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		check_job_runnable(job);
		/* a timeout too long to add to the clock is no deadline at all */
		job_deadline = job->timeout_ms > 0 &&
			job->timeout_ms < (PG_INT64_MAX - started) / 1000 ?
			started + job->timeout_ms * 1000 : 0;
		taskq_current_job = job->id;
		taskq_current_job_attempt = job->attempt;

		call_handler(job);
		if (job_terminated_itself)
			ereport(ERROR,
					(errcode(ERRCODE_ADMIN_SHUTDOWN),
					 errmsg("the handler terminated its own executor")));
		/* a cancel that came before: its caller was told the job is cancelled */
		if (!mark_succeeded(job))
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 errmsg("canceling the job at user request")));

		taskq_current_job = 0;
		job_deadline = 0;
		job_cancel_flag = NULL;
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		job->outcome = OUTCOME_SUCCEEDED;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		taskq_current_job = 0;
		job_deadline = 0;
		job_cancel_flag = NULL;
		draining_deferred_triggers = false;
		MemoryContextSwitchTo(batch_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;

		job->retryable = !job_error_permanent;
		job->outcome = OUTCOME_FAILED;
		if (job_terminated_itself)
			job->error = "the handler terminated its own executor";
		else if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
		{
			if (cancel_requested(job))
				job->outcome = OUTCOME_CANCELLED;
			else if (job_timed_out)
				job->error = psprintf("job timed out after %lld ms",
									  (long long) job->timeout_ms);
			else if (job_stopped_by_shutdown)
			{
				job->outcome = OUTCOME_GIVEN_BACK;
				job->error = "interrupted by shutdown";
			}
			/* any other cancel (pg_cancel_backend) is a failed attempt */
		}
		if (job->error == NULL)
			job->error = edata->message;
		job_error_permanent = false;
	}
	PG_END_TRY();

	/* a cancel that arrived after the handler returned has nothing to stop */
	QueryCancelPending = false;
	reset_session_state();

	avg_job_ms = 0.8 * avg_job_ms +
		0.2 * ((double) (GetCurrentTimestamp() - started) / 1000.0);
}

static Datum
int8_array(List *jobs, JobOutcome outcome, int *n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(jobs), 1));
	ListCell   *lc;

	*n = 0;
	foreach(lc, jobs)
	{
		ClaimedJob *job = lfirst(lc);

		if (job->outcome == outcome)
			elems[(*n)++] = Int64GetDatum(job->id);
	}
	return PointerGetDatum(construct_array(elems, *n, INT8OID, 8, true, TYPALIGN_DOUBLE));
}

/*
 * Record the successes of the batch: those whose claim wrote their rows in
 * one statement, those claimed without a write (deferred) in another, which
 * writes the claim's columns with the outcome: one row write per job.
 */
static void
record_successes_of(List *jobs, bool deferred)
{
	int			total = Max(list_length(jobs), 1);
	Datum	   *ids = palloc(sizeof(Datum) * total);
	Datum	   *results = palloc(sizeof(Datum) * total);
	bool	   *nulls = palloc(sizeof(bool) * total);
	Datum	   *attempts = palloc(sizeof(Datum) * total);
	Datum	   *started = palloc(sizeof(Datum) * total);
	Datum		args[5];
	int			dims[1];
	int			lbs[1] = {1};
	int			n = 0;
	ListCell   *lc;

	foreach(lc, jobs)
	{
		ClaimedJob *job = lfirst(lc);

		if (job->outcome != OUTCOME_SUCCEEDED || job->deferred != deferred)
			continue;
		ids[n] = Int64GetDatum(job->id);
		results[n] = job->result;
		nulls[n] = job->result_isnull;
		attempts[n] = Int32GetDatum(job->attempt);
		started[n] = TimestampTzGetDatum(job->started);
		n++;
	}
	if (n == 0)
		return;
	dims[0] = n;
	args[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, true, TYPALIGN_DOUBLE));
	args[1] = CStringGetTextDatum(worker_name);
	args[2] = PointerGetDatum(construct_md_array(results, nulls, 1, dims, lbs,
												 JSONBOID, -1, false, TYPALIGN_INT));
	args[3] = PointerGetDatum(construct_array(attempts, n, INT4OID, 4, true, TYPALIGN_INT));
	args[4] = PointerGetDatum(construct_array(started, n, TIMESTAMPTZOID, 8, true,
											  TYPALIGN_DOUBLE));
	if (SPI_execute_plan(deferred ? complete_held_plan : complete_plan, args, NULL, false,
						 0) != SPI_OK_SELECT)
		elog(ERROR, "taskq: recording successes failed");
	SpinLockAcquire(&TaskqState->mutex);
	MySlot->jobs_done += n;
	SpinLockRelease(&TaskqState->mutex);
}

static void
record_successes(List *jobs)
{
	record_successes_of(jobs, false);
	record_successes_of(jobs, true);
}

/*
 * Write the claim of the deferred jobs whose outcome is not a success, so
 * that failures, give-backs and cancels are recorded as for any claimed job.
 */
static void
write_deferred_claims(List *jobs)
{
	int			total = Max(list_length(jobs), 1);
	Datum	   *ids = palloc(sizeof(Datum) * total);
	Datum	   *attempts = palloc(sizeof(Datum) * total);
	Datum	   *started = palloc(sizeof(Datum) * total);
	Datum		args[4];
	int			n = 0;
	ListCell   *lc;

	foreach(lc, jobs)
	{
		ClaimedJob *job = lfirst(lc);

		if (!job->deferred || job->outcome == OUTCOME_NONE ||
			job->outcome == OUTCOME_SUCCEEDED)
			continue;
		ids[n] = Int64GetDatum(job->id);
		attempts[n] = Int32GetDatum(job->attempt);
		/* a job not started (cancelled or given back first) starts now */
		started[n] = TimestampTzGetDatum(job->started ? job->started : GetCurrentTimestamp());
		job->deferred = false;
		n++;
	}
	if (n == 0)
		return;
	args[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, true, TYPALIGN_DOUBLE));
	args[1] = CStringGetTextDatum(worker_name);
	args[2] = PointerGetDatum(construct_array(attempts, n, INT4OID, 4, true, TYPALIGN_INT));
	args[3] = PointerGetDatum(construct_array(started, n, TIMESTAMPTZOID, 8, true,
											  TYPALIGN_DOUBLE));
	if (SPI_execute_plan(take_held_plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "taskq: writing deferred claims failed");
}

/* Record failed (or given back) attempts in one statement. */
static void
record_failures(List *jobs, JobOutcome outcome)
{
	int			n = 0;
	int			total = Max(list_length(jobs), 1);
	Datum	   *ids = palloc(sizeof(Datum) * total);
	Datum	   *attempts = palloc(sizeof(Datum) * total);
	Datum	   *errors = palloc(sizeof(Datum) * total);
	Datum	   *retryable = palloc(sizeof(Datum) * total);
	Datum		args[6];
	ListCell   *lc;

	foreach(lc, jobs)
	{
		ClaimedJob *job = lfirst(lc);

		if (job->outcome != outcome)
			continue;
		ids[n] = Int64GetDatum(job->id);
		attempts[n] = Int32GetDatum(job->attempt);
		errors[n] = CStringGetTextDatum(job->error ? job->error : "unknown error");
		retryable[n] = BoolGetDatum(job->retryable);
		n++;
	}
	if (n == 0)
		return;
	args[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, true, TYPALIGN_DOUBLE));
	args[1] = CStringGetTextDatum(worker_name);
	args[2] = PointerGetDatum(construct_array(attempts, n, INT4OID, 4, true, TYPALIGN_INT));
	args[3] = PointerGetDatum(construct_array(errors, n, TEXTOID, -1, false, TYPALIGN_INT));
	args[4] = PointerGetDatum(construct_array(retryable, n, BOOLOID, 1, true, TYPALIGN_CHAR));
	args[5] = BoolGetDatum(outcome == OUTCOME_GIVEN_BACK);
	if (SPI_execute_plan(fail_plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "taskq: recording failures failed");
}

static void
record_cancellations(List *jobs)
{
	ListCell   *lc;

	foreach(lc, jobs)
	{
		ClaimedJob *job = lfirst(lc);
		Datum		arg = Int64GetDatum(job->id);

		if (job->outcome == OUTCOME_CANCELLED &&
			SPI_execute_plan(cancel_plan, &arg, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "taskq: recording a cancellation failed");
	}
}

/*
 * Each handler that writes commits a subtransaction id into the batch's
 * transaction, and PostgreSQL caches only PGPROC_MAX_CACHED_SUBXIDS of them
 * per backend: past that every snapshot in the server must look subtransaction
 * ids up in pg_subtrans, which slows the whole server.  A batch whose cache is
 * full gives its remaining jobs back (not counted as attempts), and the next
 * batches claim only as many jobs as the last one's handlers left room for.
 */
static bool
subxid_cache_full(void)
{
	return MyProc->subxidStatus.overflowed ||
		MyProc->subxidStatus.count >= PGPROC_MAX_CACHED_SUBXIDS;
}

/* batch_limit within taskq.batch_size and the subxid cache's room */
static void
clamp_batch_limit(void)
{
	batch_limit = Max(1, Min(batch_limit, Min(taskq_batch_size, subxid_batch_cap)));
}

static void
limit_batch_to_subxid_cache(int ran)
{
	int			used = MyProc->subxidStatus.overflowed ?
		PGPROC_MAX_CACHED_SUBXIDS + 1 : MyProc->subxidStatus.count;

	if (ran == 0)
		return;
	if (used == 0)
		subxid_batch_cap = INT_MAX;	/* handlers that do not write: no limit */
	else
		subxid_batch_cap = Max(1, (int) ((int64) PGPROC_MAX_CACHED_SUBXIDS * ran / used));
	clamp_batch_limit();		/* from the claim this transaction makes next */
}

/*
 * Mark which of the jobs (whose outcome is "candidate") we still hold,
 * locking their rows to the end of the transaction with plan (lock_plan or
 * lock_skip_plan).  The outcome of every job is then OUTCOME_NONE.
 */
static void
lock_held_jobs(List *jobs, JobOutcome candidate, SPIPlanPtr plan)
{
	Datum		args[2];
	int			n;
	int64	   *locked;
	ListCell   *lc;

	args[0] = int8_array(jobs, candidate, &n);
	args[1] = CStringGetTextDatum(worker_name);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "taskq: locking claimed jobs failed");

	/* the locked ids come in id order: look each job up by bisection */
	locked = palloc(sizeof(int64) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		locked[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
												SPI_tuptable->tupdesc, 1, &isnull));
	}
	foreach(lc, jobs)
	{
		ClaimedJob *job = lfirst(lc);
		uint64		lo = 0;
		uint64		hi = SPI_processed;

		job->outcome = OUTCOME_NONE;
		while (lo < hi)
		{
			uint64		mid = lo + (hi - lo) / 2;

			if (locked[mid] < job->id)
				lo = mid + 1;
			else
				hi = mid;
		}
		job->held = lo < SPI_processed && locked[lo] == job->id;
	}
}

/*
 * At exit (FATAL) inside run_batch, typically when a handler outlived its
 * cancel and executor_tick ended us: the batch's transaction is aborted
 * here, and its jobs are recorded in a new one.  The job that was running
 * is charged an attempt, as a crash charges it; its batch-mates go back
 * uncharged (a claim not committed needs nothing: the abort gave them
 * back); a job taskq.cancel() flagged is cancelled.  Interrupts are held
 * while we exit, so nothing here may wait: rows locked by others are
 * skipped, and a locked extension (DROP EXTENSION) skips it all; the
 * launcher recovers what is left once we are gone (our crash mark stays
 * until this is recorded).  (Before ShutdownPostgres: see
 * RemoveTempRelationsCallback for the same pattern.)
 */
static void record_after_rollback(List *jobs);

static void
executor_exit(int code, Datum arg)
{
	List	   *jobs = running_batch;
	int64		culprit = escalated_job ? escalated_job : taskq_current_job;
	JobOutcome *wanted;
	ListCell   *lc;
	int			i;
	Oid			ext;

	/* the postmaster is gone (WL_EXIT_ON_PM_DEATH): write nothing more */
	if (!PostmasterIsAlive())
		return;
	if (jobs == NIL)
	{
		taskq_crash_mark_remove();
		return;
	}
	running_batch = NIL;
	AbortOutOfAnyTransaction();
	taskq_current_job = 0;
	job_cancel_flag = NULL;
	if (escalated_job != 0)
		ereport(LOG,
				(errmsg("taskq executor: the handler of job %lld did not stop within %d ms of its cancel; the executor ended itself",
						(long long) escalated_job, TASKQ_CANCEL_ESCALATE_MS),
				 errhint("A handler must not trap query_canceled.")));

	wanted = palloc0(sizeof(JobOutcome) * list_length(jobs));
	foreach(lc, jobs)
	{
		ClaimedJob *job = lfirst(lc);

		i = foreach_current_index(lc);
		job->retryable = true;
		if (!job->held)
			wanted[i] = OUTCOME_NONE;
		else if (cancel_requested(job))
			wanted[i] = OUTCOME_CANCELLED;
		else if (job->id == culprit)
		{
			wanted[i] = OUTCOME_FAILED;
			if (escalated_job != 0 && escalated_for_timeout)
				job->error = psprintf("job timed out after %lld ms and ignored the cancel; its executor was ended",
									  (long long) job->timeout_ms);
			else if (escalated_job != 0)
				job->error = "the handler ignored the cancel; its executor was ended";
			else
				job->error = "its executor exited while running it";
		}
		else if (running_claim_committed)
		{
			wanted[i] = OUTCOME_GIVEN_BACK;
			job->error = "its executor exited while running its batch";
		}
		else
			wanted[i] = OUTCOME_NONE;	/* its claim rolled back */
		/* the candidates for lock_held_jobs */
		job->outcome = wanted[i] == OUTCOME_NONE ? OUTCOME_NONE : OUTCOME_SUCCEEDED;
	}

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	ext = get_extension_oid("taskq", true);
	/* no waiting here (interrupts are held): DROP EXTENSION may hold it */
	if (OidIsValid(ext) &&
		ConditionalLockDatabaseObject(ExtensionRelationId, ext, 0, AccessShareLock) &&
		get_extension_oid("taskq", true) == ext)
	{
		prepare_plans();
		if (running_claim_committed)
		{
			lock_held_jobs(jobs, OUTCOME_SUCCEEDED, lock_skip_plan);
			foreach(lc, jobs)
			{
				ClaimedJob *job = lfirst(lc);

				job->outcome = job->held ? wanted[foreach_current_index(lc)] : OUTCOME_NONE;
			}
			record_failures(jobs, OUTCOME_FAILED);
			record_failures(jobs, OUTCOME_GIVEN_BACK);
			record_cancellations(jobs);
		}
		else
		{
			foreach(lc, jobs)
			{
				ClaimedJob *job = lfirst(lc);

				job->outcome = wanted[foreach_current_index(lc)];
			}
			record_after_rollback(jobs);
		}
	}
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	unpublish_batch(0);
	unpublish_batch(1);
	taskq_crash_mark_remove();
}

/*
 * After our batch's transaction rolled back with its claim (not committed):
 * its jobs are pending again, uncharged.  Charge those whose outcome is
 * OUTCOME_FAILED (fenced on the attempts they had), cancel the flagged ones
 * (OUTCOME_CANCELLED).  Inside a transaction, SPI connected.
 */
static void
record_after_rollback(List *jobs)
{
	ListCell   *lc;

	foreach(lc, jobs)
	{
		ClaimedJob *job = lfirst(lc);
		Datum		args[5];

		args[0] = Int64GetDatum(job->id);
		if (job->outcome == OUTCOME_CANCELLED)
		{
			if (SPI_execute_plan(cancel_unlocked_plan, args, NULL, false, 0) != SPI_OK_SELECT)
				elog(ERROR, "taskq: recording a cancellation failed");
		}
		else if (job->outcome == OUTCOME_FAILED)
		{
			args[1] = Int32GetDatum(job->attempt - 1);
			args[2] = TimestampTzGetDatum(job->started ? job->started : GetCurrentTimestamp());
			args[3] = CStringGetTextDatum(worker_name);
			args[4] = CStringGetTextDatum(job->error ? job->error : "unknown error");
			if (SPI_execute_plan(charge_plan, args, NULL, false, 0) != SPI_OK_SELECT)
				elog(ERROR, "taskq: charging a job failed");
		}
	}
}

/*
 * Run a batch in one transaction and record every outcome in it.  With
 * jobs NIL, the batch is claimed in that same transaction (the usual way:
 * one commit per batch, the claim never committed on its own); else jobs
 * were claimed and committed by claim_batch.  When nothing was claimed,
 * *sleep_ms says how long the executor may sleep (else 0).
 */
static void
run_batch(List *jobs, long *sleep_ms)
{
	List	   *volatile batch = jobs;
	volatile bool claim_committed = jobs != NIL;
	volatile long next_sleep_ms = 0;

	if (!claim_committed)
		MemoryContextReset(batch_cxt);
	running_claim_committed = claim_committed;
	PG_TRY();
	{
		ListCell   *lc;
		int			ran = 0;

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (claim_committed)
		{
			if (!taskq_extension_ready())
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_OBJECT),
						 errmsg("extension \"taskq\" is not installed")));
			running_batch = batch;
			foreach(lc, batch)
				((ClaimedJob *) lfirst(lc))->outcome = OUTCOME_SUCCEEDED;
			lock_held_jobs(batch, OUTCOME_SUCCEEDED, lock_plan);
		}
		else if (taskq_extension_ready())
		{
			long		claim_sleep_ms;

			pgstat_report_activity(STATE_RUNNING, "taskq: claiming jobs");
			taskq_claim_deferred = true;
			batch = reserve_and_claim(batch_cxt, 0, &claim_sleep_ms);
			taskq_claim_deferred = false;
			running_batch = batch;
			if (batch == NIL)
				next_sleep_ms = claim_sleep_ms;
			foreach(lc, batch)
			{
				ClaimedJob *job = lfirst(lc);

				job->held = true;	/* locked by our claim */
				job->outcome = OUTCOME_NONE;
			}
		}
		else
		{
			taskq_set_slot_state(MySlot, TASKQ_STATE_WAITING, 0);
			next_sleep_ms = taskq_poll_interval_ms;
		}

		if (batch != NIL)
		{
			enable_timeout_every(tick_timeout,
								 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 50), 50);
			foreach(lc, batch)
			{
				ClaimedJob *job = lfirst(lc);

				if (!job->held)
					continue;
				CHECK_FOR_INTERRUPTS();
				if (cancel_requested(job))
					job->outcome = OUTCOME_CANCELLED;
				else if (got_sigterm)
				{
					job->outcome = OUTCOME_GIVEN_BACK;
					job->error = "not started before shutdown";
				}
				else if (subxid_cache_full())
				{
					job->outcome = OUTCOME_GIVEN_BACK;
					job->error = "its batch had used every cached subtransaction id";
				}
				else
				{
					run_job(job);
					ran++;
				}
			}
			disable_timeout(tick_timeout, false);
			/* no handler runs from here on: recording is the executor's own work */
			taskq_crash_mark_clear();
			decide_outcomes(batch);
			limit_batch_to_subxid_cache(ran);
			taskq_set_slot_state(MySlot, TASKQ_STATE_CLAIMING, 0);
			pgstat_report_activity(STATE_RUNNING, "taskq: recording outcomes");

			record_successes(batch);
			write_deferred_claims(batch);
			record_failures(batch, OUTCOME_FAILED);
			record_failures(batch, OUTCOME_GIVEN_BACK);
			record_cancellations(batch);
		}

		PopActiveSnapshot();
		SPI_finish();
		CommitTransactionCommand();
		running_batch = NIL;
		consecutive_errors = 0;
	}
	PG_CATCH();
	{
		List	   *failed = batch;

		taskq_claim_deferred = false;
		running_batch = NIL;
		disable_timeout(tick_timeout, false);
		taskq_crash_mark_clear();
		if (failed == NIL)
		{
			next_sleep_ms = recover_from_claim_error();
		}
		else
		{
			/*
			 * The batch rolled back whole (say, a handler's notifications did
			 * not fit the NOTIFY queue at commit).  A lone job is charged an
			 * attempt; jobs of a bigger batch go back uncharged and then run
			 * one per batch, so the culprit fails alone, not with its
			 * batch-mates.  A flagged job is cancelled, as its canceller was
			 * told.
			 */
			JobOutcome	outcome = list_length(failed) > 1 ? OUTCOME_GIVEN_BACK : OUTCOME_FAILED;

			recover_from_error("running a batch");
			if (outcome == OUTCOME_GIVEN_BACK)
				isolate_batches = list_length(failed);
			PG_TRY(2);
			{
				ListCell   *lc;

				foreach(lc, failed)
				{
					ClaimedJob *job = lfirst(lc);

					job->outcome = !job->held ? OUTCOME_NONE :
						cancel_requested(job) ? OUTCOME_CANCELLED : outcome;
					job->retryable = true;
					job->error = batch_error;
				}
				SetCurrentStatementStartTimestamp();
				StartTransactionCommand();
				SPI_connect();
				PushActiveSnapshot(GetTransactionSnapshot());
				if (taskq_extension_ready())
				{
					prepare_plans();
					if (claim_committed)
					{
						record_failures(failed, outcome);
						foreach(lc, failed)
						{
							ClaimedJob *job = lfirst(lc);

							/* cancel_unlocked_plan: our locks went with the rollback */
							job->outcome = job->outcome == OUTCOME_CANCELLED ?
								OUTCOME_CANCELLED : OUTCOME_NONE;
						}
					}
					else if (outcome == OUTCOME_GIVEN_BACK)
					{
						/* given back already: the rollback took their claim */
						foreach(lc, failed)
						{
							ClaimedJob *job = lfirst(lc);

							if (job->outcome == OUTCOME_GIVEN_BACK)
								job->outcome = OUTCOME_NONE;
						}
					}
					record_after_rollback(failed);
				}
				PopActiveSnapshot();
				SPI_finish();
				CommitTransactionCommand();
			}
			PG_CATCH(2);
			{
				/*
				 * Jobs may stay running under our name and nothing else would
				 * return them while we live: exit, and the launcher recovers them.
				 */
				recover_from_error("recording a failed batch");
				ereport(LOG, (errmsg("taskq executor: exiting so that the launcher returns its jobs to the queue")));
				proc_exit(1);
			}
			PG_END_TRY(2);
		}
	}
	PG_END_TRY();
	taskq_release_all(MySlot);
	unpublish_batch(0);
	pgstat_report_activity(STATE_IDLE, NULL);
	*sleep_ms = next_sleep_ms;
}

/*
 * Sleep up to sleep_ms, until woken for work (taskq_take_wake_request), a
 * signal that needs us (SIGTERM, SIGHUP) or the timeout.  Other latch sets
 * (a timer's SIGALRM) do not cut the sleep short: each used to cost a claim.
 */
static void
sleep_until_asked(long sleep_ms)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), sleep_ms);

	taskq_set_slot_state(MySlot, TASKQ_STATE_IDLE, 0);
	for (;;)
	{
		int			rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								   sleep_ms, PG_WAIT_EXTENSION);

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if ((rc & WL_TIMEOUT) || got_sigterm || ConfigReloadPending ||
			taskq_take_wake_request(MySlot))
			return;
		sleep_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);
		if (sleep_ms <= 0)
			return;
	}
}

/*
 * One cycle: claim, run and record a batch.  Returns how long to sleep
 * (0: go again).
 *
 * Slow jobs: once the batch size has adapted to one job (jobs take 50 ms or
 * more: batch_limit is 1), or a rolled-back batch's jobs run one by one, the
 * claim commits first (claim_batch), so that the job's row shows it running
 * while it runs, and a crash charges it through the launcher's _recover.
 * One more commit per job is little beside a job that slow.
 */
static long
execute_once(void)
{
	long		sleep_ms = 0;

	if (batch_limit == 1)
	{
		List	   *claimed = claim_batch(&sleep_ms);

		if (claimed == NIL)
		{
			taskq_release_all(MySlot);
			return sleep_ms;
		}

		/*
		 * The claim is durable before its handler runs, whatever
		 * synchronous_commit the executor has: the attempt counts first.
		 */
		XLogFlush(XactLastCommitEnd);
		run_batch(claimed, &sleep_ms);
	}
	else
		run_batch(NIL, &sleep_ms);

	/* aim for ~50 ms batches: one job at a time when jobs are slow */
	if (avg_job_ms > 0)
		batch_limit = Min(Max((int) (50.0 / avg_job_ms), 1), batch_limit * 2);
	clamp_batch_limit();
	if (isolate_batches > 0)
	{
		isolate_batches--;
		batch_limit = 1;
	}
	return sleep_ms;
}

void
TaskqExecutorMain(Datum main_arg)
{
#ifdef SA_SIGINFO
	{
		/* SA_SIGINFO tells who sent the SIGTERM */
		struct sigaction act;

		memset(&act, 0, sizeof(act));
		act.sa_sigaction = executor_sigterm;
		act.sa_flags = SA_SIGINFO | SA_RESTART;
		sigemptyset(&act.sa_mask);
		sigaction(SIGTERM, &act, NULL);
	}
#else
	pqsignal(SIGTERM, executor_sigterm);
#endif
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	/* the database of the launcher that started us (launcher.c) */
	taskq_pin_state(DatumGetInt32(main_arg));
	{
		Oid			dboid;

		memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
		BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	}
	/* completions must see dependents linked just before (fresh snapshots) */
	SetConfigOption("default_transaction_isolation", "read committed",
					PGC_SUSET, PGC_S_OVERRIDE);
	for (int i = 0; i < lengthof(executor_settings); i++)
	{
		handler_settings[i] = MemoryContextStrdup(TopMemoryContext,
												  GetConfigOption(executor_settings[i][0],
																  false, false));
		SetConfigOption(executor_settings[i][0], executor_settings[i][1],
						PGC_USERSET, PGC_S_SESSION);
	}

	/* the start time makes the name unique even when a pid is reused */
	snprintf(worker_name, sizeof(worker_name), "executor/%d.%ld",
			 MyProcPid, (long) MyStartTime);
	MySlot = taskq_attach_slot(TASKQ_SLOT_EXECUTOR, worker_name);
	my_slot_index = MySlot - TaskqState->slots;
	unpublish_batch(0);
	unpublish_batch(1);
	/* after the slot: a file whose executor is not attached is a dead one's */
	taskq_crash_mark_open(worker_name);
	/* after InitPostgres: runs before ShutdownPostgres aborts the transaction */
	before_shmem_exit(executor_exit, 0);
	tick_timeout = RegisterTimeout(USER_TIMEOUT, executor_tick);
	batch_cxt = AllocSetContextCreate(TopMemoryContext, "taskq batch",
									  ALLOCSET_DEFAULT_SIZES);
	pgstat_report_appname("taskq executor");
	clamp_batch_limit();

	while (!got_sigterm)
	{
		long		sleep_ms;
		long		stats_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		sleep_ms = execute_once();

		/*
		 * A background worker flushes its table statistics itself; without
		 * them autovacuum never sees the dead tuples our updates leave.
		 */
		stats_ms = pgstat_report_stat(false);
		if (sleep_ms > 0 && stats_ms > 0)
			sleep_ms = Min(sleep_ms, stats_ms);
		if (sleep_ms > 0 && !got_sigterm)
			sleep_until_asked(sleep_ms);
	}
	taskq_set_slot_state(MySlot, TASKQ_STATE_STOPPING, 0);
	/* a wake-up meant for us goes to another executor */
	if (taskq_take_wake_request(MySlot))
		taskq_wake_one_executor();
	proc_exit(0);
}
