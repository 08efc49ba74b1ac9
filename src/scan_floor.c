/*
 * scan_floor.c: where a claim starts reading the runnable index.
 *
 * Claimed jobs leave dead entries at the front of jobs_runnable_idx until
 * vacuum removes them, and a transaction that pins the xmin horizon keeps
 * them from even being marked dead.  A claim that starts from the front of
 * its lane walks all of them.  So each priority of each lane (in-database or
 * external) of a jobs table has a floor in shared memory: a key (run_at, id)
 * at or below every pending job of that priority and lane.  A claim probes
 * from the floor to the first pending job, starts there, and raises the floor
 * to it.  (Per priority: a delayed job of a higher priority must not hold a
 * lower priority's floor back.)
 *
 * Every write that leaves a row pending notes its key (trigger
 * jobs_note_pending); at commit the floor is lowered to it and the key is
 * put in a ring.  A claim raising the floor to the first pending job its
 * snapshot saw takes the minimum of that and every key committed since it
 * read the floor (the ring), so a job committed after its snapshot is never
 * left below the floor.  When the ring has wrapped meanwhile, the floor is
 * left alone.  Floors start empty (no floor: scan from the front).
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "taskq.h"

/* what a floor is kept for: one priority of one lane of one jobs table */
typedef struct FloorOf
{
	Oid			database;		/* InvalidOid: entry free */
	Oid			jobs;
	bool		lane;			/* in_database */
	Oid			priority;		/* enum value of taskq.priority */
} FloorOf;

/* a key of the runnable index within one priority */
typedef struct FloorKey
{
	TimestampTz run_at;
	int64		id;
} FloorKey;

typedef struct ScanFloor
{
	FloorOf		of;
	FloorKey	key;
} ScanFloor;

#define TASKQ_SCAN_FLOORS 64
#define TASKQ_LOWERED_RING 512
#define TASKQ_NOTED_MAX 16

struct TaskqScanFloors
{
	slock_t		mutex;
	uint64		lowered;		/* keys ever committed to the ring */
	ScanFloor	floors[TASKQ_SCAN_FLOORS];
	ScanFloor	ring[TASKQ_LOWERED_RING];	/* committed key n at [n % size] */
};

static TaskqScanFloors *Floors = NULL;

/* the lowest key this transaction left pending, per lane and priority */
static ScanFloor noted[TASKQ_NOTED_MAX];
static int	n_noted = 0;
static bool noted_overflow = false; /* more than TASKQ_NOTED_MAX: see at_commit */

Size
taskq_scan_floors_size(void)
{
	return MAXALIGN(sizeof(TaskqScanFloors));
}

void
taskq_scan_floors_init(TaskqScanFloors *floors, bool found)
{
	Floors = floors;
	if (!found)
	{
		memset(Floors, 0, sizeof(TaskqScanFloors));
		SpinLockInit(&Floors->mutex);
	}
}

static int
key_cmp(const FloorKey *a, const FloorKey *b)
{
	if (a->run_at != b->run_at)
		return a->run_at < b->run_at ? -1 : 1;
	if (a->id != b->id)
		return a->id < b->id ? -1 : 1;
	return 0;
}

static bool
same_floor(const FloorOf *a, const FloorOf *b)
{
	return a->database == b->database && a->jobs == b->jobs &&
		a->lane == b->lane && a->priority == b->priority;
}

static FloorOf
floor_of(Oid jobs, bool lane, Oid priority)
{
	FloorOf		of;

	memset(&of, 0, sizeof(of));
	of.database = MyDatabaseId;
	of.jobs = jobs;
	of.lane = lane;
	of.priority = priority;
	return of;
}

/* the floor entry, or NULL; caller holds the mutex */
static ScanFloor *
find_floor(const FloorOf *of)
{
	for (int i = 0; i < TASKQ_SCAN_FLOORS; i++)
		if (same_floor(&Floors->floors[i].of, of))
			return &Floors->floors[i];
	return NULL;
}

static ScanFloor *
find_noted(const FloorOf *of)
{
	for (int i = 0; i < n_noted; i++)
		if (same_floor(&noted[i].of, of))
			return &noted[i];
	return NULL;
}

/*
 * taskq._scan_floor(jobs regclass, lane boolean, priority taskq.priority,
 *                   OUT seen bigint, OUT run_at timestamptz, OUT id bigint)
 * The floor (NULLs: none) and the ring position to raise it from.
 */
