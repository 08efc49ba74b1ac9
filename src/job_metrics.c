/*
 * job_metrics.c: counters and histograms of claims and finished attempts,
 * per database, queue, job type and lane, for Prometheus.
 *
 * A row trigger on taskq.jobs notes each transition into or out of
 * 'running', whoever writes it (an executor or an external worker's
 * claim/complete/fail), so both lanes count alike.  The notes stay in the
 * backend until its transaction commits: an aborted claim or completion
 * (or a rolled-back subtransaction) counts nothing.
 *
 * Label sets are bounded: at most TASKQ_METRIC_SETS (queue, job type,
 * lane) sets per cluster.  When they are used up, a new set is counted
 * under queue and job type "(other)"; if even that has no room the note is
 * counted in `dropped` (taskq_metrics_dropped_total).  Names longer than
 * TASKQ_METRIC_NAME - 1 bytes are cut.  Counters start at zero at server
 * start, as Prometheus expects of counters.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "taskq.h"

#define TASKQ_METRIC_SETS 256
#define TASKQ_METRIC_OTHER_RESERVE 32	/* kept for the "(other)" sets */
#define TASKQ_METRIC_NAME 64
#define OTHER_LABEL "(other)"

/* upper bounds (seconds) of the histogram buckets; +Inf follows */
static const double bucket_le[] = {
	0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600
};
#define NBUCKETS (lengthof(bucket_le) + 1)

typedef enum MetricOutcome
{
	OUTCOME_CLAIMED,
	OUTCOME_SUCCEEDED,
	OUTCOME_FAILED,				/* dead-lettered */
	OUTCOME_RETRIED,			/* failed attempt, pending again */
	OUTCOME_CANCELLED,
	NOUTCOMES
} MetricOutcome;

static const char *const outcome_names[] = {
	"claimed", "succeeded", "failed", "retried", "cancelled"
};

typedef struct MetricKey
{
	Oid			db;
	bool		external;
	char		queue[TASKQ_METRIC_NAME];
	char		job_type[TASKQ_METRIC_NAME];
} MetricKey;

typedef struct MetricSet
{
	MetricKey	key;
	uint64		count[NOUTCOMES];
	uint64		wait[NBUCKETS];	/* claims by wait, run_at -> claim */
	double		wait_sum;
	uint64		run[NBUCKETS];	/* finished attempts by run time */
	double		run_sum;
} MetricSet;

typedef struct TaskqJobMetrics
{
	slock_t		mutex;
	int			nsets;
	uint64		dropped;
	MetricSet	sets[TASKQ_METRIC_SETS];
} TaskqJobMetrics;

/* one transition noted by this backend, not yet committed */
typedef struct PendingNote
{
	MetricKey	key;
	MetricOutcome outcome;
	double		seconds;
	SubTransactionId subid;
} PendingNote;

static TaskqJobMetrics *JobMetrics = NULL;
static PendingNote *pending = NULL;
static int	npending = 0;
static int	maxpending = 0;

Size
taskq_job_metrics_shmem_size(void)
{
	return MAXALIGN(sizeof(TaskqJobMetrics));
}

/* Called with AddinShmemInitLock held. */
void
taskq_job_metrics_shmem_init(void)
{
	bool		found;

	JobMetrics = ShmemInitStruct("taskq job metrics", sizeof(TaskqJobMetrics), &found);
	if (!found)
	{
		memset(JobMetrics, 0, sizeof(TaskqJobMetrics));
		SpinLockInit(&JobMetrics->mutex);
	}
}

static int
bucket_of(double seconds)
{
	for (int i = 0; i < lengthof(bucket_le); i++)
		if (seconds <= bucket_le[i])
			return i;
	return NBUCKETS - 1;
}

static bool
same_key(const MetricKey *a, const MetricKey *b)
{
	return a->db == b->db && a->external == b->external &&
		strcmp(a->queue, b->queue) == 0 && strcmp(a->job_type, b->job_type) == 0;
}

