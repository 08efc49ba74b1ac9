/*
 * launcher.c: the launcher background worker, one per served database
 * (databases.c).  It keeps exactly taskq.workers executors running
 * (restarting dead ones with backoff, adopting those of a launcher before
 * it) and does the periodic upkeep: the job a crashed executor was running
 * is charged its attempt (crash_marks.c), jobs of dead executors and expired
 * leases go back to pending, priorities age, finished jobs past
 * taskq.retention are deleted, taskq.jobs is
 * vacuumed when its dead rows pile up (jobs_vacuum.c).  An error in a round
 * is logged and the launcher backs off; it never exits for one.  A served
 * database that does not exist is said once; its launcher then waits,
 * connected to no database, until it is created.
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "commands/dbcommands.h"
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
static int	my_index;			/* of my database in taskq.databases */
static bool told_share = false; /* that taskq.max_total_workers caps us */

/* while connecting: a missing database is said once, not as a FATAL */
static bool connecting = false;
static emit_log_hook_type prev_emit_log_hook = NULL;

/* the longest wait between two looks for a missing database */
#define TASKQ_MISSING_DB_MAX_WAIT_MS (5 * 60 * 1000)

/* executors this launcher started; a restarted launcher adopts the live ones */
static BackgroundWorkerHandle *started[TASKQ_MAX_EXECUTORS];
static int	executors_started = 0;	/* numbers their bgw_name */
static TimestampTz next_start_at = 0;
static int	start_failures = 0;
static int	upkeep_failures = 0;	/* in a row: the launcher backs off */
static MemoryContext loop_cxt = NULL;	/* reset every round */

static void
launcher_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

/* One launcher per served database; main_arg is its index. */
void
taskq_register_launchers(void)
{
	for (int i = 0; i < taskq_ndatabases; i++)
	{
		BackgroundWorker worker;

		memset(&worker, 0, sizeof(worker));
		worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		/* never on a standby: started when recovery ends, i.e. on promotion */
		worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
		worker.bgw_restart_time = 5;
		snprintf(worker.bgw_library_name, BGW_MAXLEN, "taskq");
		snprintf(worker.bgw_function_name, BGW_MAXLEN, "TaskqLauncherMain");
		snprintf(worker.bgw_name, BGW_MAXLEN, "taskq launcher for %s", taskq_database_name(i));
		snprintf(worker.bgw_type, BGW_MAXLEN, "taskq launcher");
		worker.bgw_main_arg = Int32GetDatum(i);
		RegisterBackgroundWorker(&worker);
	}
}

/* After a start (or a failed one) the next waits, doubling up to a minute. */
static void
delay_next_start(TimestampTz now)
{
	start_failures = Min(start_failures + 1, 10);
	next_start_at = now + (TimestampTz) Min(100L << start_failures, 60000L) * 1000;
}

static bool
start_executor(void)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	MemoryContext old;
	int			free_entry = -1;

	for (int i = 0; i < TASKQ_MAX_EXECUTORS && free_entry < 0; i++)
		if (started[i] == NULL)
			free_entry = i;
	if (free_entry < 0)
		return false;
	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "taskq");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "TaskqExecutorMain");
	snprintf(worker.bgw_name, BGW_MAXLEN, "taskq executor %d for %s", executors_started++,
			 TaskqState->dbname);
	snprintf(worker.bgw_type, BGW_MAXLEN, "taskq executor");
	/* the executor connects to this very database, even if renamed meanwhile */
	worker.bgw_main_arg = Int32GetDatum(my_index);
	memcpy(worker.bgw_extra, &MyDatabaseId, sizeof(Oid));
	worker.bgw_notify_pid = MyProcPid;
	old = MemoryContextSwitchTo(TopMemoryContext);
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		handle = NULL;
	MemoryContextSwitchTo(old);
	started[free_entry] = handle;
	return handle != NULL;
}

/*
 * Keep exactly taskq.workers executors (at most this database's share of
 * taskq.max_total_workers).  They are counted in shared memory,
 * whoever started them: a launcher restarted after an error or a SIGTERM
 * adopts the executors of the one before instead of starting a second set.
 * Executors asked to stop (retiring) no longer count; surplus ones are asked
 * to stop, idle ones first.  Every start delays the next one, doubling up to
 * a minute, until a full set has lived through the delay: executors that die
 * at once are restarted with backoff, not in a loop.
 */
