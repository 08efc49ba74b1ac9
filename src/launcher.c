/*
 * launcher.c: the launcher background worker.  It keeps taskq.workers
 * executors running (restarting dead ones with backoff) and does the
 * periodic upkeep: jobs of dead executors and expired leases go back to
 * pending, priorities age, finished jobs past taskq.retention are deleted.
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "catalog/pg_type.h"

#include "taskq.h"

static volatile sig_atomic_t got_sigterm = false;
static TaskqWorkerSlot *MySlot = NULL;

static BackgroundWorkerHandle *executors[TASKQ_MAX_EXECUTORS];
static TimestampTz next_start_at = 0;
static int	start_failures = 0;

static void
launcher_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

void
taskq_register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* never on a standby: started when recovery ends, i.e. on promotion */
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "taskq");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "TaskqLauncherMain");
	snprintf(worker.bgw_name, BGW_MAXLEN, "taskq launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "taskq launcher");
	RegisterBackgroundWorker(&worker);
}

static bool
executor_alive(int i)
{
	pid_t		pid;

	return executors[i] != NULL &&
		GetBackgroundWorkerPid(executors[i], &pid) != BGWH_STOPPED;
}

/*
 * Start missing executors and stop surplus ones.  A failed start (or an
 * executor that died) delays the next start, doubling up to a minute.
 */
static void
manage_executors(void)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		all_alive = true;

	for (int i = 0; i < TASKQ_MAX_EXECUTORS; i++)
	{
		bool		alive = executor_alive(i);

		if (i >= taskq_workers)
		{
			if (alive)
				TerminateBackgroundWorker(executors[i]);
			continue;
		}
		if (alive)
			continue;
		all_alive = false;
		if (executors[i] != NULL)
		{
			/* it died: back off before restarting */
			pfree(executors[i]);
			executors[i] = NULL;
			start_failures = Min(start_failures + 1, 10);
			next_start_at = now + (TimestampTz) Min(100L << start_failures, 60000L) * 1000;
		}
		if (now < next_start_at)
			continue;
		{
			BackgroundWorker worker;
			BackgroundWorkerHandle *handle;
			MemoryContext old;
			bool		registered;

			memset(&worker, 0, sizeof(worker));
			worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
			worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
			worker.bgw_restart_time = BGW_NEVER_RESTART;
			snprintf(worker.bgw_library_name, BGW_MAXLEN, "taskq");
			snprintf(worker.bgw_function_name, BGW_MAXLEN, "TaskqExecutorMain");
			snprintf(worker.bgw_name, BGW_MAXLEN, "taskq executor %d", i);
			snprintf(worker.bgw_type, BGW_MAXLEN, "taskq executor");
			worker.bgw_notify_pid = MyProcPid;
			old = MemoryContextSwitchTo(TopMemoryContext);
			registered = RegisterDynamicBackgroundWorker(&worker, &handle);
			MemoryContextSwitchTo(old);
			if (registered)
				executors[i] = handle;
			else
			{
				start_failures = Min(start_failures + 1, 10);
				next_start_at = now + (TimestampTz) Min(100L << start_failures, 60000L) * 1000;
				ereport(LOG,
						(errmsg("taskq launcher: could not start an executor"),
						 errhint("Raise max_worker_processes.")));
				break;
			}
		}
	}
	/* a full set of executors again: the next death starts the backoff anew */
	if (all_alive && now >= next_start_at)
		start_failures = 0;
}

/* Worker names of the executors alive now. */
static Datum
live_executor_names(void)
{
	Datum		names[TASKQ_MAX_SLOTS];
	char		buf[TASKQ_MAX_SLOTS][NAMEDATALEN];
	int			n = 0;

	SpinLockAcquire(&TaskqState->mutex);
	for (int i = 0; i < TASKQ_MAX_SLOTS; i++)
		if (TaskqState->slots[i].kind == TASKQ_SLOT_EXECUTOR)
			memcpy(buf[n++], TaskqState->slots[i].name, NAMEDATALEN);
	SpinLockRelease(&TaskqState->mutex);

	for (int i = 0; i < n; i++)
		names[i] = CStringGetTextDatum(buf[i]);
	return PointerGetDatum(construct_array(names, n, TEXTOID, -1, false, TYPALIGN_INT));
}