/* The set of key, made if there is room; mutex held.  NULL: no room. */
static MetricSet *
find_set(const MetricKey *key, bool may_take_reserve)
{
	int			limit = TASKQ_METRIC_SETS -
		(may_take_reserve ? 0 : TASKQ_METRIC_OTHER_RESERVE);

	for (int i = 0; i < JobMetrics->nsets; i++)
		if (same_key(&JobMetrics->sets[i].key, key))
			return &JobMetrics->sets[i];
	if (JobMetrics->nsets >= limit)
		return NULL;
	JobMetrics->sets[JobMetrics->nsets].key = *key;
	return &JobMetrics->sets[JobMetrics->nsets++];
}

static void
add_note(MetricSet *set, const PendingNote *note)
{
	set->count[note->outcome]++;
	if (note->outcome == OUTCOME_CLAIMED)
	{
		set->wait[bucket_of(note->seconds)]++;
		set->wait_sum += note->seconds;
	}
	else
	{
		set->run[bucket_of(note->seconds)]++;
		set->run_sum += note->seconds;
	}
}

/* At commit: move the notes to shared memory.  Must not fail. */
void
taskq_job_metrics_at_commit(void)
{
	uint64		claimed = 0,
				succeeded = 0,
				failed = 0,
				retried = 0;

	if (npending == 0)
		return;
	if (JobMetrics != NULL)
	{
		SpinLockAcquire(&JobMetrics->mutex);
		for (int i = 0; i < npending; i++)
		{
			MetricSet  *set = find_set(&pending[i].key, false);

			if (set == NULL)
			{
				MetricKey	other = pending[i].key;

				strlcpy(other.queue, OTHER_LABEL, sizeof(other.queue));
				strlcpy(other.job_type, OTHER_LABEL, sizeof(other.job_type));
				set = find_set(&other, true);
			}
			if (set != NULL)
				add_note(set, &pending[i]);
			else
				JobMetrics->dropped++;
		}
		SpinLockRelease(&JobMetrics->mutex);
	}
	/* the cluster-wide totals behind taskq.throughput */
	for (int i = 0; i < npending; i++)
	{
		switch (pending[i].outcome)
		{
			case OUTCOME_CLAIMED:
				claimed++;
				break;
			case OUTCOME_SUCCEEDED:
				succeeded++;
				break;
			case OUTCOME_RETRIED:
				retried++;
				failed++;
				break;
			case OUTCOME_FAILED:
				failed++;
				break;
			default:
				break;
		}
	}
	if (TaskqState != NULL)
	{
		pg_atomic_fetch_add_u64(&TaskqState->claimed, claimed);
		pg_atomic_fetch_add_u64(&TaskqState->succeeded, succeeded);
		pg_atomic_fetch_add_u64(&TaskqState->failed, failed);
		pg_atomic_fetch_add_u64(&TaskqState->retried, retried);
	}
	npending = 0;
}

/* At abort or prepare: what the transaction did is not counted. */
void
taskq_job_metrics_forget(void)
{
	npending = 0;
}

/* A rolled-back subtransaction's notes (and its children's) go. */
void
taskq_job_metrics_at_subabort(SubTransactionId subid)
{
	int			kept = 0;

	for (int i = 0; i < npending; i++)
		if (pending[i].subid < subid)
			pending[kept++] = pending[i];
	npending = kept;
}

static void
copy_name(char *dst, HeapTuple tuple, TupleDesc desc, const char *column)
{
	bool		isnull;
	Datum		d = heap_getattr(tuple, SPI_fnumber(desc, column), desc, &isnull);
	char	   *s = isnull ? "" : TextDatumGetCString(d);
	int			len = pg_mbcliplen(s, strlen(s), TASKQ_METRIC_NAME - 1);

	memcpy(dst, s, len);
	dst[len] = '\0';
}