static void
manage_executors(void)
{
	TimestampTz now = GetCurrentTimestamp();
	pid_t		all_pids[TASKQ_MAX_SLOTS];
	int			n_all = 0;
	int			active = 0;
	int			surplus;
	int			wanted = taskq_executors_wanted(my_index);

	if (wanted < taskq_workers && !told_share)
		ereport(LOG,
				(errmsg("taskq launcher: database \"%s\" runs %d executors, not taskq.workers = %d: its share of taskq.max_total_workers = %d",
						TaskqState->dbname, wanted, taskq_workers, taskq_max_total_workers)));
	told_share = wanted < taskq_workers;

	SpinLockAcquire(&TaskqState->mutex);
	for (int i = 0; i < TASKQ_MAX_SLOTS; i++)
	{
		TaskqWorkerSlot *slot = &TaskqState->slots[i];

		if (slot->kind != TASKQ_SLOT_EXECUTOR)
			continue;
		all_pids[n_all++] = slot->pid;
		if (!slot->retiring && slot->state != TASKQ_STATE_STOPPING)
			active++;
	}
	SpinLockRelease(&TaskqState->mutex);

	/* ours that are still starting count too; forget the dead */
	for (int i = 0; i < TASKQ_MAX_EXECUTORS; i++)
	{
		pid_t		pid = 0;
		BgwHandleStatus status;
		bool		in_slot = false;

		if (started[i] == NULL)
			continue;
		status = GetBackgroundWorkerPid(started[i], &pid);
		if (status == BGWH_STOPPED)
		{
			pfree(started[i]);
			started[i] = NULL;
			continue;
		}
		for (int k = 0; k < n_all && !in_slot; k++)
			in_slot = all_pids[k] == pid;
		if (!in_slot)
			active++;
	}

	surplus = active - wanted;
	if (surplus > 0)
	{
		pid_t		victims[TASKQ_MAX_SLOTS];
		int			n = 0;

		/* idle ones first, then any */
		SpinLockAcquire(&TaskqState->mutex);
		for (int pass = 0; pass < 2 && n < surplus; pass++)
			for (int i = 0; i < TASKQ_MAX_SLOTS && n < surplus; i++)
			{
				TaskqWorkerSlot *slot = &TaskqState->slots[i];

				if (slot->kind != TASKQ_SLOT_EXECUTOR || slot->retiring ||
					slot->state == TASKQ_STATE_STOPPING ||
					(pass == 0 && slot->state != TASKQ_STATE_IDLE))
					continue;
				slot->retiring = true;
				victims[n++] = slot->pid;
			}
		SpinLockRelease(&TaskqState->mutex);
		/* SIGTERM: running jobs get the shutdown grace */
		for (int i = 0; i < n; i++)
			kill(victims[i], SIGTERM);
		return;
	}
	if (surplus == 0)
	{
		/* a full set again: the next death starts the backoff anew */
		if (now >= next_start_at)
			start_failures = 0;
		return;
	}
	/* fewer than wanted: one died, was stopped by hand, or never started */
	if (now < next_start_at)
		return;
	for (int i = 0; i < -surplus; i++)
		if (!start_executor())
		{
			ereport(LOG,
					(errmsg("taskq launcher: could not start an executor"),
					 errhint("Raise max_worker_processes.")));
			delay_next_start(now);
			return;
		}
	/* should they die at once, the next ones wait */
	delay_next_start(now);
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

/*
 * Run one upkeep statement (its first column an integer) in a transaction of
 * its own; an error is logged and gives on_error.
 */
int64
taskq_upkeep_step(const char *what, const char *sql, int nargs, Oid *argtypes, Datum *args,
				  int64 on_error)
{
	int64		result = 0;
	MemoryContext caller_cxt = CurrentMemoryContext;

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
		result = on_error;
	}
	PG_END_TRY();
	/* a transaction's end leaves TopMemoryContext current */
	MemoryContextSwitchTo(caller_cxt);
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
	recovered = taskq_upkeep_step("recovering orphaned jobs",
								  "SELECT taskq._recover($1, $2)",
								  2, recover_types, recover_args, 0);
	if (recovered > 0)
	{
		ereport(LOG, (errmsg("taskq launcher: returned %lld orphaned jobs to the queue",
							 (long long) recovered)));
		taskq_wake_executors();
	}
	aged = taskq_upkeep_step("aging priorities", "SELECT taskq._age_priorities()",
							 0, NULL, NULL, 0);
	/*
	 * Batches of 20,000: at 500, and at 5,000 on a loaded machine, a queue of
	 * 15,000-20,000 jobs/s outran its purge (bench churn, bench/README.md).
	 */
	purged = taskq_upkeep_step("deleting old finished jobs", "SELECT taskq._purge_finished(20000)",
							   0, NULL, NULL, 0);
	/* claims, completions and the purge leave dead rows faster than autovacuum comes */
	taskq_vacuum_jobs_if_needed();
	taskq_set_slot_state(MySlot, TASKQ_STATE_IDLE, 0);
	return recovered >= 1000 || aged >= 1000 || purged >= 20000;
}

