/*
 * metrics.c: what the workers know about themselves, read from shared
 * memory: live workers, capacity in use, counters since server start.
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "taskq.h"

static const char *const kind_names[] = {"free", "launcher", "executor"};
static const char *const state_names[] = {
	"starting", "idle", "claiming", "running", "maintaining", "waiting", "stopping"
};

PG_FUNCTION_INFO_V1(taskq_worker_slots);
Datum
taskq_worker_slots(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TaskqWorkerSlot slots[TASKQ_MAX_SLOTS];

	InitMaterializedSRF(fcinfo, 0);
	if (TaskqState == NULL)
		PG_RETURN_VOID();

	SpinLockAcquire(&TaskqState->mutex);
	memcpy(slots, TaskqState->slots, sizeof(slots));
	SpinLockRelease(&TaskqState->mutex);

	for (int i = 0; i < TASKQ_MAX_SLOTS; i++)
	{
		Datum		values[6];
		bool		nulls[6] = {false};

		if (slots[i].kind == TASKQ_SLOT_FREE)
			continue;
		values[0] = Int32GetDatum(slots[i].pid);
		values[1] = CStringGetTextDatum(kind_names[slots[i].kind]);
		values[2] = CStringGetTextDatum(state_names[slots[i].state]);
		values[3] = Int64GetDatum(slots[i].job_id);
		nulls[3] = slots[i].job_id == 0;
		values[4] = TimestampTzGetDatum(slots[i].since);
		values[5] = Int64GetDatum(slots[i].jobs_done);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(taskq_resources);
Datum
taskq_resources(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[4];
	bool		nulls[4] = {false};
	int			cpu_used = 0;
	int			memory_used = 0;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (TaskqState != NULL)
	{
		SpinLockAcquire(&TaskqState->mutex);
		cpu_used = TaskqState->cpu_used;
		memory_used = TaskqState->memory_used;
		SpinLockRelease(&TaskqState->mutex);
	}
	values[0] = Int32GetDatum(cpu_used);
	values[1] = Int32GetDatum(taskq_max_cpu_units);
	values[2] = Int32GetDatum(memory_used);
	values[3] = Int32GetDatum(taskq_max_memory_mb);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

PG_FUNCTION_INFO_V1(taskq_counters);
Datum
taskq_counters(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = Int64GetDatum(TaskqState ? pg_atomic_read_u64(&TaskqState->claimed) : 0);
	values[1] = Int64GetDatum(TaskqState ? pg_atomic_read_u64(&TaskqState->succeeded) : 0);
	values[2] = Int64GetDatum(TaskqState ? pg_atomic_read_u64(&TaskqState->failed) : 0);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
