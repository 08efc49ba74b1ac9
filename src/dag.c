/*
 * dag.c: the dependency graph's cycle check, and taskq's private locks.
 *
 * The cycle check walks the graph breadth-first from the new parent through
 * its ancestors with index scans, each job visited once: linear in the edges
 * read, where a recursive CTE carrying paths grew with the number of paths
 * (2^30 in a lattice of 60 jobs).
 *
 * taskq's heavyweight locks live in a space no SQL user can enter: advisory
 * lock tags whose fourth field is TASKQ_LOCK_SPACE, where pg_advisory_*
 * use 1 and 2 only (Citus keeps its own classes the same way).  Keys are
 * hashed into a few buckets, so a transaction holds at most a few of them
 * whatever it submits or claims.  With them, the count of running jobs a
 * claim of a concurrency-limited queue needs: a dirty read, so that claims
 * not yet committed count and no claim has to wait for another's commit.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "taskq.h"

/* the advisory tag's field4 that marks taskq's locks (pg_advisory_* use 1, 2) */
#define TASKQ_LOCK_SPACE 29812

/* field2: what the lock orders */
#define LOCK_CLASS_JOB_TYPE 1	/* submits against (un)registering a handler */
#define LOCK_CLASS_QUEUE_LIMIT 2	/* claims from concurrency-limited queues */
#define LOCK_CLASS_GRAPH 3		/* add_dependency's cycle check and its edge */

#define LOCK_BUCKETS 16

static void
set_lock_tag(LOCKTAG *tag, uint32 lock_class, uint32 bucket)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, lock_class, bucket, TASKQ_LOCK_SPACE);
}

static uint32
bucket_of(text *key)
{
	return DatumGetUInt32(hash_any((unsigned char *) VARDATA_ANY(key),
								   VARSIZE_ANY_EXHDR(key))) % LOCK_BUCKETS;
}

/*
 * The lock of a job type, to the end of the transaction: submits take it
 * shared before they look for the type's handler, (un)registering a
 * handler exclusive.
 */
