/*
 * taskq.c: module load (_PG_init), the GUCs and their getters for SQL, the
 * one place that sets up every module's shared memory, the one transaction
 * and subtransaction callback that call each module's phase in order, and
 * the ProcessUtility hook.
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
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
static int	taskq_throttle_warn_after_s = 300;

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

/* loaded by shared_preload_libraries (listeners.c's shared memory exists) */
static bool preloaded = false;

void		_PG_init(void);

/*
 * Every shared-memory area, each owned by its module (size and set-up), in
 * the order they are set up.  Only when preloaded.
 */
typedef struct TaskqShmemArea
{
	Size		(*size) (void);
	void		(*request_locks) (void);	/* named LWLock tranches, or NULL */
	void		(*init) (void);
} TaskqShmemArea;

static const TaskqShmemArea shmem_areas[] = {
	{taskq_databases_shmem_size, NULL, taskq_databases_shmem_init},
	{taskq_scan_floors_shmem_size, taskq_scan_floors_shmem_request, taskq_scan_floors_shmem_init},
	{taskq_listeners_shmem_size, NULL, taskq_listeners_shmem_init},
	{taskq_job_metrics_shmem_size, NULL, taskq_job_metrics_shmem_init},
	{taskq_rate_buckets_shmem_size, taskq_rate_buckets_shmem_request, taskq_rate_buckets_shmem_init},
};

static void
taskq_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	for (int i = 0; i < lengthof(shmem_areas); i++)
	{
		RequestAddinShmemSpace(MAXALIGN(shmem_areas[i].size()));
		if (shmem_areas[i].request_locks)
			shmem_areas[i].request_locks();
	}
}

static void
taskq_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	for (int i = 0; i < lengthof(shmem_areas); i++)
		shmem_areas[i].init();
	LWLockRelease(AddinShmemInitLock);
}

/* taskq.c's own transaction phase: scan floors, job metrics, wake-up, database guard */
static void
taskq_own_xact(XactEvent event)
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

/*
 * The one transaction callback: each module's phase, in this order.
 * listeners.c first: at PRE_COMMIT it sends (or drops) the held
 * notifications, which settles whether this commit publishes;
 * commit_flush.c next, which decides from that whether to lower
 * synchronous_commit; taskq.c's own phase last (the order the three
 * separately registered callbacks ran in).  listeners.c has shared memory
 * only when preloaded: otherwise it holds nothing and is not called.
 */
static void
taskq_xact_callback(XactEvent event, void *arg)
{
	if (preloaded)
		taskq_listeners_xact(event);
	taskq_commit_flush_xact(event);
	taskq_own_xact(event);
}

/* The one subtransaction callback: listeners.c, then taskq.c's own phase. */
static void
taskq_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	if (preloaded)
		taskq_listeners_subxact(event);
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		taskq_scan_floors_at_subabort();
		taskq_job_metrics_at_subabort(mySubid);
	}
}

/* After the locks are released: commit_flush.c flushes a deferred commit. */
static void
taskq_release_callback(ResourceReleasePhase phase, bool isCommit, bool isTopLevel,
					   void *arg)
{
	taskq_commit_flush_release(phase, isCommit, isTopLevel);
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
	DefineCustomIntVariable("taskq.throttle_warn_after",
							"health() warns when a rate limit has throttled every claim of a queue with due jobs for longer than this.",
							NULL, &taskq_throttle_warn_after_s, 300, 1, INT_MAX / 1000,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
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
	preloaded = process_shared_preload_libraries_in_progress;
	RegisterXactCallback(taskq_xact_callback, NULL);
	RegisterSubXactCallback(taskq_subxact_callback, NULL);
	RegisterResourceReleaseCallback(taskq_release_callback, NULL);

	if (!preloaded)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = taskq_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = taskq_shmem_startup;

	taskq_databases_init();
	taskq_register_launchers();
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = taskq_process_utility;
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

/*
 * The GUCs SQL needs, typed, so that a default is written once (above, in
 * define_gucs).  An interval is read as current_setting() shows it, units
 * and all ('7d' is 7 days, not 168 hours), as the SQL did before.
 */
static Datum
setting_interval(const char *name)
{
	char	   *shown = GetConfigOptionByName(name, NULL, false);

	return DirectFunctionCall3(interval_in, CStringGetDatum(shown),
							   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
}

PG_FUNCTION_INFO_V1(taskq_workers_sql);
Datum
taskq_workers_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(taskq_workers);
}

/* a job's backoff when it names none */
Datum
taskq_default_backoff(void)
{
	return setting_interval("taskq.backoff_base");
}

/* an SQL function returning the interval GUC guc */
#define INTERVAL_SETTING_SQL(fn, guc) \
PG_FUNCTION_INFO_V1(fn); \
Datum \
fn(PG_FUNCTION_ARGS) \
{ \
	return setting_interval(guc); \
}

INTERVAL_SETTING_SQL(taskq_backoff_base_sql, "taskq.backoff_base")
INTERVAL_SETTING_SQL(taskq_backoff_max_sql, "taskq.backoff_max")
INTERVAL_SETTING_SQL(taskq_aging_interval_sql, "taskq.aging_interval")
INTERVAL_SETTING_SQL(taskq_big_job_wait_sql, "taskq.big_job_wait")
INTERVAL_SETTING_SQL(taskq_retention_sql, "taskq.retention")
INTERVAL_SETTING_SQL(taskq_throttle_warn_after_sql, "taskq.throttle_warn_after")
