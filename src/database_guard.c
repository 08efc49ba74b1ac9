/*
 * database_guard.c: keeps taskq's workers from blocking DROP DATABASE and
 * ALTER DATABASE ... RENAME of taskq.database.
 *
 * Both commands refuse to run while other sessions are connected to the
 * database.  taskq's ProcessUtility hook (taskq.c; in every backend, since
 * taskq is in shared_preload_libraries) stops the workers first: they are told to stop
 * now, without the shutdown grace, and the command waits (a few seconds at
 * most) until they are gone.  The launcher then fails to reconnect and backs
 * off (see launcher.c) until the database exists again.
 */
#include "postgres.h"

#include <signal.h>

#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/wait_event.h"

#include "taskq.h"

/* SIGTERM every taskq worker and wait up to 10 s for them to exit. */
static void
stop_workers(void)
{
	pid_t		pids[TASKQ_MAX_SLOTS];
	int			n = 0;

	SpinLockAcquire(&TaskqState->mutex);
	TaskqState->stop_now = true;
	for (int i = 0; i < TASKQ_MAX_SLOTS; i++)
		if (TaskqState->slots[i].kind != TASKQ_SLOT_FREE)
			pids[n++] = TaskqState->slots[i].pid;
	SpinLockRelease(&TaskqState->mutex);

	for (int i = 0; i < n; i++)
		kill(pids[i], SIGTERM);

	for (int waited_ms = 0; n > 0 && waited_ms < 10000; waited_ms += 20)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 20, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		n = 0;
		SpinLockAcquire(&TaskqState->mutex);
		for (int i = 0; i < TASKQ_MAX_SLOTS; i++)
			if (TaskqState->slots[i].kind != TASKQ_SLOT_FREE)
				n++;
		SpinLockRelease(&TaskqState->mutex);
	}
}

/* Before DROP DATABASE or RENAME of taskq.database runs, stop the workers. */
void
taskq_guard_database(Node *stmt)
{
	const char *dbname = NULL;

	if (IsA(stmt, DropdbStmt))
		dbname = ((DropdbStmt *) stmt)->dbname;
	else if (IsA(stmt, RenameStmt) && ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
		dbname = ((RenameStmt *) stmt)->subname;

	if (dbname != NULL && TaskqState != NULL && taskq_database != NULL &&
		strcmp(dbname, taskq_database) == 0)
		stop_workers();
}
