/*
 * limits.c: how big a job's payload and its result may be
 * (taskq.max_payload_size, taskq.max_result_size).
 *
 * Every executor or worker that claims a job reads its payload whole, and
 * whoever reads a job reads its result whole: one payload of 250 MB took its
 * executor to 1 GB.  Every way in is checked here: the triggers on taskq.jobs
 * and taskq.schedules for rows written by SQL, job_rows.c for the rows it
 * writes itself, executor.c for a handler's result before it is kept.
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/htup_details.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/rel.h"

#include "taskq.h"

int			taskq_max_payload_size = 1024 * 1024;
int			taskq_max_result_size = 1024 * 1024;

/*
 * Raise program_limit_exceeded when value, a jsonb, is bigger than limit
 * (-1: no limit).  what: "payload" or "result"; job_id 0 when not known yet.
 */
static void
check_size(const char *what, const char *setting, int limit, Datum value, int64 job_id)
{
	Size		size;

	if (limit < 0)
		return;
	/* the size of the value itself, however it is stored (not compressed) */
	size = toast_raw_datum_size(value) - VARHDRSZ;
	if (size <= (Size) limit)
		return;
	if (job_id != 0)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s of job " INT64_FORMAT " is %zu bytes, over %s of %d bytes",
						what, job_id, size, setting, limit),
				 errhint("Keep large data in a table and pass its key.")));
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("%s is %zu bytes, over %s of %d bytes", what, size, setting, limit),
			 errhint("Keep large data in a table and pass its key.")));
}

void
taskq_check_payload_size(Datum payload)
{
	check_size("payload", "taskq.max_payload_size", taskq_max_payload_size, payload, 0);
}

void
taskq_check_result_size(Datum result, int64 job_id)
{
	check_size("result", "taskq.max_result_size", taskq_max_result_size, result, job_id);
}

/*
 * taskq._check_size(): a BEFORE INSERT or UPDATE row trigger that checks
 * the row's column named by its argument, "payload" or "result".
 */
PG_FUNCTION_INFO_V1(taskq_check_size_trigger);
Datum
taskq_check_size_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	row;
	TupleDesc	desc;
	const char *column;
	int			att;
	int			id_att;
	bool		isnull;
	Datum		value;
	int64		job_id = 0;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) || trigdata->tg_trigger->tgnargs != 1)
		elog(ERROR, "taskq: _check_size must be a BEFORE row trigger with one argument");
	row = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? trigdata->tg_newtuple
		: trigdata->tg_trigtuple;
	desc = RelationGetDescr(trigdata->tg_relation);
	column = trigdata->tg_trigger->tgargs[0];
	att = SPI_fnumber(desc, column);
	if (att <= 0)
		elog(ERROR, "taskq: _check_size: no column \"%s\"", column);
	value = heap_getattr(row, att, desc, &isnull);
	if (!isnull)
	{
		if (strcmp(column, "result") == 0)
		{
			id_att = SPI_fnumber(desc, "id");
			if (id_att > 0)
				job_id = DatumGetInt64(heap_getattr(row, id_att, desc, &isnull));
			taskq_check_result_size(value, isnull ? 0 : job_id);
		}
		else
			taskq_check_payload_size(value);
	}
	return PointerGetDatum(row);
}