static TimestampTz
timestamp_column(HeapTuple tuple, TupleDesc desc, const char *column, TimestampTz otherwise)
{
	bool		isnull;
	Datum		d = heap_getattr(tuple, SPI_fnumber(desc, column), desc, &isnull);

	return isnull ? otherwise : DatumGetTimestampTz(d);
}

static int32
int_column(HeapTuple tuple, TupleDesc desc, const char *column)
{
	bool		isnull;
	Datum		d = heap_getattr(tuple, SPI_fnumber(desc, column), desc, &isnull);

	return isnull ? 0 : DatumGetInt32(d);
}

static char *
status_of(HeapTuple tuple, TupleDesc desc)
{
	bool		isnull;
	Datum		d = heap_getattr(tuple, SPI_fnumber(desc, "status"), desc, &isnull);

	return isnull ? "" : DatumGetCString(DirectFunctionCall1(enum_out, d));
}

/* Keep a note until its transaction ends. */
static void
keep_note(const PendingNote *note)
{
	if (npending == maxpending)
	{
		maxpending = Max(64, maxpending * 2);
		pending = pending == NULL ?
			MemoryContextAlloc(TopMemoryContext, maxpending * sizeof(PendingNote)) :
			repalloc(pending, maxpending * sizeof(PendingNote));
	}
	pending[npending++] = *note;
}

/*
 * BEFORE UPDATE row trigger on taskq.jobs, fired (WHEN) for a transition
 * into or out of 'running': note a claim with its wait, or a finished
 * attempt with its run time.  A job given back at shutdown (its attempt
 * not counted: attempts went down) is no outcome.  An executor's job
 * claimed without a write goes from pending to succeeded in one update
 * (45_batch_transaction.sql): its claim and its outcome are noted together.
 */
PG_FUNCTION_INFO_V1(taskq_count_transition);
Datum
taskq_count_transition(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	old,
				new;
	PendingNote note;
	char	   *status;
	TimestampTz now = GetCurrentTimestamp();
	bool		isnull;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("taskq._count_transition() must be a BEFORE UPDATE row trigger")));
	desc = trigdata->tg_relation->rd_att;
	old = trigdata->tg_trigtuple;
	new = trigdata->tg_newtuple;

	memset(&note, 0, sizeof(note));
	note.key.db = MyDatabaseId;
	note.key.external = !DatumGetBool(heap_getattr(new, SPI_fnumber(desc, "in_database"),
												   desc, &isnull));
	copy_name(note.key.queue, new, desc, "queue");
	copy_name(note.key.job_type, new, desc, "job_type");
	note.subid = GetCurrentSubTransactionId();

	status = status_of(new, desc);
	if (strcmp(status_of(old, desc), "pending") == 0 && strcmp(status, "succeeded") == 0)
	{
		PendingNote claim = note;

		claim.outcome = OUTCOME_CLAIMED;
		claim.seconds = Max(0.0, (double) (timestamp_column(new, desc, "started_at", now) -
										   timestamp_column(new, desc, "run_at", now)) /
							USECS_PER_SEC);
		keep_note(&claim);
		note.outcome = OUTCOME_SUCCEEDED;
		note.seconds = (double) (timestamp_column(new, desc, "finished_at", now) -
								 timestamp_column(new, desc, "started_at", now)) / USECS_PER_SEC;
	}
	else if (strcmp(status, "running") == 0)
	{
		note.outcome = OUTCOME_CLAIMED;
		note.seconds = (double) (timestamp_column(new, desc, "started_at", now) -
								 timestamp_column(new, desc, "run_at", now)) / USECS_PER_SEC;
	}
	else
	{
		if (strcmp(status, "succeeded") == 0)
			note.outcome = OUTCOME_SUCCEEDED;
		else if (strcmp(status, "failed") == 0)
			note.outcome = OUTCOME_FAILED;
		else if (strcmp(status, "cancelled") == 0)
			note.outcome = OUTCOME_CANCELLED;
		else if (int_column(new, desc, "attempts") < int_column(old, desc, "attempts"))
			return PointerGetDatum(new);	/* given back */
		else
			note.outcome = OUTCOME_RETRIED;
		note.seconds = (double) (timestamp_column(new, desc, "finished_at", now) -
								 timestamp_column(old, desc, "started_at", now)) / USECS_PER_SEC;
	}
	if (note.seconds < 0)
		note.seconds = 0;
	keep_note(&note);
	return PointerGetDatum(new);
}

