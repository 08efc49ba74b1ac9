/*
 * tenants.c: a tenant job's turn (taskq.jobs.fair_at), set as it is inserted.
 *
 * Claims order a priority's tenant jobs by turn (issue 23): a tenant's next
 * job gets the turn after its last pending one, or after its run_at if it
 * has none pending, plus 1 s / weight.  A tenant with a backlog thus holds
 * turns far ahead, and another's new job is claimed before that backlog.
 * Both writers call it: the INSERT trigger (scan_floor.c) and the direct
 * row writer (job_rows.c).  A kept plan: through a SQL function, planned on
 * every call, a submit_many of 10,000 tenant jobs took 12-25 s, not 0.2 s.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "taskq.h"

/* the turn of a new pending job of tenant (text) due at run_at */
TimestampTz
taskq_tenant_turn(Datum tenant, TimestampTz run_at)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[2] = {TEXTOID, TIMESTAMPTZOID};
	Datum		values[2] = {tenant, TimestampTzGetDatum(run_at)};
	bool		isnull;
	TimestampTz turn;
	int			nest_level;

	/*
	 * The plan is made once, maybe while taskq.jobs looks empty: a sequential
	 * scan then, run for every job of a 100,000-job submit_many, took more
	 * than 10 minutes.  Only the index (tenant, fair_at) is right here.
	 */
	nest_level = NewGUCNestLevel();
	RestrictSearchPath();
	(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_bitmapscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	SPI_connect();
	if (plan == NULL)
		plan = taskq_prepare_kept(
			"SELECT greatest((SELECT j.fair_at FROM taskq.jobs j"
			"                  WHERE j.tenant = $1 AND j.status = 'pending'"
			"                    AND j.fair_at IS NOT NULL"
			"                  ORDER BY j.fair_at DESC LIMIT 1), $2)"
			"       + pg_catalog.make_interval(secs => 1 / coalesce((SELECT t.weight FROM taskq.tenants t"
			"                                              WHERE t.name = $1), 1))",
			2, argtypes, 0);
	/* not read-only: the query must see the rows this command inserted so far */
	if (SPI_execute_plan(plan, values, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "taskq: a tenant job's turn could not be read");
	turn = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
											 &isnull));
	if (isnull)
		elog(ERROR, "taskq: a tenant job's turn is NULL");
	SPI_finish();
	AtEOXact_GUC(true, nest_level);
	return turn;
}
