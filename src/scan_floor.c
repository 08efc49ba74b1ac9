/*
 * scan_floor.c: where a claim starts reading the runnable index.
 *
 * Claimed jobs leave dead entries at the front of jobs_runnable_idx until
 * vacuum removes them, and a transaction that pins the xmin horizon keeps
 * them from even being marked dead.  A claim that starts from the front of
 * its lane walks all of them.  So each lane (in-database or external) of a
 * jobs table has a floor in shared memory: a key (effective_priority,
 * run_at, id) at or below every pending job of the lane.  A claim probes
 * from the floor to the first pending job, starts there, and raises the floor
 * to it.
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
#include "catalog/pg_enum.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "taskq.h"

/* a key of the runnable index, ordered by priority's sort order, run_at, id */
typedef struct FloorKey
{
	Oid			priority;		/* enum value of taskq.priority */
	float4		priority_order; /* its enumsortorder */
	TimestampTz run_at;
	int64		id;
} FloorKey;

typedef struct ScanFloor
{
	Oid			database;		/* InvalidOid: entry free */
	Oid			jobs;			/* the jobs table */
	bool		lane;			/* in_database */
	FloorKey	key;
} ScanFloor;

/* a committed key that may lie below a floor */
typedef struct LoweredKey
{
	Oid			database;
	Oid			jobs;
	bool		lane;
	FloorKey	key;
} LoweredKey;

#define TASKQ_SCAN_FLOORS 32
#define TASKQ_LOWERED_RING 512

struct TaskqScanFloors
{
	slock_t		mutex;
	uint64		lowered;		/* keys ever committed to the ring */
	ScanFloor	floors[TASKQ_SCAN_FLOORS];
	LoweredKey	ring[TASKQ_LOWERED_RING];	/* key n at [n % size] */
};

static TaskqScanFloors *Floors = NULL;

/* the lowest key this transaction left pending in each lane of one table */
static bool noted[2];
static FloorKey noted_key[2];
static Oid	noted_jobs = InvalidOid;

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
	if (a->priority_order != b->priority_order)
		return a->priority_order < b->priority_order ? -1 : 1;
	if (a->run_at != b->run_at)
		return a->run_at < b->run_at ? -1 : 1;
	if (a->id != b->id)
		return a->id < b->id ? -1 : 1;
	return 0;
}

static float4
priority_order(Oid priority)
{
	HeapTuple	tup = SearchSysCache1(ENUMOID, ObjectIdGetDatum(priority));
	float4		order;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "taskq: cache lookup failed for enum value %u", priority);
	order = ((Form_pg_enum) GETSTRUCT(tup))->enumsortorder;
	ReleaseSysCache(tup);
	return order;
}

/* the floor entry of a lane, or NULL; caller holds the mutex */
static ScanFloor *
find_floor(Oid jobs, bool lane)
{
	for (int i = 0; i < TASKQ_SCAN_FLOORS; i++)
	{
		ScanFloor  *f = &Floors->floors[i];

		if (f->database == MyDatabaseId && f->jobs == jobs && f->lane == lane)
			return f;
	}
	return NULL;
}

/*
 * taskq._scan_floor(jobs regclass, lane boolean, OUT seen bigint,
 *                   OUT priority taskq.priority, OUT run_at timestamptz, OUT id bigint)
 * The lane's floor (NULLs: none) and the ring position to raise it from.
 */