/*
 * This database's counters and histograms, one row per sample as
 * Prometheus names it: (metric, queue, job_type, lane, outcome, le, value),
 * NULL where a label does not apply.  Histogram buckets are cumulative.
 */
PG_FUNCTION_INFO_V1(taskq_job_metrics);
Datum
taskq_job_metrics(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MetricSet  *sets;
	int			nsets;
	uint64		dropped;

	InitMaterializedSRF(fcinfo, 0);
	if (JobMetrics == NULL)
		PG_RETURN_VOID();
	sets = palloc(sizeof(MetricSet) * TASKQ_METRIC_SETS);
	SpinLockAcquire(&JobMetrics->mutex);
	nsets = JobMetrics->nsets;
	memcpy(sets, JobMetrics->sets, sizeof(MetricSet) * nsets);
	dropped = JobMetrics->dropped;
	SpinLockRelease(&JobMetrics->mutex);

	for (int i = 0; i < nsets; i++)
	{
		MetricSet  *s = &sets[i];
		Datum		values[7];
		bool		nulls[7] = {false};

		if (s->key.db != MyDatabaseId)
			continue;
		values[1] = CStringGetTextDatum(s->key.queue);
		values[2] = CStringGetTextDatum(s->key.job_type);
		values[3] = CStringGetTextDatum(s->key.external ? "external" : "executor");

		/* counters */
		nulls[5] = true;
		values[0] = CStringGetTextDatum("taskq_jobs_claimed_total");
		nulls[4] = true;
		values[6] = Float8GetDatum((double) s->count[OUTCOME_CLAIMED]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		values[0] = CStringGetTextDatum("taskq_jobs_completed_total");
		nulls[4] = false;
		for (int o = OUTCOME_SUCCEEDED; o < NOUTCOMES; o++)
		{
			values[4] = CStringGetTextDatum(outcome_names[o]);
			values[6] = Float8GetDatum((double) s->count[o]);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
		nulls[4] = true;

		/* histograms */
		for (int h = 0; h < 2; h++)
		{
			const char *base = h == 0 ? "taskq_job_wait_seconds" : "taskq_job_run_seconds";
			uint64	   *buckets = h == 0 ? s->wait : s->run;
			uint64		cumulative = 0;

			values[0] = CStringGetTextDatum(psprintf("%s_bucket", base));
			nulls[5] = false;
			for (int b = 0; b < NBUCKETS; b++)
			{
				cumulative += buckets[b];
				values[5] = CStringGetTextDatum(b < lengthof(bucket_le) ?
												psprintf("%g", bucket_le[b]) : "+Inf");
				values[6] = Float8GetDatum((double) cumulative);
				tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			}
			nulls[5] = true;
			values[0] = CStringGetTextDatum(psprintf("%s_sum", base));
			values[6] = Float8GetDatum(h == 0 ? s->wait_sum : s->run_sum);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			values[0] = CStringGetTextDatum(psprintf("%s_count", base));
			values[6] = Float8GetDatum((double) cumulative);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}

	{
		Datum		values[7] = {0};
		bool		nulls[7] = {false, true, true, true, true, true, false};

		values[0] = CStringGetTextDatum("taskq_metrics_dropped_total");
		values[6] = Float8GetDatum((double) dropped);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}
