/*
 * databases.c: which databases taskq serves (taskq.databases, or the older
 * taskq.database as a list of one), the background-worker budget said at
 * startup, and how a backend finds the shared state of its database.
 *
 * Every served database has its own launcher, executors and shared state
 * (TaskqShared): worker slots, capacity, cancel flags and counters.  A
 * backend's state is the entry whose launcher connected to its database.
 *
 * Bad entries of taskq.databases (empty, duplicate, too long) are warned
 * about and skipped rather than rejected: a rejected PGC_POSTMASTER setting
 * would keep the whole server from starting.
 */
#include "postgres.h"

#include "commands/dbcommands.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "catalog/pg_type.h"

#include "taskq.h"

static char *taskq_database = NULL;
static char *taskq_databases = NULL;
static bool database_is_set = false;	/* taskq.database not at its default */
int			taskq_max_total_workers = 0;

/* the databases served, parsed in the postmaster and inherited */
static char served[TASKQ_MAX_DATABASES][NAMEDATALEN];
int			taskq_ndatabases = 0;

TaskqShared *TaskqDatabases = NULL;
TaskqShared *TaskqState = NULL;
static bool state_pinned = false;	/* a worker's is its database's, for good */

static bool
check_database(char **newval, void **extra, GucSource source)
{
	database_is_set = source > PGC_S_DEFAULT;
	return true;
}

void
taskq_define_database_gucs(void)
{
	DefineCustomStringVariable("taskq.database",
							   "Database in which taskq's background workers run (taskq.databases overrides it).",
							   NULL, &taskq_database, "postgres",
							   PGC_POSTMASTER, 0, check_database, NULL, NULL);
	DefineCustomStringVariable("taskq.databases",
							   "Comma-separated databases in which taskq's background workers run; empty: taskq.database.",
							   "Each database has its own launcher and taskq.workers executors.",
							   &taskq_databases, "",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("taskq.max_total_workers",
							"Most executors of all served databases together; 0: no cap but taskq.workers per database.",
							"Each database gets an equal share of the cap, at most taskq.workers.",
							&taskq_max_total_workers, 0, 0, TASKQ_MAX_DATABASES * TASKQ_MAX_EXECUTORS,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
}

/* Add one entry of the list, or say why it is skipped. */
static void
add_database(const char *name, int len, int position)
{
	char		buf[NAMEDATALEN];

	if (len == 0)
	{
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("taskq.databases: entry %d is empty, ignored", position),
				 errhint("Remove the extra comma from taskq.databases.")));
		return;
	}
	if (len >= NAMEDATALEN)
	{
		ereport(WARNING,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("taskq.databases: entry %d (\"%.*s...\") is longer than %d bytes, ignored",
						position, NAMEDATALEN - 1, name, NAMEDATALEN - 1),
				 errhint("A database name has at most %d bytes.", NAMEDATALEN - 1)));
		return;
	}
	memcpy(buf, name, len);
	buf[len] = '\0';
	for (int i = 0; i < taskq_ndatabases; i++)
		if (strcmp(served[i], buf) == 0)
		{
			ereport(WARNING,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("taskq.databases: database \"%s\" is listed more than once, served once",
							buf)));
			return;
		}
	if (taskq_ndatabases == TASKQ_MAX_DATABASES)
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("taskq.databases: more than %d databases, \"%s\" is not served",
						TASKQ_MAX_DATABASES, buf)));
		return;
	}
	strlcpy(served[taskq_ndatabases++], buf, NAMEDATALEN);
}

