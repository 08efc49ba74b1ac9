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
 * left alone.  The raise waits for the claiming transaction to commit: its
 * snapshot saw its own changes (jobs it claimed or cancelled), which a
 * rollback, of the transaction or of a savepoint, would make pending again.
 *
 * Dropping a floor is always safe (no floor: scan from the front).  Floors
 * start empty, are never raised during recovery (nothing would lower them:
 * replay fires no trigger), are dropped by TRUNCATE, and when all slots are
 * taken one is dropped to make room.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
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

typedef struct TaskqScanFloors
{
	uint64		lowered;		/* keys ever committed to the ring */
	int			next_evicted;	/* round robin, when all slots are taken */
	ScanFloor	floors[TASKQ_SCAN_FLOORS];
	ScanFloor	ring[TASKQ_LOWERED_RING];	/* committed key n at [n % size] */
} TaskqScanFloors;

#define TASKQ_SCAN_FLOORS_LOCK "taskq scan floors"

static TaskqScanFloors *Floors = NULL;
static LWLock *FloorsLock = NULL;

/* the lowest key this transaction left pending, per lane and priority */
static ScanFloor noted[TASKQ_NOTED_MAX];
static int	n_noted = 0;
static bool noted_overflow = false; /* more than TASKQ_NOTED_MAX: see at_commit */

/* raises this transaction asked for, applied if it commits */
typedef struct PendingRaise
{
	ScanFloor	floor;
	uint64		seen;			/* ring position its probe started after */
	int			nest_level;		/* of the (sub)transaction that probed */
} PendingRaise;

static PendingRaise raises[TASKQ_NOTED_MAX];
static int	n_raises = 0;

Size
taskq_scan_floors_shmem_size(void)
{
	return MAXALIGN(sizeof(TaskqScanFloors));
}

void
taskq_scan_floors_shmem_request(void)
{
	RequestNamedLWLockTranche(TASKQ_SCAN_FLOORS_LOCK, 1);
}

