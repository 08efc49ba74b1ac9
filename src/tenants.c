/*
 * tenants.c: a tenant job's turn (taskq.jobs.fair_at), set as it is inserted,
 * and whether a job's type allows its tenant and concurrency key.
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
#include "utils/builtins.h"
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

/*
 * Refuse a job naming a tenant or a concurrency key (has_tenant, has_key)
 * when its job_type (text) forbids it (taskq.configure_job_type), before
 * anything is written.  submit and submit_many's job by job path; the
 * set-wise path checks in SQL (taskq._check_job_type_rules).
 */
void
taskq_check_job_type_allows(Datum job_type, bool has_tenant, bool has_key)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {job_type};
	bool		allow_tenant = true;
	bool		allow_key = true;
	bool		isnull;

	if (!has_tenant && !has_key)
		return;
	SPI_connect();
	if (plan == NULL)
		plan = taskq_prepare_kept("SELECT t.allow_tenant, t.allow_concurrency_key FROM taskq.job_types t"
								  " WHERE t.job_type = $1", 1, argtypes, 0);
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "taskq: a job type's rules could not be read");
	if (SPI_processed == 1)
	{
		allow_tenant = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
												  &isnull));
		allow_key = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2,
											   &isnull));
	}
	SPI_finish();
	if ((has_tenant && !allow_tenant) || (has_key && !allow_key))
	{
		const char *what = has_tenant && !allow_tenant ? "tenant" : "concurrency_key";

		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("job type \"%s\" does not allow a %s", TextDatumGetCString(job_type), what),
				 errhint("taskq.configure_job_type(..., allow_%s => true) allows it.", what)));
	}
}
