/*
 * database_guard.c: keeps taskq's workers from blocking DROP DATABASE and
 * ALTER DATABASE ... RENAME of a served database (taskq.databases), and
 * wakes the launcher waiting for a served database that CREATE DATABASE or
 * RENAME brings into existence.
 *
 * Both commands refuse to run while other sessions are connected to the
 * database.  taskq's ProcessUtility hook (taskq.c; in every backend, since
 * taskq is in shared_preload_libraries) stops the workers first, but only
 * for a statement that will run (its caller owns the database; DROP outside
 * a transaction block): they are told to stop now, without the shutdown
 * grace, and the command waits (a few seconds at most) until they are gone.
 * Only that database's workers stop.  Its launcher then finds the database
 * missing and waits (launcher.c) until it exists again.
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

/* a CREATE DATABASE or RENAME made a served database exist: wake at commit */
static bool wake_launchers = false;

/* SIGTERM the workers of database db and wait up to 10 s for them to exit. */
static void
stop_workers(TaskqShared *db)
{
	pid_t		pids[TASKQ_MAX_SLOTS];
	int			n = 0;

	SpinLockAcquire(&db->mutex);
	db->stop_now = true;
	for (int i = 0; i < TASKQ_MAX_SLOTS; i++)
		if (db->slots[i].kind != TASKQ_SLOT_FREE)
			pids[n++] = db->slots[i].pid;
	SpinLockRelease(&db->mutex);

	for (int i = 0; i < n; i++)
		kill(pids[i], SIGTERM);

	for (int waited_ms = 0; n > 0 && waited_ms < 10000; waited_ms += 20)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 20, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		n = 0;
		SpinLockAcquire(&db->mutex);
		for (int i = 0; i < TASKQ_MAX_SLOTS; i++)
			if (db->slots[i].kind != TASKQ_SLOT_FREE)
				n++;
		SpinLockRelease(&db->mutex);
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

/*
 * Before DROP DATABASE or RENAME of a served database runs, stop its
 * workers.  Before CREATE DATABASE or RENAME to a served name, note to wake
 * the launchers waiting for their database.
 */
void
taskq_guard_database(Node *stmt, bool top_level)
{
	const char *dbname = NULL;
	const char *newname = NULL;
	TaskqShared *db;

	if (TaskqDatabases == NULL)
		return;
	if (IsA(stmt, DropdbStmt))
		dbname = ((DropdbStmt *) stmt)->dbname;
	else if (IsA(stmt, RenameStmt) && ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
	{
		dbname = ((RenameStmt *) stmt)->subname;
		newname = ((RenameStmt *) stmt)->newname;
	}
	else if (IsA(stmt, CreatedbStmt))
		newname = ((CreatedbStmt *) stmt)->dbname;

	if (newname != NULL && taskq_database_index(newname) >= 0)
		wake_launchers = true;
	if (dbname == NULL)
		return;
	db = taskq_state_of(get_database_oid(dbname, true));
	if (db != NULL && will_run(stmt, dbname, top_level))
		stop_workers(db);
}

/* At the end of a transaction: wake the waiting launchers if it created their database. */
void
taskq_database_guard_at_commit(bool commit)
{
	if (wake_launchers && commit)
		taskq_wake_waiting_launchers();
	wake_launchers = false;
}