PG_FUNCTION_INFO_V1(taskq_scan_floor);
Datum
taskq_scan_floor(PG_FUNCTION_ARGS)
{
	Oid			jobs = PG_GETARG_OID(0);
	bool		lane = PG_GETARG_BOOL(1);
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, true, true, true};
	ScanFloor  *f;
	FloorKey	key;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "taskq: _scan_floor must return a record");
	values[0] = Int64GetDatum(0);
	if (Floors != NULL)
	{
		SpinLockAcquire(&Floors->mutex);
		values[0] = Int64GetDatum((int64) Floors->lowered);
		f = find_floor(jobs, lane);
		if (f != NULL)
		{
			key = f->key;
			/* jobs this transaction left pending lower the floor only at commit */
			if (noted_jobs == jobs && noted[lane] && key_cmp(&noted_key[lane], &key) < 0)
				key = noted_key[lane];
			values[1] = ObjectIdGetDatum(key.priority);
			values[2] = TimestampTzGetDatum(key.run_at);
			values[3] = Int64GetDatum(key.id);
			nulls[1] = nulls[2] = nulls[3] = false;
		}
		SpinLockRelease(&Floors->mutex);
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * taskq._raise_scan_floor(jobs regclass, lane boolean, seen bigint,
 *                         priority taskq.priority, run_at timestamptz, id bigint)
 * The first pending job of the lane, as seen by a snapshot taken after
 * _scan_floor returned `seen`, becomes the floor, lowered to every key
 * committed since.
 */
PG_FUNCTION_INFO_V1(taskq_raise_scan_floor);
Datum
taskq_raise_scan_floor(PG_FUNCTION_ARGS)
{
	Oid			jobs = PG_GETARG_OID(0);
	bool		lane = PG_GETARG_BOOL(1);
	uint64		seen = (uint64) PG_GETARG_INT64(2);
	FloorKey	key;
	ScanFloor  *f;

	/* a transaction snapshot may predate `seen`: what it missed is unknown */
	if (Floors == NULL || IsolationUsesXactSnapshot())
		PG_RETURN_VOID();
	key.priority = PG_GETARG_OID(3);
	key.priority_order = priority_order(key.priority);
	key.run_at = PG_GETARG_TIMESTAMPTZ(4);
	key.id = PG_GETARG_INT64(5);

	SpinLockAcquire(&Floors->mutex);
	if (Floors->lowered - seen <= TASKQ_LOWERED_RING)
	{
		for (uint64 n = seen; n < Floors->lowered; n++)
		{
			LoweredKey *l = &Floors->ring[n % TASKQ_LOWERED_RING];

			if (l->database == MyDatabaseId && l->jobs == jobs && l->lane == lane &&
				key_cmp(&l->key, &key) < 0)
				key = l->key;
		}
		f = find_floor(jobs, lane);
		for (int i = 0; f == NULL && i < TASKQ_SCAN_FLOORS; i++)
		{
			if (Floors->floors[i].database == InvalidOid)
			{
				f = &Floors->floors[i];
				f->database = MyDatabaseId;
				f->jobs = jobs;
				f->lane = lane;
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
	FloorKey	key;
	bool		isnull;
	bool		lane;
	int			attno;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		elog(ERROR, "taskq: _note_pending must be an AFTER ROW trigger");
	row = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? trigdata->tg_newtuple
		: trigdata->tg_trigtuple;
	desc = RelationGetDescr(trigdata->tg_relation);

	attno = SPI_fnumber(desc, "in_database");
	lane = DatumGetBool(heap_getattr(row, attno, desc, &isnull));
	if (isnull)
		lane = false;
	attno = SPI_fnumber(desc, "effective_priority");
	key.priority = DatumGetObjectId(heap_getattr(row, attno, desc, &isnull));
	key.priority_order = isnull ? -1 : priority_order(key.priority);
	attno = SPI_fnumber(desc, "run_at");
	key.run_at = DatumGetTimestampTz(heap_getattr(row, attno, desc, &isnull));
	if (isnull)
		key.run_at = DT_NOBEGIN;
	attno = SPI_fnumber(desc, "id");
	key.id = DatumGetInt64(heap_getattr(row, attno, desc, &isnull));

	if (noted_jobs != RelationGetRelid(trigdata->tg_relation))
	{
		noted[0] = noted[1] = false;
		noted_jobs = RelationGetRelid(trigdata->tg_relation);
	}
	if (!noted[lane] || key_cmp(&key, &noted_key[lane]) < 0)
		noted_key[lane] = key;
	noted[lane] = true;
	return PointerGetDatum(NULL);
}

/*
 * At commit (the rows are visible by now): lower the floors to the keys this
 * transaction left pending, and publish the keys for claims in flight.
 */
void
taskq_scan_floors_at_commit(void)
{
	if (Floors == NULL || (!noted[0] && !noted[1]))
		return;
	SpinLockAcquire(&Floors->mutex);
	for (int lane = 0; lane < 2; lane++)
	{
		ScanFloor  *f;
		LoweredKey *l;

		if (!noted[lane])
			continue;
		f = find_floor(noted_jobs, lane);
		if (f != NULL && key_cmp(&noted_key[lane], &f->key) < 0)
			f->key = noted_key[lane];
		l = &Floors->ring[Floors->lowered % TASKQ_LOWERED_RING];
		l->database = MyDatabaseId;
		l->jobs = noted_jobs;
		l->lane = lane;
		l->key = noted_key[lane];
		Floors->lowered++;
	}
	SpinLockRelease(&Floors->mutex);
	taskq_scan_floors_forget();
}

/* At abort; also before PREPARE, which is refused when keys are noted. */
void
taskq_scan_floors_forget(void)
{
	noted[0] = noted[1] = false;
}

bool
taskq_scan_floors_noted(void)
{
	return noted[0] || noted[1];
}