static bool
extension_ready(void)
{
	bool		ready;
	MemoryContext caller_cxt = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	ready = taskq_extension_ready();
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller_cxt);
	return ready;
}

/*
 * A database that cannot be connected to (not accepting connections, a
 * failing login hook...) makes the connection attempt FATAL and the
 * postmaster restarts us: wait 5 s, 10 s, ... up to 5 minutes between
 * attempts, so it costs a log line now and then, not a loop.
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

/*
 * While we connect, "database does not exist" is said once, as a WARNING
 * with a hint, then no more: the next start of this launcher waits for the
 * database (wait_for_database) instead of failing every few seconds.
 */
static void
connect_log_hook(ErrorData *edata)
{
	if (connecting && edata->elevel == FATAL &&
		edata->sqlerrcode == ERRCODE_UNDEFINED_DATABASE)
	{
		bool		told;

		SpinLockAcquire(&TaskqState->mutex);
		told = TaskqState->missing_told;
		TaskqState->missing = true;
		TaskqState->missing_told = true;
		TaskqState->dboid = InvalidOid;
		SpinLockRelease(&TaskqState->mutex);
		if (told)
			edata->output_to_server = false;
		else
		{
			MemoryContext old = MemoryContextSwitchTo(ErrorContext);

			/* the process still exits: errfinish acts on its own copy of elevel */
			edata->elevel = WARNING;
			edata->message = psprintf("taskq: database \"%s\" in taskq.databases does not exist",
									  TaskqState->dbname);
			edata->detail = psprintf("Its launcher looks for it again with backoff, up to every %d minutes, and serves it once it exists.",
									 TASKQ_MISSING_DB_MAX_WAIT_MS / 60000);
			edata->hint = pstrdup("Create the database, or remove it from taskq.databases (or taskq.database) and restart.");
			MemoryContextSwitchTo(old);
		}
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

static void
forget_waiting_latch(int code, Datum arg)
{
	SpinLockAcquire(&TaskqState->mutex);
	TaskqState->waiting_latch = NULL;
	SpinLockRelease(&TaskqState->mutex);
}

/*
 * Connected to no database (pg_database is shared), look for ours every 1,
 * 2, 4 s... up to 5 minutes, or when CREATE DATABASE or RENAME gives it
 * its name (database_guard.c sets our latch).  Once it exists, exit: the
 * postmaster restarts us and we connect to it.
 */
static void
wait_for_database(void)
{
	long		wait_ms = 1000;

	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	SpinLockAcquire(&TaskqState->mutex);
	TaskqState->waiting_latch = MyLatch;
	SpinLockRelease(&TaskqState->mutex);
	on_shmem_exit(forget_waiting_latch, 0);
	pgstat_report_activity(STATE_IDLE, "waiting for the database to be created");

	while (!got_sigterm)
	{
		Oid			dboid;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		dboid = get_database_oid(TaskqState->dbname, true);
		CommitTransactionCommand();
		if (OidIsValid(dboid))
		{
			ereport(LOG,
					(errmsg("taskq launcher: database \"%s\" exists now: its launcher restarts to serve it",
							TaskqState->dbname)));
			SpinLockAcquire(&TaskqState->mutex);
			TaskqState->missing = false;
			TaskqState->missing_told = false;
			TaskqState->connect_failures = 0;
			SpinLockRelease(&TaskqState->mutex);
			break;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 wait_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		wait_ms = Min(wait_ms * 2, TASKQ_MISSING_DB_MAX_WAIT_MS);
	}
	proc_exit(1);
}

void
TaskqLauncherMain(Datum main_arg)
{
	bool		missing;

	my_index = DatumGetInt32(main_arg);
	taskq_pin_state(my_index);
	pqsignal(SIGTERM, launcher_sigterm);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	SpinLockAcquire(&TaskqState->mutex);
	missing = TaskqState->missing;
	SpinLockRelease(&TaskqState->mutex);
	if (missing)
		wait_for_database();	/* does not return */

	wait_before_connecting();
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = connect_log_hook;
	connecting = true;
	BackgroundWorkerInitializeConnection(TaskqState->dbname, NULL, 0);
	connecting = false;
	emit_log_hook = prev_emit_log_hook;
	SetConfigOption("default_transaction_isolation", "read committed",
					PGC_SUSET, PGC_S_OVERRIDE);
	SpinLockAcquire(&TaskqState->mutex);
	TaskqState->connect_failures = 0;
	TaskqState->stop_now = false;
	TaskqState->missing_told = false;
	TaskqState->dboid = MyDatabaseId;
	SpinLockRelease(&TaskqState->mutex);
	MySlot = taskq_attach_slot(TASKQ_SLOT_LAUNCHER, "launcher");
	pgstat_report_appname("taskq launcher");

	loop_cxt = AllocSetContextCreate(TopMemoryContext, "taskq launcher round",
									 ALLOCSET_DEFAULT_SIZES);

	while (!got_sigterm)
	{
		long		sleep_ms = taskq_poll_interval_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			taskq_wake_executors();
		}
		MemoryContextReset(loop_cxt);
		MemoryContextSwitchTo(loop_cxt);
		PG_TRY();
		{
			bool		more = false;

			taskq_sample_counters();
			if (extension_ready())
			{
				/* before any executor may claim the jobs they name */
				if (taskq_charge_crash_marks() > 0)
					taskq_wake_executors();
				manage_executors();
				more = upkeep();
			}
			else
				taskq_set_slot_state(MySlot, TASKQ_STATE_WAITING, 0);
			/* our deletes must reach autovacuum: a bgworker flushes its own stats */
			pgstat_report_stat(false);
			upkeep_failures = 0;
			if (more)
				sleep_ms = 0;
		}
		PG_CATCH();
		{
			/*
			 * An error (out of shared memory, a lock timeout...) must not end
			 * the launcher: log it, clean up as PostgreSQL's own workers do,
			 * back off and go on.
			 */
			HOLD_INTERRUPTS();
			EmitErrorReport();
			AbortCurrentTransaction();
			MemoryContextSwitchTo(loop_cxt);
			FlushErrorState();
			RESUME_INTERRUPTS();
			upkeep_failures = Min(upkeep_failures + 1, 10);
			sleep_ms = Min((long) taskq_poll_interval_ms << upkeep_failures, 60000L);
			ereport(LOG,
					(errmsg("taskq launcher: upkeep failed, retrying in %ld ms", sleep_ms)));
			taskq_set_slot_state(MySlot, TASKQ_STATE_IDLE, 0);
		}
		PG_END_TRY();
		MemoryContextSwitchTo(TopMemoryContext);

		if (sleep_ms > 0)
		{
			TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), sleep_ms);

			/* a backoff lasts out its time: only SIGTERM or SIGHUP cut it short */
			do
			{
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 sleep_ms, PG_WAIT_EXTENSION);
				ResetLatch(MyLatch);
				sleep_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);
			} while (upkeep_failures > 0 && sleep_ms > 0 && !got_sigterm &&
					 !ConfigReloadPending);
		}
	}
	/* exit code 1: the postmaster restarts us unless it is shutting down */
	proc_exit(1);
}