void
taskq_lock_job_type(Datum job_type, bool exclusive)
{
	LOCKTAG		tag;

	set_lock_tag(&tag, LOCK_CLASS_JOB_TYPE, bucket_of(DatumGetTextPP(job_type)));
	if (!exclusive)
	{
		(void) LockAcquire(&tag, ShareLock, false, false);
		return;
	}

	/*
	 * (Un)registering a handler never queues for the lock: a waiting
	 * exclusive request would make every later submit of the bucket's job
	 * types wait behind it, for as long as one role keeps a transaction that
	 * submitted open.  It waits for the holders' transactions instead, as
	 * CREATE INDEX CONCURRENTLY does, then tries again.
	 */
	while (LockAcquire(&tag, ExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
	{
		VirtualTransactionId *holders = GetLockConflicts(&tag, ExclusiveLock, NULL);

		for (; VirtualTransactionIdIsValid(*holders); holders++)
			(void) VirtualXactLock(*holders, true);
		CHECK_FOR_INTERRUPTS();
	}
}

/* taskq._lock_job_type(job_type text, exclusive boolean) */
PG_FUNCTION_INFO_V1(taskq_lock_job_type_sql);
Datum
taskq_lock_job_type_sql(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_VOID();		/* no such job type: nothing to order */
	taskq_lock_job_type(PG_GETARG_DATUM(0), !PG_ARGISNULL(1) && PG_GETARG_BOOL(1));
	PG_RETURN_VOID();
}

/* the buckets of the queues of a text[], as a bit set */
static uint32
queue_buckets(ArrayType *queues)
{
	Datum	   *names;
	bool	   *nulls;
	int			n;
	uint32		buckets = 0;

	deconstruct_array(queues, TEXTOID, -1, false, TYPALIGN_INT, &names, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		if (!nulls[i])
			buckets |= UINT32_C(1) << bucket_of(DatumGetTextPP(names[i]));
	}
	return buckets;
}

/*
 * taskq._lock_queue_limits(queues text[], take boolean): take (or release)
 * the claim locks of these concurrency-limited queues.  A claim holds them
 * from counting the queues' running jobs until its own jobs are marked
 * running, then releases them: the next claim counts those (see
 * taskq._running_in_queues), and no claim waits for another's commit.
 */
PG_FUNCTION_INFO_V1(taskq_lock_queue_limits);
Datum
taskq_lock_queue_limits(PG_FUNCTION_ARGS)
{
	uint32		buckets;
	bool		take;
	LOCKTAG		tag;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_VOID();
	buckets = queue_buckets(PG_GETARG_ARRAYTYPE_P(0));
	take = PG_GETARG_BOOL(1);
	/* in bucket order, so that claims cannot deadlock */
	for (uint32 b = 0; b < LOCK_BUCKETS; b++)
	{
		if ((buckets & (UINT32_C(1) << b)) == 0)
			continue;
		set_lock_tag(&tag, LOCK_CLASS_QUEUE_LIMIT, b);
		if (take)
			(void) LockAcquire(&tag, ExclusiveLock, false, false);
		else
			LockRelease(&tag, ExclusiveLock, false);
	}
	PG_RETURN_VOID();
}

/*
 * taskq._lock_graph(take boolean): take (or release) the graph lock.
 * add_dependency holds it from its cycle check until its edge is written,
 * not to its commit: the check reads edges not yet committed too (see
 * taskq._cycle_path), so the next edit sees this one, and a role idle in
 * its transaction keeps nobody's edits waiting.
 */
PG_FUNCTION_INFO_V1(taskq_lock_graph);
Datum
taskq_lock_graph(PG_FUNCTION_ARGS)
{
	LOCKTAG		tag;

	set_lock_tag(&tag, LOCK_CLASS_GRAPH, 0);
	if (PG_GETARG_BOOL(0))
		(void) LockAcquire(&tag, ExclusiveLock, false, false);
	else
		LockRelease(&tag, ExclusiveLock, false);
	PG_RETURN_VOID();
}

static Oid
taskq_relation(const char *name)
{
	Oid			relid = get_relname_relid(name, get_namespace_oid("taskq", false));

	if (!OidIsValid(relid))
		elog(ERROR, "taskq: relation taskq.%s is missing", name);
	return relid;
}

static IndexScanDesc
begin_index_scan(Relation rel, Relation index, Snapshot snapshot, int nkeys)
{
#if PG_VERSION_NUM >= 180000
	return index_beginscan(rel, index, snapshot, NULL, nkeys, 0);
#else
	return index_beginscan(rel, index, snapshot, nkeys, 0);
#endif
}

typedef struct QueueName
{
	const char *name;
	int			index;			/* in the argument array */
} QueueName;

static int
queue_name_cmp(const void *a, const void *b)
{
	return strcmp(((const QueueName *) a)->name, ((const QueueName *) b)->name);
}

/*
 * taskq._running_in_queues(queues text[]) → integer[]: for each queue, how
 * many of its jobs are running, counting the claims of transactions still in
 * progress (a dirty read of jobs_running_idx).  A job another transaction is
 * finishing still counts until it commits: a claim may take fewer jobs than
 * the limit allows for that moment, never more.
 */
PG_FUNCTION_INFO_V1(taskq_running_in_queues);
Datum
taskq_running_in_queues(PG_FUNCTION_ARGS)
{
	ArrayType  *queues = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *names;
	bool	   *nulls;
	int			n;
	int			n_sorted = 0;
	QueueName  *sorted;
	Datum	   *counts;
	int32	   *count;
	Relation	rel;
	Relation	index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	SnapshotData dirty;
	AttrNumber	id_att;
	AttrNumber	queue_att;
	HASHCTL		ctl;
	HTAB	   *seen;

	deconstruct_array(queues, TEXTOID, -1, false, TYPALIGN_INT, &names, &nulls, &n);
	sorted = palloc(sizeof(QueueName) * Max(n, 1));
	count = palloc0(sizeof(int32) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			continue;
		sorted[n_sorted].name = TextDatumGetCString(names[i]);
		sorted[n_sorted].index = i;
		n_sorted++;
	}
	qsort(sorted, n_sorted, sizeof(QueueName), queue_name_cmp);

	/* a job seen twice (a version being updated and its successor) counts once */
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(int64);
	ctl.hcxt = CurrentMemoryContext;
	seen = hash_create("taskq running jobs", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	rel = table_open(taskq_relation("jobs"), AccessShareLock);
	index = index_open(taskq_relation("jobs_running_idx"), AccessShareLock);
	id_att = get_attnum(RelationGetRelid(rel), "id");
	queue_att = get_attnum(RelationGetRelid(rel), "queue");
	if (id_att == InvalidAttrNumber || queue_att == InvalidAttrNumber)
		elog(ERROR, "taskq: taskq.jobs has no id or queue column");
	InitDirtySnapshot(dirty);
	slot = table_slot_create(rel, NULL);
	scan = begin_index_scan(rel, index, &dirty, 0);
	index_rescan(scan, NULL, 0, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		Datum		id = slot_getattr(slot, id_att, &isnull);
		Datum		queue;
		QueueName	key;
		QueueName  *found;
		bool		dup;

		CHECK_FOR_INTERRUPTS();
		if (isnull)
			continue;
		queue = slot_getattr(slot, queue_att, &isnull);
		if (isnull)
			continue;
		key.name = TextDatumGetCString(queue);
		found = bsearch(&key, sorted, n_sorted, sizeof(QueueName), queue_name_cmp);
		pfree((char *) key.name);
		if (found == NULL)
			continue;
		{
			int64		job_id = DatumGetInt64(id);

			(void) hash_search(seen, &job_id, HASH_ENTER, &dup);
		}
		if (!dup)
			count[found->index]++;
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	table_close(rel, AccessShareLock);
	hash_destroy(seen);

	counts = palloc(sizeof(Datum) * Max(n, 1));
	for (int i = 0; i < n; i++)
		counts[i] = Int32GetDatum(count[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(counts, n, INT4OID, sizeof(int32), true,
										  TYPALIGN_INT));
}

/* a job reached by the walk, and the job it was reached from */
typedef struct Reached
{
	int64		id;
	int64		from;
} Reached;

/*
 * taskq._cycle_path(job_id bigint, depends_on bigint) → bigint[]: a shortest
 * path depends_on → … → job_id through existing edges (each job to one of its
 * parents), which the edge job_id → depends_on would close into a cycle; NULL
 * when there is none.  Breadth-first, parents in id order, each job visited
 * once.  Edges not yet committed count (a dirty read): the caller holds the
 * graph lock only until its edge is written, so an edge of a transaction
 * still open must close a cycle too (one that then rolls back only made
 * this check refuse an edge it could have taken).
 */
PG_FUNCTION_INFO_V1(taskq_cycle_path);
Datum
taskq_cycle_path(PG_FUNCTION_ARGS)
{
	int64		target;
	int64		start;
	MemoryContext walk_cxt;
	MemoryContext caller = CurrentMemoryContext;
	HASHCTL		ctl;
	HTAB	   *reached;
	int64	   *queue;
	int			queue_len = 0;
	int			queue_size = 1024;
	int			next = 0;
	bool		found_target = false;
	Relation	rel;
	Relation	index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData key;
	SnapshotData dirty;
	AttrNumber	parent_att;
	Reached    *r;
	bool		dup;
	ArrayType  *result = NULL;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	target = PG_GETARG_INT64(0);
	start = PG_GETARG_INT64(1);

	walk_cxt = AllocSetContextCreate(CurrentMemoryContext, "taskq cycle check",
									 ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(walk_cxt);
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(Reached);
	ctl.hcxt = walk_cxt;
	reached = hash_create("taskq reached jobs", 1024, &ctl,
						  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	queue = palloc(sizeof(int64) * queue_size);
	r = hash_search(reached, &start, HASH_ENTER, &dup);
	r->from = 0;
	queue[queue_len++] = start;

	/* the primary key (job_id, depends_on): a job's parents, in id order */
	rel = table_open(taskq_relation("job_dependencies"), AccessShareLock);
	index = index_open(taskq_relation("job_dependencies_pkey"), AccessShareLock);
	if (index->rd_index->indnatts < 2)
		elog(ERROR, "taskq: taskq.job_dependencies_pkey is not on (job_id, depends_on)");
	parent_att = index->rd_index->indkey.values[1];
	slot = table_slot_create(rel, NULL);
	InitDirtySnapshot(dirty);
	scan = begin_index_scan(rel, index, &dirty, 1);

	while (next < queue_len && !found_target)
	{
		int64		node = queue[next++];

		CHECK_FOR_INTERRUPTS();
		ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(node));
		index_rescan(scan, &key, 1, NULL, 0);
		while (index_getnext_slot(scan, ForwardScanDirection, slot))
		{
			bool		isnull;
			int64		parent = DatumGetInt64(slot_getattr(slot, parent_att, &isnull));

			if (isnull)
				continue;
			r = hash_search(reached, &parent, HASH_ENTER, &dup);
			if (dup)
				continue;
			r->from = node;
			if (parent == target)
			{
				found_target = true;
				break;
			}
			if (queue_len == queue_size)
			{
				queue_size *= 2;
				queue = repalloc_huge(queue, sizeof(int64) * queue_size);
			}
			queue[queue_len++] = parent;
		}
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	table_close(rel, AccessShareLock);

	if (found_target)
	{
		/* back from job_id to depends_on, then reversed */
		int			len = 0;
		Datum	   *path;
		int64		at = target;

		for (;;)
		{
			len++;
			if (at == start)
				break;
			r = hash_search(reached, &at, HASH_FIND, NULL);
			at = r->from;
		}
		MemoryContextSwitchTo(caller);
		path = palloc(sizeof(Datum) * len);
		at = target;
		for (int i = len - 1; i >= 0; i--)
		{
			path[i] = Int64GetDatum(at);
			if (i > 0)
			{
				r = hash_search(reached, &at, HASH_FIND, NULL);
				at = r->from;
			}
		}
		result = construct_array(path, len, INT8OID, sizeof(int64), FLOAT8PASSBYVAL,
								 TYPALIGN_DOUBLE);
	}
	MemoryContextSwitchTo(caller);
	MemoryContextDelete(walk_cxt);
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_ARRAYTYPE_P(result);
}
