/*
 * cron_cleanup.c: DROP EXTENSION taskq removes the pg_cron jobs of taskq's
 * schedules, which would otherwise fail every time they fire.
 *
 * pg_cron's jobs are rows of cron.job, which no extension can own, and an
 * event trigger of the extension is dropped before sql_drop would fire it:
 * so taskq's ProcessUtility hook (taskq.c, loaded by
 * shared_preload_libraries) deletes them just before the DROP runs, in its
 * transaction (a DROP that fails or rolls back keeps them).  Only the jobs
 * taskq.schedules names, in this database.
 */
#include "postgres.h"

#include "commands/extension.h"
#include "executor/spi.h"
#include "nodes/parsenodes.h"

#include "taskq.h"

static bool
drops_taskq(Node *stmt)
{
	DropStmt   *drop;
	ListCell   *lc;

	if (stmt == NULL || !IsA(stmt, DropStmt))
		return false;
	drop = (DropStmt *) stmt;
	if (drop->removeType != OBJECT_EXTENSION)
		return false;
	foreach(lc, drop->objects)
	{
		if (strcmp(strVal(lfirst(lc)), "taskq") == 0)
			return true;
	}
	return false;
}

void
taskq_unschedule_on_drop(Node *stmt)
{
	if (!drops_taskq(stmt) || !OidIsValid(get_extension_oid("taskq", true)))
		return;

	SPI_connect();
	if (SPI_execute("SELECT 1 WHERE to_regclass('cron.job') IS NOT NULL"
					" AND to_regclass('taskq.schedules') IS NOT NULL", true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1 &&
		SPI_execute("DELETE FROM cron.job c USING taskq.schedules s"
					" WHERE c.jobid = s.cron_jobid AND c.jobname = 'taskq:' || s.name"
					" AND c.database = pg_catalog.current_database()", false, 0) != SPI_OK_DELETE)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not remove the pg_cron jobs of taskq's schedules")));
	SPI_finish();
}