static int64
run_upkeep_step(const char *what, const char *sql, int nargs, Oid *argtypes, Datum *args)
{
	int64		result = 0;

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, what);
		if (taskq_extension_ready())
		{
			bool		isnull;

			if (SPI_execute_with_args(sql, nargs, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
				elog(ERROR, "taskq launcher: %s failed", what);
			result = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 1, &isnull));
		}
		PopActiveSnapshot();
		SPI_finish();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG, (errmsg("taskq launcher: %s failed: %s", what, edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	return result;
}

/* Upkeep; returns true if there is more to do right away. */
static bool
upkeep(void)
{
	Oid			recover_types[2] = {TEXTARRAYOID, TIMESTAMPTZOID};
	Datum		recover_args[2];
	int64		recovered;
	int64		aged;
	int64		purged;

	taskq_set_slot_state(MySlot, TASKQ_STATE_MAINTAINING, 0);
	/* taken before listing executors: a job claimed after it is never "orphaned" */
	recover_args[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	recover_args[0] = live_executor_names();
	recovered = run_upkeep_step("recovering orphaned jobs",
								"SELECT taskq._recover($1, $2)",
								2, recover_types, recover_args);
	if (recovered > 0)
	{
		ereport(LOG, (errmsg("taskq launcher: returned %lld orphaned jobs to the queue",
							 (long long) recovered)));
		taskq_wake_executors();
	}
	aged = run_upkeep_step("aging priorities", "SELECT taskq._age_priorities()",
						   0, NULL, NULL);
	purged = run_upkeep_step("deleting old finished jobs", "SELECT taskq._purge_finished()",
							 0, NULL, NULL);
	taskq_set_slot_state(MySlot, TASKQ_STATE_IDLE, 0);
	return recovered >= 1000 || aged >= 1000 || purged >= 500;
}

static bool
extension_ready(void)
{
	bool		ready;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	ready = taskq_extension_ready();
	CommitTransactionCommand();
	return ready;
}

/*
 * A missing database makes the connection attempt FATAL and the postmaster
 * restarts us: wait 5 s, 10 s, ... up to 5 minutes between attempts, so a
 * dropped or renamed database costs a log line now and then, not a loop.
 */
static void
wait_before_connecting(void)
{
	int			failures;

	SpinLockAcquire(&TaskqState->mutex);
	failures = TaskqState->connect_failures++;
	SpinLockRelease(&TaskqState->mutex);
	if (failures > 0)
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(5000L << Min(failures - 1, 6), 300000L), PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

void
TaskqLauncherMain(Datum main_arg)
{
	pqsignal(SIGTERM, launcher_sigterm);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	wait_before_connecting();
	BackgroundWorkerInitializeConnection(taskq_database, NULL, 0);
	SetConfigOption("default_transaction_isolation", "read committed",
					PGC_SUSET, PGC_S_OVERRIDE);
	SpinLockAcquire(&TaskqState->mutex);
	TaskqState->connect_failures = 0;
	TaskqState->stop_now = false;
	SpinLockRelease(&TaskqState->mutex);
	MySlot = taskq_attach_slot(TASKQ_SLOT_LAUNCHER, "launcher");
	pgstat_report_appname("taskq launcher");

	while (!got_sigterm)
	{
		bool		more = false;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			taskq_wake_executors();
		}
		taskq_sample_counters();
		if (extension_ready())
		{
			manage_executors();
			more = upkeep();
		}
		else
			taskq_set_slot_state(MySlot, TASKQ_STATE_WAITING, 0);
		/* our deletes must reach autovacuum: a bgworker flushes its own stats */
		pgstat_report_stat(false);

		if (!more)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 taskq_poll_interval_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}
	/* exit code 1: the postmaster restarts us unless it is shutting down */
	proc_exit(1);
}