PG_FUNCTION_INFO_V1(taskq_scan_floor);
Datum
taskq_scan_floor(PG_FUNCTION_ARGS)
{
	FloorOf		of = floor_of(PG_GETARG_OID(0), PG_GETARG_BOOL(1), PG_GETARG_OID(2));
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, true, true};
	ScanFloor  *f;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "taskq: _scan_floor must return a record");
	values[0] = Int64GetDatum(0);
	if (Floors != NULL && !noted_overflow)
	{
		SpinLockAcquire(&Floors->mutex);
		values[0] = Int64GetDatum((int64) Floors->lowered);
		f = find_floor(&of);
		if (f != NULL)
		{
			FloorKey	key = f->key;
			ScanFloor  *own = find_noted(&of);

			/* jobs this transaction left pending lower the floor only at commit */
			if (own != NULL && key_cmp(&own->key, &key) < 0)
				key = own->key;
			values[1] = TimestampTzGetDatum(key.run_at);
			values[2] = Int64GetDatum(key.id);
			nulls[1] = nulls[2] = false;
		}
		SpinLockRelease(&Floors->mutex);
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * taskq._raise_scan_floor(jobs regclass, lane boolean, priority taskq.priority,
 *                         seen bigint, run_at timestamptz, id bigint)
 * The first pending job, as seen by a snapshot taken after _scan_floor
 * returned `seen`, becomes the floor, lowered to every key committed since.
 */
PG_FUNCTION_INFO_V1(taskq_raise_scan_floor);
Datum
taskq_raise_scan_floor(PG_FUNCTION_ARGS)
{
	FloorOf		of = floor_of(PG_GETARG_OID(0), PG_GETARG_BOOL(1), PG_GETARG_OID(2));
	uint64		seen = (uint64) PG_GETARG_INT64(3);
	FloorKey	key;
	ScanFloor  *f;

	/* a transaction snapshot may predate `seen`: what it missed is unknown */
	if (Floors == NULL || IsolationUsesXactSnapshot())
		PG_RETURN_VOID();
	key.run_at = PG_GETARG_TIMESTAMPTZ(4);
	key.id = PG_GETARG_INT64(5);

	SpinLockAcquire(&Floors->mutex);
	if (seen <= Floors->lowered && Floors->lowered - seen <= TASKQ_LOWERED_RING)
	{
		for (uint64 n = seen; n < Floors->lowered; n++)
		{
			ScanFloor  *l = &Floors->ring[n % TASKQ_LOWERED_RING];

			if (same_floor(&l->of, &of) && key_cmp(&l->key, &key) < 0)
				key = l->key;
		}
		f = find_floor(&of);
		for (int i = 0; f == NULL && i < TASKQ_SCAN_FLOORS; i++)
		{
			if (Floors->floors[i].of.database == InvalidOid)
			{
				f = &Floors->floors[i];
				f->of = of;
			}
		}
		if (f != NULL)
			f->key = key;
	}
	SpinLockRelease(&Floors->mutex);
	PG_RETURN_VOID();
}

/*
 * Trigger jobs_note_pending, AFTER INSERT OR UPDATE FOR EACH ROW WHEN the new
 * row is pending: remember the lowest such key of the transaction.  (AFTER:
 * a BEFORE UPDATE trigger would lock every updated row first.)
 */
PG_FUNCTION_INFO_V1(taskq_note_pending);
Datum
taskq_note_pending(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	row;
	TupleDesc	desc;
	FloorOf		of;
	FloorKey	key;
	bool		isnull;
	ScanFloor  *n;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		elog(ERROR, "taskq: _note_pending must be an AFTER ROW trigger");
	row = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? trigdata->tg_newtuple
		: trigdata->tg_trigtuple;
	desc = RelationGetDescr(trigdata->tg_relation);

	of = floor_of(RelationGetRelid(trigdata->tg_relation),
				  DatumGetBool(heap_getattr(row, SPI_fnumber(desc, "in_database"), desc, &isnull)),
				  DatumGetObjectId(heap_getattr(row, SPI_fnumber(desc, "effective_priority"),
												desc, &isnull)));
	key.run_at = DatumGetTimestampTz(heap_getattr(row, SPI_fnumber(desc, "run_at"), desc, &isnull));
	key.id = DatumGetInt64(heap_getattr(row, SPI_fnumber(desc, "id"), desc, &isnull));

	n = find_noted(&of);
	if (n == NULL && n_noted < TASKQ_NOTED_MAX)
	{
		n = &noted[n_noted++];
		n->of = of;
		n->key = key;
	}
	else if (n == NULL)
		noted_overflow = true;
	else if (key_cmp(&key, &n->key) < 0)
		n->key = key;
	return PointerGetDatum(NULL);
}

/*
 * At commit (the rows are visible by now): lower the floors to the keys this
 * transaction left pending, and publish the keys for claims in flight.
 */
void
taskq_scan_floors_at_commit(void)
{
	if (Floors == NULL || (n_noted == 0 && !noted_overflow))
		return;
	SpinLockAcquire(&Floors->mutex);
	if (noted_overflow)
	{
		/* (more lanes and priorities than kept track of) forget every floor */
		memset(Floors->floors, 0, sizeof(Floors->floors));
		Floors->lowered += TASKQ_LOWERED_RING + 1;
	}
	for (int i = 0; i < n_noted; i++)
	{
		ScanFloor  *f = find_floor(&noted[i].of);

		if (f != NULL && key_cmp(&noted[i].key, &f->key) < 0)
			f->key = noted[i].key;
		Floors->ring[Floors->lowered % TASKQ_LOWERED_RING] = noted[i];
		Floors->lowered++;
	}
	SpinLockRelease(&Floors->mutex);
	taskq_scan_floors_forget();
}

/* At abort; also before PREPARE, which is refused when keys are noted. */
void
taskq_scan_floors_forget(void)
{
	n_noted = 0;
	noted_overflow = false;
}

bool
taskq_scan_floors_noted(void)
{
	return n_noted > 0 || noted_overflow;
}