/* Called with AddinShmemInitLock held. */
void
taskq_scan_floors_shmem_init(void)
{
	bool		found;

	Floors = ShmemInitStruct("taskq scan floors", taskq_scan_floors_shmem_size(), &found);
	FloorsLock = &(GetNamedLWLockTranche(TASKQ_SCAN_FLOORS_LOCK))->lock;
	if (!found)
		memset(Floors, 0, sizeof(TaskqScanFloors));
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

/* the floor entry, or NULL; caller holds FloorsLock */
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
 * taskq._scan_floors(jobs regclass, lane boolean, priorities taskq.priority[],
 *                    OUT priority taskq.priority, OUT seen bigint,
 *                    OUT run_at timestamptz, OUT id bigint)
 * For each priority in the given order, its floor (NULLs: none) and the ring
 * position to raise it from; priorities known to have no pending job (floor
 * at infinity) are left out.
 */
PG_FUNCTION_INFO_V1(taskq_scan_floors);
Datum
taskq_scan_floors(PG_FUNCTION_ARGS)
{
	Oid			jobs = PG_GETARG_OID(0);
	bool		lane = PG_GETARG_BOOL(1);
	ArrayType  *priorities = PG_GETARG_ARRAYTYPE_P(2);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum	   *prios;
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	deconstruct_array(priorities, ARR_ELEMTYPE(priorities), sizeof(Oid), true, TYPALIGN_INT,
					  &prios, NULL, &n);
	if (Floors != NULL && !noted_overflow)
		LWLockAcquire(FloorsLock, LW_SHARED);
	for (int i = 0; i < n; i++)
	{
		FloorOf		of = floor_of(jobs, lane, DatumGetObjectId(prios[i]));
		Datum		values[4];
		bool		nulls[4] = {false, false, true, true};
		ScanFloor  *f = NULL;

		values[0] = prios[i];
		values[1] = Int64GetDatum(0);
		if (Floors != NULL && !noted_overflow)
		{
			values[1] = Int64GetDatum((int64) Floors->lowered);
			f = find_floor(&of);
		}
		if (f != NULL)
		{
			FloorKey	key = f->key;
			ScanFloor  *own = find_noted(&of);

			/* jobs this transaction left pending lower the floor only at commit */
			if (own != NULL && key_cmp(&own->key, &key) < 0)
				key = own->key;
			if (TIMESTAMP_IS_NOEND(key.run_at))
				continue;
			values[2] = TimestampTzGetDatum(key.run_at);
			values[3] = Int64GetDatum(key.id);
			nulls[2] = nulls[3] = false;
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	if (Floors != NULL && !noted_overflow)
		LWLockRelease(FloorsLock);
	return (Datum) 0;
}

/*
 * taskq._raise_scan_floor(jobs regclass, lane boolean, priority taskq.priority,
 *                         seen bigint, run_at timestamptz, id bigint)
 * The first pending job, as seen by a snapshot taken after _scan_floors
 * returned `seen`, becomes the floor when this transaction commits, lowered
 * to every key committed since.  No pending job at all: run_at infinity.
 */
PG_FUNCTION_INFO_V1(taskq_raise_scan_floor);
Datum
taskq_raise_scan_floor(PG_FUNCTION_ARGS)
{
	PendingRaise *r;

	/*
	 * A transaction snapshot may predate `seen`: what it missed is unknown.
	 * During recovery nothing would lower the floor again.
	 */
	if (Floors == NULL || IsolationUsesXactSnapshot() || RecoveryInProgress() ||
		n_raises >= TASKQ_NOTED_MAX)
		PG_RETURN_VOID();
	r = &raises[n_raises++];
	r->floor.of = floor_of(PG_GETARG_OID(0), PG_GETARG_BOOL(1), PG_GETARG_OID(2));
	r->seen = (uint64) PG_GETARG_INT64(3);
	r->floor.key.run_at = PG_GETARG_TIMESTAMPTZ(4);
	r->floor.key.id = PG_GETARG_INT64(5);
	r->nest_level = GetCurrentTransactionNestLevel();
	PG_RETURN_VOID();
}

/* Apply a raise, capped by the keys committed since its probe; FloorsLock held. */
static void
apply_raise(const PendingRaise *r)
{
	FloorKey	key = r->floor.key;
	ScanFloor  *f;

	if (r->seen > Floors->lowered || Floors->lowered - r->seen > TASKQ_LOWERED_RING)
		return;
	for (uint64 n = r->seen; n < Floors->lowered; n++)
	{
		ScanFloor  *l = &Floors->ring[n % TASKQ_LOWERED_RING];

		if (same_floor(&l->of, &r->floor.of) && key_cmp(&l->key, &key) < 0)
			key = l->key;
	}
	f = find_floor(&r->floor.of);
	for (int i = 0; f == NULL && i < TASKQ_SCAN_FLOORS; i++)
		if (Floors->floors[i].of.database == InvalidOid)
			f = &Floors->floors[i];
	if (f == NULL)
		f = &Floors->floors[Floors->next_evicted++ % TASKQ_SCAN_FLOORS];
	f->of = r->floor.of;
	f->key = key;
}

/*
 * Trigger jobs_truncated, AFTER TRUNCATE: the table's floors go (a bulk load
 * with triggers disabled may follow).
 */
PG_FUNCTION_INFO_V1(taskq_forget_scan_floors);
Datum
taskq_forget_scan_floors(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Oid			jobs;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "taskq: _forget_scan_floors must be a trigger");
	jobs = RelationGetRelid(trigdata->tg_relation);
	n_raises = 0;
	if (Floors != NULL)
	{
		LWLockAcquire(FloorsLock, LW_EXCLUSIVE);
		for (int i = 0; i < TASKQ_SCAN_FLOORS; i++)
			if (Floors->floors[i].of.database == MyDatabaseId &&
				Floors->floors[i].of.jobs == jobs)
				memset(&Floors->floors[i], 0, sizeof(ScanFloor));
		LWLockRelease(FloorsLock);
	}
	return PointerGetDatum(NULL);
}

/* column numbers of the jobs table the trigger last fired on */
static Oid	attnums_of = InvalidOid;
static int	att_lane;
static int	att_priority;
static int	att_run_at;
static int	att_id;
static int	att_tenant;
static int	att_fair_at;

/*
 * Triggers jobs_note_pending_insert (BEFORE INSERT: no event to queue) and
 * jobs_note_pending (AFTER UPDATE: a BEFORE UPDATE trigger would lock every
 * updated row first), FOR EACH ROW WHEN the new row is pending: remember the
 * lowest such key of the transaction.  (A row noted but not inserted after
 * all only lowers a floor, which is safe.)
 */
PG_FUNCTION_INFO_V1(taskq_note_pending);
Datum
taskq_note_pending(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		elog(ERROR, "taskq: _note_pending must be a row trigger");
	row = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? trigdata->tg_newtuple
		: trigdata->tg_trigtuple;
	desc = RelationGetDescr(trigdata->tg_relation);

	if (RelationGetRelid(trigdata->tg_relation) != attnums_of)
	{
		/* a column keeps its number for the life of the table */
		att_lane = SPI_fnumber(desc, "in_database");
		att_priority = SPI_fnumber(desc, "effective_priority");
		att_run_at = SPI_fnumber(desc, "run_at");
		att_id = SPI_fnumber(desc, "id");
		if (att_lane <= 0 || att_priority <= 0 || att_run_at <= 0 || att_id <= 0)
			elog(ERROR, "taskq: _note_pending fired on a table that is not taskq.jobs");
		/* both absent before the update to 0.2.0 */
		att_tenant = SPI_fnumber(desc, "tenant");
		att_fair_at = SPI_fnumber(desc, "fair_at");
		attnums_of = RelationGetRelid(trigdata->tg_relation);
	}
	/* a new tenant job gets its turn (tenants.c) */
	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) && att_tenant > 0 && att_fair_at > 0)
	{
		Datum		tenant = heap_getattr(row, att_tenant, desc, &isnull);

		if (!isnull)
		{
			Datum		turn;
			bool		turn_null = false;

			turn = TimestampTzGetDatum(taskq_tenant_turn(tenant,
				DatumGetTimestampTz(heap_getattr(row, att_run_at, desc, &isnull))));
			row = heap_modify_tuple_by_cols(row, desc, 1, &att_fair_at, &turn, &turn_null);
		}
	}
	taskq_note_pending_key(attnums_of,
						   DatumGetBool(heap_getattr(row, att_lane, desc, &isnull)),
						   DatumGetObjectId(heap_getattr(row, att_priority, desc, &isnull)),
						   DatumGetTimestampTz(heap_getattr(row, att_run_at, desc, &isnull)),
						   DatumGetInt64(heap_getattr(row, att_id, desc, &isnull)));
	/* BEFORE INSERT: the row goes in, with its turn if any */
	return PointerGetDatum(TRIGGER_FIRED_BEFORE(trigdata->tg_event) ? row : NULL);
}

