/*
 * jobs_vacuum.c
 *		The launcher's VACUUM of taskq.jobs when its dead rows pass a
 *		threshold.
 *
 * Every job leaves three dead versions of its row (claim, completion,
 * purge).  Autovacuum reaches a table once per autovacuum_naptime (1 min by
 * default) whatever its per-table settings, and a busy queue piles up about
 * a million dead versions meanwhile (bench/README.md).  So the launcher
 * looks at the table's dead rows once a second and, past the threshold,
 * vacuums it itself, as VACUUM (SKIP_LOCKED) does: never waiting behind an
 * autovacuum already at it.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/vacuum.h"
#include "executor/spi.h"
#include "nodes/makefuncs.h"
#include "parser/parse_node.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "taskq.h"

/* how often the launcher looks (the statistics are flushed about as often) */
#define CHECK_INTERVAL_MS 1000

static TimestampTz last_check = 0;

/* Has taskq.jobs 10,000 dead rows and a tenth of its live ones?  (own transaction) */
static bool
jobs_need_vacuum(void)
{
	bool		need = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (taskq_extension_ready())
	{
		if (SPI_execute("SELECT 1 FROM pg_catalog.pg_stat_all_tables"
						" WHERE relid = 'taskq.jobs'::pg_catalog.regclass"
						"   AND n_dead_tup >= 10000 + n_live_tup / 10",
						true, 1) != SPI_OK_SELECT)
			elog(ERROR, "taskq launcher: reading taskq.jobs' dead rows failed");
		need = SPI_processed > 0;
	}
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	return need;
}

/*
 * Vacuum taskq.jobs if it needs it.  Outside any transaction; errors go to
 * the caller.
 */
void
taskq_vacuum_jobs_if_needed(void)
{
	TimestampTz now = GetCurrentTimestamp();
	MemoryContext caller_cxt = CurrentMemoryContext;
	MemoryContext saved_portal = PortalContext;
	MemoryContext portal_cxt;

	if (!TimestampDifferenceExceeds(last_check, now, CHECK_INTERVAL_MS))
		return;
	last_check = now;
	if (!jobs_need_vacuum())
		return;

	/* vacuum() keeps what outlives its transactions under PortalContext */
	portal_cxt = AllocSetContextCreate(TopMemoryContext, "taskq vacuum",
									   ALLOCSET_DEFAULT_SIZES);
	PG_TRY();
	{
		VacuumStmt *stmt;

		PortalContext = portal_cxt;
		MemoryContextSwitchTo(portal_cxt);
		stmt = makeNode(VacuumStmt);
		stmt->options = list_make1(makeDefElem("skip_locked", NULL, -1));
		stmt->rels = list_make1(makeVacuumRelation(makeRangeVar("taskq", "jobs", -1),
												   InvalidOid, NIL));
		stmt->is_vacuumcmd = true;
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		pgstat_report_activity(STATE_RUNNING, "vacuuming taskq.jobs");
		ExecVacuum(make_parsestate(NULL), stmt, true);
		CommitTransactionCommand();
	}
	PG_FINALLY();
	{
		PortalContext = saved_portal;
		MemoryContextSwitchTo(caller_cxt);
		MemoryContextDelete(portal_cxt);
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
}
