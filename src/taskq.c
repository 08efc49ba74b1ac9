/*
 * taskq.c: module load (_PG_init), GUCs, shared state and worker slots, and
 * the small SQL-callable functions that talk to the workers.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/utility.h"
#include "utils/json.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"

#include "taskq.h"

PG_MODULE_MAGIC;

int			taskq_workers = 2;
int			taskq_max_cpu_units = 4;
int			taskq_max_memory_mb = 1024;
int			taskq_poll_interval_ms = 1000;
int			taskq_shutdown_grace_ms = 10000;
int			taskq_batch_size = 256;

int			taskq_notify_level = NOTIFY_ALL;
double		taskq_notify_queue_limit = 0.5;
static int	taskq_retention_s = 7 * 24 * 3600;
static int	taskq_aging_interval_s = 300;
static int	taskq_big_job_wait_ms = 30000;
static int	taskq_backoff_base_ms = 1000;
static int	taskq_backoff_max_s = 3600;

static const struct config_enum_entry notify_level_options[] = {
	{"none", NOTIFY_NONE, false},
	{"terminal", NOTIFY_TERMINAL, false},
	{"all", NOTIFY_ALL, false},
	{NULL, 0, false}
};

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_process_utility = NULL;

/* set by taskq._wake_on_commit(); acted on by the commit callback */
static bool wake_at_commit = false;

void		_PG_init(void);

static void
taskq_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		taskq_scan_floors_at_subabort();
		taskq_job_metrics_at_subabort(mySubid);
	}
}

static void
taskq_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(taskq_databases_size()));
	RequestAddinShmemSpace(taskq_scan_floors_size());
	RequestAddinShmemSpace(taskq_listeners_size());
	RequestAddinShmemSpace(taskq_job_metrics_size());
	RequestAddinShmemSpace(taskq_rate_buckets_size());
	taskq_scan_floors_request();
	taskq_rate_buckets_request();
}

static void
taskq_shmem_startup(void)
{
	bool		found;
	TaskqScanFloors *floors;
	TaskqShared *dbs;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	dbs = ShmemInitStruct("taskq", taskq_databases_size(), &found);
	taskq_databases_attach(dbs, found);
	floors = ShmemInitStruct("taskq scan floors", taskq_scan_floors_size(), &found);
	taskq_scan_floors_init(floors, found);
	taskq_listeners_attach();
	taskq_job_metrics_attach();
	taskq_rate_buckets_attach();
	LWLockRelease(AddinShmemInitLock);
}

static void
taskq_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			taskq_scan_floors_at_commit();
			taskq_job_metrics_at_commit();
			if (wake_at_commit)
				taskq_wake_one_executor();
			wake_at_commit = false;
			taskq_database_guard_at_commit(true);
			break;
		case XACT_EVENT_PRE_PREPARE:
			/* COMMIT PREPARED may come from another session: no floor lowered */
			if (taskq_scan_floors_noted())
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that makes taskq jobs runnable")));
			taskq_scan_floors_forget();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			taskq_scan_floors_forget();
			taskq_job_metrics_forget();
			wake_at_commit = false;
			taskq_database_guard_at_commit(false);
			break;
		case XACT_EVENT_PREPARE:
			/* COMMIT PREPARED may come from another session: not counted */
			taskq_job_metrics_forget();
			/* its COMMIT PREPARED may come from any session: polling finds its jobs */
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