/*
 * What the trigger notes for a pending row of jobs table jobs; also called
 * by job_rows.c, which inserts without firing it.
 */
void
taskq_note_pending_key(Oid jobs, bool lane, Oid priority, TimestampTz run_at, int64 id)
{
	FloorOf		of = floor_of(jobs, lane, priority);
	FloorKey	key = {run_at, id};
	ScanFloor  *n = find_noted(&of);

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
}

/*
 * At commit (the rows are visible by now): apply this transaction's raises,
 * then lower the floors to the keys it left pending and publish those keys
 * for claims in flight.
 */
void
taskq_scan_floors_at_commit(void)
{
	if (Floors == NULL || (n_noted == 0 && n_raises == 0 && !noted_overflow))
	{
		taskq_scan_floors_forget();
		return;
	}
	LWLockAcquire(FloorsLock, LW_EXCLUSIVE);
	for (int i = 0; i < n_raises; i++)
		apply_raise(&raises[i]);
	if (noted_overflow)
	{
		/* (more lanes and priorities than kept track of) drop every floor */
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
	LWLockRelease(FloorsLock);
	taskq_scan_floors_forget();
}

/* A savepoint rolled back: so are the raises its snapshots led to. */
void
taskq_scan_floors_at_subabort(void)
{
	int			level = GetCurrentTransactionNestLevel();

	while (n_raises > 0 && raises[n_raises - 1].nest_level >= level)
		n_raises--;
}

/* At abort, and before PREPARE (refused when keys are noted). */
void
taskq_scan_floors_forget(void)
{
	n_noted = 0;
	noted_overflow = false;
	n_raises = 0;
}

bool
taskq_scan_floors_noted(void)
{
	return n_noted > 0 || noted_overflow;
}
