/*
 * crash_marks.c: which job an executor's handler is running, kept where a
 * crash cannot erase it.
 *
 * An executor claims, runs and completes a batch in one transaction, so a
 * crash rolls its claim back and its jobs are simply pending again, no
 * attempt counted.  The job whose handler was running must still be charged
 * one, or a handler that kills its backend every time would loop forever:
 * before each handler the executor writes the job's id (with its attempts
 * before the claim) to a small file of its own, pg_taskq/<db oid>.<pid>.<start>,
 * with a plain write and no fsync (the page cache outlives the process; a
 * crash of the machine loses the mark, and then one attempt).  The launcher
 * charges the job a dead executor's file names (taskq._charge_crashed, fenced
 * on the attempts, so never twice and never a job whose outcome committed),
 * only that job: its batch-mates are not charged.
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "taskq.h"

#define CRASH_MARK_DIR "pg_taskq"

/* what a file holds: the job being run, or zeros */
typedef struct CrashMark
{
	int64		job_id;
	int32		attempts;		/* the job's attempts before this claim */
	int32		unused;
	TimestampTz started;
} CrashMark;

static int	mark_fd = -1;
static char mark_path[MAXPGPATH];
static bool mark_set = false;

static void
mark_file_path(char *path, Oid dboid, const char *worker)
{
	/* worker names are "executor/<pid>.<start>" */
	const char *tail = strchr(worker, '/');

	snprintf(path, MAXPGPATH, "%s/%u.%s", CRASH_MARK_DIR, dboid, tail ? tail + 1 : worker);
}

/* Executor: create this executor's file (empty: no job running). */
void
taskq_crash_mark_open(const char *worker)
{
	if (MakePGDirectory(CRASH_MARK_DIR) < 0 && errno != EEXIST)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create directory \"%s\": %m", CRASH_MARK_DIR)));
	mark_file_path(mark_path, MyDatabaseId, worker);
	mark_fd = BasicOpenFile(mark_path, O_RDWR | O_CREAT | O_TRUNC | PG_BINARY);
	if (mark_fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create file \"%s\": %m", mark_path)));
}

static void
write_mark(const CrashMark *mark)
{
	if (mark_fd < 0)
		return;
	/* no fsync: the mark must survive the process, not the machine */
	if (pg_pwrite(mark_fd, mark, sizeof(*mark), 0) != sizeof(*mark))
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", mark_path)));
}

/* Executor: the handler of job_id is about to run. */
void
taskq_crash_mark_set(int64 job_id, int32 attempts_before, TimestampTz started)
{
	CrashMark	mark = {job_id, attempts_before, 0, started};

	write_mark(&mark);
	mark_set = true;
}

/* Executor: no handler runs any more. */
void
taskq_crash_mark_clear(void)
{
	CrashMark	mark = {0};

	if (!mark_set)
		return;
	write_mark(&mark);
	mark_set = false;
}

/* Executor, at exit once its batch is recorded: the file goes. */
void
taskq_crash_mark_remove(void)
{
	if (mark_fd < 0)
		return;
	close(mark_fd);
	mark_fd = -1;
	(void) unlink(mark_path);
}

/* Is an executor of that name attached to a slot of our database now? */
static bool
executor_alive(const char *worker)
{
	bool		alive = false;

	SpinLockAcquire(&TaskqState->mutex);
	for (int i = 0; i < TASKQ_MAX_SLOTS && !alive; i++)
		alive = TaskqState->slots[i].kind == TASKQ_SLOT_EXECUTOR &&
			strcmp(TaskqState->slots[i].name, worker) == 0;
	SpinLockRelease(&TaskqState->mutex);
	return alive;
}

/*
 * Charge the job a mark names: 1 charged, 0 nothing to charge (its outcome
 * committed, or it was charged already), -1 its row was locked (ask again).
 */
static int
charge_mark(const CrashMark *mark, const char *worker)
{
	Oid			types[5] = {INT8OID, INT4OID, TIMESTAMPTZOID, TEXTOID, TEXTOID};
	Datum		args[5];

	args[0] = Int64GetDatum(mark->job_id);
	args[1] = Int32GetDatum(mark->attempts);
	args[2] = TimestampTzGetDatum(mark->started);
	args[3] = CStringGetTextDatum(worker);
	args[4] = CStringGetTextDatum(psprintf("executor %s died while running the job", worker));
	return (int) taskq_upkeep_step("charging the job of a crashed executor",
								   "SELECT taskq._charge_crashed($1, $2, $3, $4, $5)",
								   5, types, args, -1);
}

/*
 * Launcher: charge the jobs named by the files of executors of our database
 * that are gone, and remove those files.  The directory is read before the
 * executors are looked up: an executor attaches its slot before it creates
 * its file, so a file read whose executor is not attached is a dead one's.
 * Returns how many jobs were charged.
 */
int
taskq_charge_crash_marks(void)
{
	DIR		   *dir;
	struct dirent *de;
	List	   *files = NIL;
	ListCell   *lc;
	char		prefix[32];
	int			n = 0;

	dir = AllocateDir(CRASH_MARK_DIR);
	if (dir == NULL)
		return 0;				/* no executor ever ran here */
	snprintf(prefix, sizeof(prefix), "%u.", MyDatabaseId);
	while ((de = ReadDir(dir, CRASH_MARK_DIR)) != NULL)
		if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
			files = lappend(files, pstrdup(de->d_name + strlen(prefix)));
	FreeDir(dir);

	foreach(lc, files)
	{
		char	   *worker = psprintf("executor/%s", (char *) lfirst(lc));
		char		path[MAXPGPATH];
		CrashMark	mark = {0};
		int			fd;
		ssize_t		got;

		if (executor_alive(worker))
			continue;
		mark_file_path(path, MyDatabaseId, worker);
		fd = BasicOpenFile(path, O_RDONLY | PG_BINARY);
		if (fd < 0)
			continue;
		got = read(fd, &mark, sizeof(mark));
		close(fd);
		if (got == sizeof(mark) && mark.job_id != 0)
		{
			int			charged = charge_mark(&mark, worker);

			if (charged < 0)
				continue;		/* locked or failed: next round */
			if (charged > 0)
			{
				n++;
				ereport(LOG,
						(errmsg("taskq launcher: charged an attempt to job %lld, whose handler was running when executor %s died",
								(long long) mark.job_id, worker)));
			}
		}
		if (unlink(path) < 0 && errno != ENOENT)
			ereport(LOG,
					(errcode_for_file_access(),
					 errmsg("could not remove file \"%s\": %m", path)));
	}
	return n;
}