static void
parse_databases(void)
{
	const char *p = taskq_databases ? taskq_databases : "";
	int			position = 1;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\0')
	{
		/* the setting of taskq 0.1 */
		add_database(taskq_database, strlen(taskq_database), 1);
		return;
	}
	if (database_is_set)
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("taskq.database = \"%s\" is ignored: taskq.databases is set", taskq_database),
				 errdetail("taskq serves the databases of taskq.databases = \"%s\".", taskq_databases),
				 errhint("Remove taskq.database from the configuration.")));
	for (;;)
	{
		const char *end = strchr(p, ',');
		int			len = end ? end - p : strlen(p);

		while (len > 0 && (*p == ' ' || *p == '\t'))
			p++, len--;
		while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		add_database(p, len, position++);
		if (end == NULL)
			break;
		p = end + 1;
	}
	if (taskq_ndatabases == 0)
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("taskq.databases lists no database: taskq's background workers do not start")));
}

/* pg_cron's background workers: its scheduler, and its jobs when they run as workers */
static int
cron_workers(void)
{
	const char *libs = GetConfigOption("shared_preload_libraries", true, false);
	const char *bgw = GetConfigOption("cron.use_background_workers", true, false);
	const char *jobs = GetConfigOption("cron.max_running_jobs", true, false);
	bool		on = false;

	if (libs == NULL || strstr(libs, "pg_cron") == NULL)
		return 0;
	if (bgw == NULL || !parse_bool(bgw, &on) || !on)
		return 1;
	/* 32: pg_cron's default */
	return 1 + (jobs ? atoi(jobs) : 32);
}

/* Say at startup how many background workers taskq uses, and whether they fit. */
static void
report_budget(void)
{
	int			launchers = taskq_ndatabases;
	int			executors = taskq_ndatabases * taskq_workers;
	int			cron = cron_workers();
	int			total;
	int			all;

	if (taskq_max_total_workers > 0)
		executors = Min(executors, taskq_max_total_workers);
	total = launchers + executors;
	all = total + cron + max_parallel_workers;
	ereport(LOG,
			(errmsg_plural("taskq uses up to %d background workers: %d launcher and up to %d executors, for %d database",
						   "taskq uses up to %d background workers: %d launchers and up to %d executors, for %d databases",
						   taskq_ndatabases, total, launchers, executors, taskq_ndatabases)));
	if (taskq_max_total_workers > 0 && taskq_max_total_workers < taskq_ndatabases)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("taskq.max_total_workers = %d leaves %d of the %d databases without executors",
						taskq_max_total_workers, taskq_ndatabases - taskq_max_total_workers,
						taskq_ndatabases),
				 errhint("Raise taskq.max_total_workers to at least %d.", taskq_ndatabases)));
	if (total > max_worker_processes)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("taskq needs %d background workers, more than max_worker_processes = %d",
						total, max_worker_processes),
				 errdetail("Workers beyond it cannot start; their launchers retry with backoff."),
				 errhint("Raise max_worker_processes to at least %d (taskq %d, pg_cron %d, parallel workers %d), or lower taskq.workers or taskq.max_total_workers.",
						 all, total, cron, max_parallel_workers)));
	else if (all > max_worker_processes)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("taskq's %d background workers, pg_cron's %d and %d parallel workers do not fit max_worker_processes = %d",
						total, cron, max_parallel_workers, max_worker_processes),
				 errdetail("While all of them run, some get no background worker: an executor waits for one, a pg_cron job fails, a parallel query runs with fewer workers."),
				 errhint("Raise max_worker_processes to %d, or lower max_parallel_workers, cron.max_running_jobs, taskq.workers or taskq.max_total_workers.",
						 all)));
}

/* In the postmaster, once every GUC is defined. */
void
taskq_databases_init(void)
{
	parse_databases();
	report_budget();
}

Size
taskq_databases_shmem_size(void)
{
	return mul_size(Max(taskq_ndatabases, 1), sizeof(TaskqShared));
}

/* Called with AddinShmemInitLock held. */
void
taskq_databases_shmem_init(void)
{
	bool		found;
	TaskqShared *dbs = ShmemInitStruct("taskq", taskq_databases_shmem_size(), &found);

	TaskqDatabases = dbs;
	if (found)
		return;
	memset(dbs, 0, taskq_databases_shmem_size());
	for (int i = 0; i < taskq_ndatabases; i++)
	{
		TaskqShared *db = &dbs[i];

		SpinLockInit(&db->mutex);
		strlcpy(db->dbname, served[i], NAMEDATALEN);
		pg_atomic_init_u64(&db->claimed, 0);
		pg_atomic_init_u64(&db->succeeded, 0);
		pg_atomic_init_u64(&db->failed, 0);
		pg_atomic_init_u64(&db->retried, 0);
	}
}