static void
define_gucs(void)
{
	/* a PGC_POSTMASTER variable defined later is FATAL: only when preloading */
	if (process_shared_preload_libraries_in_progress)
		taskq_define_database_gucs();

	/*
	 * The capacity of one database: PGC_SUSET so that ALTER DATABASE ... SET
	 * gives a database its own (its workers read it when they connect).
	 */
	DefineCustomIntVariable("taskq.workers",
							"Number of executor background workers of each served database.",
							NULL, &taskq_workers, 2, 0, TASKQ_MAX_EXECUTORS,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("taskq.max_cpu_units",
							"CPU units that running in-database jobs of one database may hold together.",
							NULL, &taskq_max_cpu_units, 4, 1, 1000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("taskq.max_memory_mb",
							"Memory (MB) that running in-database jobs of one database may hold together.",
							NULL, &taskq_max_memory_mb, 1024, 0, INT_MAX / 2,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("taskq.poll_interval",
							"Longest sleep of an idle worker; wake-ups are immediate otherwise.",
							NULL, &taskq_poll_interval_ms, 1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("taskq.shutdown_grace",
							"How long running jobs may finish after SIGTERM before they are cancelled.",
							NULL, &taskq_shutdown_grace_ms, 10000, 0, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("taskq.batch_size",
							"Most jobs an executor claims and completes in one transaction.",
							NULL, &taskq_batch_size, 256, 1, TASKQ_MAX_BATCH,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("taskq.notify_level",
							 "Which status changes are published on the job channels (taskq.channel()).",
							 "none, terminal (succeeded, failed, cancelled) or all; none also stops the announcements on the work channels (taskq.work_channel()).",
							 &taskq_notify_level, NOTIFY_ALL, notify_level_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomRealVariable("taskq.notify_queue_limit",
							 "Above this fraction of the NOTIFY queue in use, taskq stops publishing status changes.",
							 "A listener that never reads fills the queue; once full, every notifying transaction would fail.",
							 &taskq_notify_queue_limit, 0.5, 0.0, 1.0,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("taskq.flush_after_notify",
							 "A transaction that publishes on taskq's channels flushes its commit after releasing PostgreSQL's NOTIFY lock.",
							 "COMMIT still waits for the flush; other sessions may see the transaction during it.  Not under synchronous replication.",
							 &taskq_flush_after_notify, true,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("taskq.wake_before_flush",
							 "A transaction that makes jobs runnable wakes an executor before its commit is flushed.",
							 "COMMIT still waits for the flush; other sessions may see the transaction during it.  Not under synchronous replication.",
							 &taskq_wake_before_flush, true,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("taskq.retention",
							"How long finished jobs are kept before the launcher deletes them; -1 keeps them.",
							NULL, &taskq_retention_s, 7 * 24 * 3600, -1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("taskq.aging_interval",
							"Waiting this long raises a pending job's priority one level; 0 disables aging.",
							NULL, &taskq_aging_interval_s, 300, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("taskq.big_job_wait",
							"After waiting this long for capacity, a job stops smaller jobs from overtaking it.",
							NULL, &taskq_big_job_wait_ms, 30000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("taskq.backoff_base",
							"Default base delay of the exponential retry backoff.",
							NULL, &taskq_backoff_base_ms, 1000, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("taskq.backoff_max",
							"Longest retry backoff delay.",
							NULL, &taskq_backoff_max_s, 3600, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("taskq.max_payload_size",
							"Largest payload a job may have; -1: no limit.",
							NULL, &taskq_max_payload_size, 1024 * 1024, -1, INT_MAX,
							PGC_SUSET, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("taskq.max_result_size",
							"Largest result a job may have; -1: no limit.",
							NULL, &taskq_max_result_size, 1024 * 1024, -1, INT_MAX,
							PGC_SUSET, GUC_UNIT_BYTE, NULL, NULL, NULL);
	MarkGUCPrefixReserved("taskq");
}

/*
 * The utility statements taskq watches, before they run: CREATE, DROP and
 * RENAME of a served database (database_guard.c) and LISTEN on taskq's
 * channels (listeners.c).
 */
static void
taskq_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					  ProcessUtilityContext context, ParamListInfo params,
					  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	taskq_guard_database(pstmt->utilityStmt, context == PROCESS_UTILITY_TOPLEVEL);
	taskq_listeners_utility(pstmt->utilityStmt);
	taskq_guard_handler_utility(pstmt->utilityStmt);
	taskq_unschedule_on_drop(pstmt->utilityStmt);

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

void
_PG_init(void)
{
	define_gucs();
	RegisterXactCallback(taskq_xact_callback, NULL);
	taskq_commit_flush_init();
	RegisterSubXactCallback(taskq_subxact_callback, NULL);

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = taskq_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = taskq_shmem_startup;

	taskq_listeners_init();
	taskq_databases_init();
	taskq_register_launchers();
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = taskq_process_utility;
}

/* Free this process's slot and the capacity it held; runs at process exit. */
static void
taskq_detach_slot(int code, Datum arg)
{
	TaskqWorkerSlot *slot = (TaskqWorkerSlot *) DatumGetPointer(arg);

	taskq_release_all(slot);
	SpinLockAcquire(&TaskqState->mutex);
	memset(slot, 0, sizeof(TaskqWorkerSlot));
	SpinLockRelease(&TaskqState->mutex);
}

/* Take a free slot for this process; FATAL when none is left. */
TaskqWorkerSlot *
taskq_attach_slot(TaskqWorkerKind kind, const char *name)
{
	TaskqWorkerSlot *slot = NULL;

	SpinLockAcquire(&TaskqState->mutex);
	for (int i = 0; i < TASKQ_MAX_SLOTS; i++)
	{
		if (TaskqState->slots[i].kind == TASKQ_SLOT_FREE)
		{
			slot = &TaskqState->slots[i];
			memset(slot, 0, sizeof(TaskqWorkerSlot));
			slot->kind = kind;
			slot->state = TASKQ_STATE_STARTING;
			slot->pid = MyProcPid;
			strlcpy(slot->name, name, NAMEDATALEN);
			slot->latch = &MyProc->procLatch;
			slot->since = GetCurrentTimestamp();
			break;
		}
	}
	SpinLockRelease(&TaskqState->mutex);

	if (slot == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("no free taskq worker slot")));
	on_shmem_exit(taskq_detach_slot, PointerGetDatum(slot));
	return slot;
}

void
taskq_set_slot_state(TaskqWorkerSlot *slot, TaskqWorkerState state, int64 job_id)
{
	SpinLockAcquire(&TaskqState->mutex);
	if (slot->state != state || slot->job_id != job_id)
		slot->since = GetCurrentTimestamp();
	slot->state = state;
	slot->job_id = job_id;
	SpinLockRelease(&TaskqState->mutex);
}

/* Set the latch of every executor. */
void
taskq_wake_executors(void)
{
	Latch	   *latches[TASKQ_MAX_SLOTS];
	int			n = 0;

	if (taskq_state() == NULL)
		return;
	SpinLockAcquire(&TaskqState->mutex);
	for (int i = 0; i < TASKQ_MAX_SLOTS; i++)
		if (TaskqState->slots[i].kind == TASKQ_SLOT_EXECUTOR)
		{
			TaskqState->slots[i].wake_requested = true;
			latches[n++] = TaskqState->slots[i].latch;
		}
	SpinLockRelease(&TaskqState->mutex);
	for (int i = 0; i < n; i++)
		SetLatch(latches[i]);
}

/*
 * Wake one idle executor for newly runnable jobs: waking them all made every
 * one of them claim, and all but one find nothing.  The woken one is marked
 * claiming at once, so the next wake-up goes to another.  With none idle,
 * every executor's latch is set: one of them may be on its way to sleep
 * after a claim that could not see the new jobs yet, and must not sleep.
 * An executor that claims a full batch wakes the next one itself.
 */
void
taskq_wake_one_executor(void)
{
	Latch	   *idle = NULL;
	TimestampTz now = GetCurrentTimestamp();

	if (taskq_state() == NULL)
		return;
	SpinLockAcquire(&TaskqState->mutex);
	for (int i = 0; i < TASKQ_MAX_SLOTS; i++)
	{
		TaskqWorkerSlot *slot = &TaskqState->slots[i];

		if (slot->kind == TASKQ_SLOT_EXECUTOR && slot->state == TASKQ_STATE_IDLE)
		{
			slot->state = TASKQ_STATE_CLAIMING;
			slot->since = now;
			slot->wake_requested = true;
			idle = slot->latch;
			break;
		}
	}
	SpinLockRelease(&TaskqState->mutex);
	if (idle != NULL)
		SetLatch(idle);
	else
		taskq_wake_executors();
}

/*
 * Was this executor asked to look for work since it last asked?  Clears the
 * request.  A latch is also set by signals (every SIGALRM of a timeout, even
 * one already disabled), and an executor woken that way goes back to sleep
 * instead of claiming for nothing.
 */
bool
taskq_take_wake_request(TaskqWorkerSlot *slot)
{
	bool		requested;

	SpinLockAcquire(&TaskqState->mutex);
	requested = slot->wake_requested;
	slot->wake_requested = false;
	SpinLockRelease(&TaskqState->mutex);
	return requested;
}

/* Set the latch of the executors that are waiting for capacity. */
void
taskq_wake_capacity_waiters(void)
{
	Latch	   *latches[TASKQ_MAX_SLOTS];
	int			n = 0;

	SpinLockAcquire(&TaskqState->mutex);
	for (int i = 0; i < TASKQ_MAX_SLOTS; i++)
	{
		TaskqWorkerSlot *slot = &TaskqState->slots[i];

		if (slot->kind == TASKQ_SLOT_EXECUTOR && slot->wants_capacity)
		{
			slot->wants_capacity = false;
			slot->wake_requested = true;
			latches[n++] = slot->latch;
		}
	}
	SpinLockRelease(&TaskqState->mutex);
	for (int i = 0; i < n; i++)
		SetLatch(latches[i]);
}

/*
 * Is the extension installed in this database, with the schema this library
 * needs (schema_version.c)?  Needs a transaction.  Locks
 * the extension until the transaction ends: DROP EXTENSION locks it first,
 * so it waits for a worker's transaction instead of deadlocking with it.
 */
bool
taskq_extension_ready(void)
{
	static bool told_schema = false;
	Oid			ext = get_extension_oid("taskq", true);
	char	   *installed;

	if (!OidIsValid(ext))
		return false;
	LockDatabaseObject(ExtensionRelationId, ext, 0, AccessShareLock);
	/* dropped while we waited for the lock? */
	if (get_extension_oid("taskq", true) != ext)
		return false;
	if (!taskq_schema_is_current(ext, &installed))
	{
		/* said once per worker: the workers wait for the update */
		if (!told_schema)
			ereport(LOG,
					(errmsg("taskq: schema version %s in database \"%s\", library version %s: workers wait",
							installed, get_database_name(MyDatabaseId), TASKQ_SCHEMA_VERSION),
					 errhint("Run ALTER EXTENSION taskq UPDATE in that database.")));
		told_schema = true;
		return false;
	}
	return true;
}

/* An SPI plan kept for the session (SPI_prepare_cursor's cursor_options). */
SPIPlanPtr
taskq_prepare_kept(const char *sql, int nargs, Oid *argtypes, int cursor_options)
{
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes, cursor_options);

	if (plan == NULL)
		elog(ERROR, "taskq: SPI_prepare failed for \"%s\": %s",
			 sql, SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

void
taskq_wake_at_commit(void)
{
	wake_at_commit = true;
	taskq_request_commit_flush(TASKQ_FLUSH_AFTER_WAKE);
}

PG_FUNCTION_INFO_V1(taskq_wake_on_commit);
Datum
taskq_wake_on_commit(PG_FUNCTION_ARGS)
{
	taskq_wake_at_commit();
	PG_RETURN_VOID();
}

/*
 * Flag a job held by an executor for cancellation; true if the executor
 * holds it in a batch.  No signal is sent: the executor polls the flag of
 * the job it runs (executor.c), so a request can only ever stop that job,
 * never the one the executor has moved on to.  The ids are scanned under
 * the spinlock: at most two batches of TASKQ_MAX_BATCH, and cancels are rare.
 */
PG_FUNCTION_INFO_V1(taskq_request_cancel);
Datum
taskq_request_cancel(PG_FUNCTION_ARGS)
{
	int64		job_id = PG_GETARG_INT64(0);
	char	   *worker = text_to_cstring(PG_GETARG_TEXT_PP(1));
	bool		found = false;

	if (taskq_state() == NULL)
		PG_RETURN_BOOL(false);

	SpinLockAcquire(&TaskqState->mutex);
	for (int i = 0; i < TASKQ_MAX_SLOTS && !found; i++)
	{
		TaskqWorkerSlot *slot = &TaskqState->slots[i];

		if (slot->kind != TASKQ_SLOT_EXECUTOR || strcmp(slot->name, worker) != 0)
			continue;
		for (int b = 0; b < 2 && !found; b++)
		{
			TaskqHeldBatch *held = &TaskqState->held[i][b];

			for (int k = 0; k < held->n; k++)
				if (held->ids[k] == job_id)
				{
					held->cancel[k] = true;
					found = true;
					break;
				}
		}
		break;
	}
	SpinLockRelease(&TaskqState->mutex);
	PG_RETURN_BOOL(found);
}

/*
 * taskq._cancel_held(job_id) → integer: flag the job for cancel in whichever
 * executor's batch holds it, committed claim or not.  1: flagged (the
 * executor skips or interrupts it and records the cancel); 2: its handler
 * already succeeded in the batch, whose commit records that; 3: the batch's
 * outcomes are decided and being recorded (no handler runs: its commit
 * comes at once); 0: not held.  Never waits.
 */
PG_FUNCTION_INFO_V1(taskq_cancel_held);
Datum
taskq_cancel_held(PG_FUNCTION_ARGS)
{
	int64		job_id = PG_GETARG_INT64(0);
	int			found = 0;

	if (taskq_state() == NULL)
		PG_RETURN_INT32(0);

	/* one held batch at a time under the spinlock: each holds it briefly */
	for (int i = 0; i < TASKQ_MAX_SLOTS * 2 && found == 0; i++)
	{
		TaskqHeldBatch *held = &TaskqState->held[i / 2][i % 2];

		SpinLockAcquire(&TaskqState->mutex);
		if (TaskqState->slots[i / 2].kind == TASKQ_SLOT_EXECUTOR)
			for (int k = 0; k < held->n; k++)
				if (held->ids[k] == job_id)
				{
					if (held->done[k] == TASKQ_HELD_SUCCEEDED)
						found = 2;
					else if (held->done[k] == TASKQ_HELD_RECORDING)
						found = 3;
					else
					{
						held->cancel[k] = true;
						found = 1;
					}
					break;
				}
		SpinLockRelease(&TaskqState->mutex);
	}
	PG_RETURN_INT32(found);
}

PG_FUNCTION_INFO_V1(taskq_max_cpu_units_sql);
Datum
taskq_max_cpu_units_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(taskq_max_cpu_units);
}

PG_FUNCTION_INFO_V1(taskq_max_memory_mb_sql);
Datum
taskq_max_memory_mb_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(taskq_max_memory_mb);
}

PG_FUNCTION_INFO_V1(taskq_current_job_id);
Datum
taskq_current_job_id(PG_FUNCTION_ARGS)
{
	if (taskq_current_job == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(taskq_current_job);
}

/* The attempt number of the job whose handler runs here (NULL elsewhere). */
PG_FUNCTION_INFO_V1(taskq_current_attempt);
Datum
taskq_current_attempt(PG_FUNCTION_ARGS)
{
	if (taskq_current_job == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT32(taskq_current_job_attempt);
}

/* Is this an executor's claim that only locks its jobs?  (executor.c) */
PG_FUNCTION_INFO_V1(taskq_claim_defers_write);
Datum
taskq_claim_defers_write(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(taskq_claim_deferred);
}

PG_FUNCTION_INFO_V1(taskq_notify_queue_limit_sql);
Datum
taskq_notify_queue_limit_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_FLOAT8(taskq_notify_queue_limit);
}
