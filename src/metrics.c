/*
 * metrics.c: what the workers know about themselves, read from shared
 * memory: live workers, the jobs their open batches hold, capacity in use,
 * counters since server start and their rates over the last minutes, each
 * of this database (databases.c).
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
	/* this database's workers only */
	if (taskq_state() == NULL)
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
		/* an executor the launcher asked to stop is on its way out */
		values[2] = CStringGetTextDatum(slots[i].retiring ? "stopping" :
										state_names[slots[i].state]);
		values[3] = Int64GetDatum(slots[i].job_id);
		nulls[3] = slots[i].job_id == 0;
		values[4] = TimestampTzGetDatum(slots[i].since);
		values[5] = Int64GetDatum(slots[i].jobs_done);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}

/*
 * taskq._held_jobs() → (job_id, pid, worker, started_at): the jobs held by
 * this database's executors' open batches, whose rows still say 'pending'
 * until the batch commits.  started_at is set for the job whose handler runs
 * now.  One slot at a time under the spinlock, only the ids in use: the
 * executors take it for every claim and state change.
 */
PG_FUNCTION_INFO_V1(taskq_held_jobs);
Datum
taskq_held_jobs(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64	   *ids = palloc(sizeof(int64) * TASKQ_MAX_BATCH * 2);

	InitMaterializedSRF(fcinfo, 0);
	if (taskq_state() == NULL)
		PG_RETURN_VOID();

	for (int i = 0; i < TASKQ_MAX_SLOTS; i++)
	{
		TaskqWorkerSlot slot;
		int			n = 0;

		SpinLockAcquire(&TaskqState->mutex);
		slot = TaskqState->slots[i];
		if (slot.kind == TASKQ_SLOT_EXECUTOR)
			for (int b = 0; b < 2; b++)
			{
				TaskqHeldBatch *held = &TaskqState->held[i][b];

				memcpy(ids + n, held->ids, sizeof(int64) * held->n);
				n += held->n;
			}
		SpinLockRelease(&TaskqState->mutex);

		for (int k = 0; k < n; k++)
		{
			Datum		values[4];
			bool		nulls[4] = {false};

			values[0] = Int64GetDatum(ids[k]);
			values[1] = Int32GetDatum(slot.pid);
			values[2] = CStringGetTextDatum(slot.name);
			values[3] = TimestampTzGetDatum(slot.since);
			nulls[3] = slot.job_id != ids[k];
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
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
	if (taskq_state() != NULL)
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
	Datum		values[4];
	bool		nulls[4] = {false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (desc->natts != lengthof(values))
		elog(ERROR, "taskq._counters() must return %d columns", (int) lengthof(values));
	(void) taskq_state();
	values[0] = Int64GetDatum(TaskqState ? pg_atomic_read_u64(&TaskqState->claimed) : 0);
	values[1] = Int64GetDatum(TaskqState ? pg_atomic_read_u64(&TaskqState->succeeded) : 0);
	values[2] = Int64GetDatum(TaskqState ? pg_atomic_read_u64(&TaskqState->failed) : 0);
	/* failed attempts that went back to pending for another one */
	values[3] = Int64GetDatum(TaskqState ? pg_atomic_read_u64(&TaskqState->retried) : 0);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

static TaskqRateSample
current_counters(void)
{
	TaskqRateSample now;

	now.at = GetCurrentTimestamp();
	now.claimed = pg_atomic_read_u64(&TaskqState->claimed);
	now.succeeded = pg_atomic_read_u64(&TaskqState->succeeded);
	now.failed = pg_atomic_read_u64(&TaskqState->failed);
	return now;
}

/* Called by the launcher every tick; keeps one sample per TASKQ_RATE_SAMPLE_SECS. */
void
taskq_sample_counters(void)
{
	TaskqRateSample now = current_counters();
	int			last;

	SpinLockAcquire(&TaskqState->mutex);
	last = (TaskqState->next_sample + TASKQ_RATE_SAMPLES - 1) % TASKQ_RATE_SAMPLES;
	if (TaskqState->samples[last].at == 0 ||
		now.at - TaskqState->samples[last].at >= TASKQ_RATE_SAMPLE_SECS * USECS_PER_SEC)
	{
		TaskqState->samples[TaskqState->next_sample] = now;
		TaskqState->next_sample = (TaskqState->next_sample + 1) % TASKQ_RATE_SAMPLES;
	}
	SpinLockRelease(&TaskqState->mutex);
}

/*
 * Rates per second over the last 1, 5 and 15 minutes (or over as much
 * history as there is), from the samples and the live counters.
 */
PG_FUNCTION_INFO_V1(taskq_rates);
Datum
taskq_rates(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TaskqRateSample samples[TASKQ_RATE_SAMPLES];
	TaskqRateSample now;
	static const int windows[] = {1, 5, 15};

	InitMaterializedSRF(fcinfo, 0);
	if (taskq_state() == NULL)
		PG_RETURN_VOID();
	SpinLockAcquire(&TaskqState->mutex);
	memcpy(samples, TaskqState->samples, sizeof(samples));
	SpinLockRelease(&TaskqState->mutex);
	now = current_counters();

	for (int w = 0; w < lengthof(windows); w++)
	{
		TimestampTz since = now.at - (TimestampTz) windows[w] * 60 * USECS_PER_SEC;
		TaskqRateSample *base = NULL;
		Datum		values[4];
		bool		nulls[4] = {false};
		double		secs;

		/* the newest sample at or before the window start, else the oldest */
		for (int i = 0; i < TASKQ_RATE_SAMPLES; i++)
		{
			TaskqRateSample *s = &samples[i];

			if (s->at == 0)
				continue;
			if (base == NULL ||
				(s->at <= since && (base->at > since || s->at > base->at)) ||
				(s->at > since && base->at > since && s->at < base->at))
				base = s;
		}
		values[0] = Int32GetDatum(windows[w]);
		secs = base ? (double) (now.at - base->at) / USECS_PER_SEC : 0;
		if (base == NULL || secs < 1)
		{
			nulls[1] = nulls[2] = nulls[3] = true;
		}
		else
		{
			values[1] = Float8GetDatum((now.claimed - base->claimed) / secs);
			values[2] = Float8GetDatum((now.succeeded - base->succeeded) / secs);
			values[3] = Float8GetDatum((now.failed - base->failed) / secs);
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}