/* A worker's state is that of the database it was started for. */
void
taskq_pin_state(int index)
{
	TaskqState = &TaskqDatabases[index];
	state_pinned = true;
}

/* The state of the served database whose launcher connected to dboid, or NULL. */
TaskqShared *
taskq_state_of(Oid dboid)
{
	TaskqShared *found = NULL;

	if (!OidIsValid(dboid) || TaskqDatabases == NULL)
		return NULL;
	for (int i = 0; i < taskq_ndatabases && found == NULL; i++)
	{
		TaskqShared *db = &TaskqDatabases[i];

		SpinLockAcquire(&db->mutex);
		if (db->dboid == dboid)
			found = db;
		SpinLockRelease(&db->mutex);
	}
	return found;
}

/*
 * The state of this backend's database, or NULL when no launcher serves it
 * (yet).  Once found it stays: a database cannot be dropped or renamed
 * while a session is connected to it.
 */
TaskqShared *
taskq_state(void)
{
	if (state_pinned || TaskqDatabases == NULL)
		return TaskqState;
	if (TaskqState == NULL || TaskqState->dboid != MyDatabaseId)
		TaskqState = taskq_state_of(MyDatabaseId);
	return TaskqState;
}

const char *
taskq_database_name(int index)
{
	return served[index];
}

/* The position of dbname in taskq.databases, or -1. */
int
taskq_database_index(const char *dbname)
{
	for (int i = 0; i < taskq_ndatabases; i++)
		if (strcmp(served[i], dbname) == 0)
			return i;
	return -1;
}

/*
 * How many executors the database at index runs: taskq.workers (which
 * ALTER DATABASE ... SET may set per database), at most its share of
 * taskq.max_total_workers.
 */
int
taskq_executors_wanted(int index)
{
	int			share;

	if (taskq_max_total_workers <= 0 || taskq_ndatabases == 0)
		return taskq_workers;
	share = taskq_max_total_workers / taskq_ndatabases +
		(index < taskq_max_total_workers % taskq_ndatabases ? 1 : 0);
	return Min(taskq_workers, share);
}

/* Wake the launchers waiting for their database to be created. */
void
taskq_wake_waiting_launchers(void)
{
	if (TaskqDatabases == NULL)
		return;
	for (int i = 0; i < taskq_ndatabases; i++)
	{
		TaskqShared *db = &TaskqDatabases[i];
		Latch	   *latch;

		SpinLockAcquire(&db->mutex);
		latch = db->waiting_latch;
		SpinLockRelease(&db->mutex);
		if (latch != NULL)
			SetLatch(latch);
	}
}

/* taskq._served_databases(): the databases taskq's workers serve */
PG_FUNCTION_INFO_V1(taskq_served_databases);
Datum
taskq_served_databases(PG_FUNCTION_ARGS)
{
	Datum		names[TASKQ_MAX_DATABASES];

	for (int i = 0; i < taskq_ndatabases; i++)
		names[i] = CStringGetTextDatum(served[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(names, taskq_ndatabases, TEXTOID, -1, false,
										  TYPALIGN_INT));
}

/* taskq._executors_wanted(): executors this database should have; 0 if not served */
PG_FUNCTION_INFO_V1(taskq_executors_wanted_sql);
Datum
taskq_executors_wanted_sql(PG_FUNCTION_ARGS)
{
	char	   *dbname = get_database_name(MyDatabaseId);
	int			index = dbname ? taskq_database_index(dbname) : -1;

	PG_RETURN_INT32(index < 0 ? 0 : taskq_executors_wanted(index));
}
