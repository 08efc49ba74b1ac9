/*
 * database_guard.c: keeps taskq's workers from blocking DROP DATABASE and
 * ALTER DATABASE ... RENAME of taskq.database.
 *
 * Both commands refuse to run while other sessions are connected to the
 * database.  taskq's ProcessUtility hook (taskq.c; in every backend, since
 * taskq is in shared_preload_libraries) stops the workers first, but only
 * for a statement that will run (its caller owns the database; DROP outside
 * a transaction block): they are told to stop now, without the shutdown
 * grace, and the command waits (a few seconds at most) until they are gone.  The launcher then fails to reconnect and backs
 * off (see launcher.c) until the database exists again.
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/acl.h"
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

/*
 * Will this DROP DATABASE or ALTER DATABASE ... RENAME really run?  The
 * checks PostgreSQL makes before it looks for other sessions, in dropdb()
 * and RenameDatabase(), so that a statement doomed to fail (a non-owner's,
 * or one inside a transaction block) cannot stop the workers and cancel
 * their running jobs without their grace.
 */
static bool
will_run(Node *stmt, const char *dbname, bool top_level)
{
	Oid			dboid = get_database_oid(dbname, true);

	if (!OidIsValid(dboid) || dboid == MyDatabaseId ||
		!object_ownercheck(DatabaseRelationId, dboid, GetUserId()))
		return false;
	if (IsA(stmt, DropdbStmt))
		/* what PreventInTransactionBlock("DROP DATABASE") refuses */
		return top_level && !IsTransactionBlock() && !IsSubTransaction() &&
			!(MyXactFlags & XACT_FLAGS_PIPELINING);
	return have_createdb_privilege() &&
		!OidIsValid(get_database_oid(((RenameStmt *) stmt)->newname, true));
}

/* Before DROP DATABASE or RENAME of taskq.database runs, stop the workers. */
void
taskq_guard_database(Node *stmt, bool top_level)
{
	const char *dbname = NULL;

	if (IsA(stmt, DropdbStmt))
		dbname = ((DropdbStmt *) stmt)->dbname;
	else if (IsA(stmt, RenameStmt) && ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
		dbname = ((RenameStmt *) stmt)->subname;

	if (dbname != NULL && TaskqState != NULL && taskq_database != NULL &&
		strcmp(dbname, taskq_database) == 0 && will_run(stmt, dbname, top_level))
		stop_workers();
}
