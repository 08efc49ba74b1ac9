/*
 * fairness.c: fair scheduling, the C half of issue 23.
 *
 * Rate limits are token buckets in shared memory, one per rate-limited
 * queue of a database, shared by the executors and by external claims.
 * taskq._claim reads a bucket's tokens and takes those of the jobs it
 * claimed while it holds the queue's claim lock (src/dag.c), so two claims
 * never spend the same token.  A bucket is refilled from the rate and burst
 * the claim passes in (read from taskq.queues), so a changed limit applies
 * at the next claim.  Buckets start empty, at server start and when first
 * used: a restart never grants a burst on top of what the window already
 * took.  A full table drops its least recently used bucket, which starts
 * empty again when next used: it can only slow a queue, never speed it up.
 *
 * Concurrency keys need no shared state: the running jobs of each key are
 * counted by a dirty read of taskq.jobs, as the queues' concurrency limits
 * are, so completions write nothing extra.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "taskq.h"

#define TASKQ_RATE_BUCKETS 512
#define TASKQ_RATE_LOCK "taskq rate limits"

typedef struct RateBucket
{
	Oid			database;		/* InvalidOid: free */
	uint64		queue_hash;		/* of the queue's name */
	double		tokens;
	TimestampTz refilled;		/* tokens are as of then */
	uint64		throttled;		/* claims that found no token */
	uint64		taken;			/* tokens spent */
	TimestampTz throttled_since;	/* every claim since was throttled; 0: the
									 * last one was not */
} RateBucket;

typedef struct RateBuckets
{
	RateBucket	bucket[TASKQ_RATE_BUCKETS];
} RateBuckets;

static RateBuckets *Buckets = NULL;
static LWLock *BucketsLock = NULL;

Size
taskq_rate_buckets_shmem_size(void)
{
	return MAXALIGN(sizeof(RateBuckets));
}

void
taskq_rate_buckets_shmem_request(void)
{
	RequestNamedLWLockTranche(TASKQ_RATE_LOCK, 1);
}

/* at server start, every bucket empty (called under AddinShmemInitLock) */
void
taskq_rate_buckets_shmem_init(void)
{
	bool		found;

	Buckets = ShmemInitStruct("taskq rate limits", taskq_rate_buckets_shmem_size(), &found);
	BucketsLock = &(GetNamedLWLockTranche(TASKQ_RATE_LOCK))->lock;
	if (!found)
		memset(Buckets, 0, sizeof(RateBuckets));
}

static uint64
name_hash(text *name)
{
	return hash_bytes_extended((const unsigned char *) VARDATA_ANY(name),
							   VARSIZE_ANY_EXHDR(name), 0x7461736b);
}

/*
 * The bucket of a queue of this database, made (empty, as of now) if it has
 * none, in place of the least recently used one when the table is full.
 * Caller holds BucketsLock exclusively.
 */
static RateBucket *
bucket_of(uint64 hash, TimestampTz now)
{
	RateBucket *victim = NULL;

	for (int i = 0; i < TASKQ_RATE_BUCKETS; i++)
	{
		RateBucket *b = &Buckets->bucket[i];

		if (b->database == MyDatabaseId && b->queue_hash == hash)
			return b;
		if (victim == NULL || b->database == InvalidOid ||
			(victim->database != InvalidOid && b->refilled < victim->refilled))
			victim = b;
	}
	memset(victim, 0, sizeof(RateBucket));
	victim->database = MyDatabaseId;
	victim->queue_hash = hash;
	victim->refilled = now;
	return victim;
}

/* add what the rate earned since the last refill, up to burst */
static void
refill(RateBucket *b, double rate, int32 burst, TimestampTz now)
{
	if (now > b->refilled)
	{
		b->tokens += rate * (double) (now - b->refilled) / USECS_PER_SEC;
		b->refilled = now;
	}
	if (b->tokens > burst)
		b->tokens = burst;
}

static void
check_shared(void)
{
	if (Buckets == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("taskq rate limits need taskq in shared_preload_libraries")));
}

/* deconstruct three parallel arrays of n queues, rates and bursts */
static int
rate_args(FunctionCallInfo fcinfo, Datum **names, Datum **rates, Datum **bursts)
{
	bool	   *nulls;
	int			n,
				n_rates,
				n_bursts;

	deconstruct_array(PG_GETARG_ARRAYTYPE_P(0), TEXTOID, -1, false, TYPALIGN_INT,
					  names, &nulls, &n);
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(1), FLOAT8OID, sizeof(float8), FLOAT8PASSBYVAL,
					  TYPALIGN_DOUBLE, rates, &nulls, &n_rates);
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(2), INT4OID, sizeof(int32), true, TYPALIGN_INT,
					  bursts, &nulls, &n_bursts);
	if (n_rates != n || n_bursts != n)
		elog(ERROR, "taskq: rate arrays of different lengths");
	return n;
}

/*
 * taskq._rate_tokens(queues text[], rates float8[], bursts int[], now
 * timestamptz) → int[]: the whole tokens each queue's bucket holds at now,
 * the claim's time (refilled at its rate, in jobs per second, up to its
 * burst).  Claims holding the claim locks come in the order of their times,
 * so jobs claimed (started_at) in any window of length T number at most
 * burst + rate x T.
 */
PG_FUNCTION_INFO_V1(taskq_rate_tokens);
Datum
taskq_rate_tokens(PG_FUNCTION_ARGS)
{
	Datum	   *names;
	Datum	   *rates;
	Datum	   *bursts;
	int			n = rate_args(fcinfo, &names, &rates, &bursts);
	Datum	   *tokens = palloc(sizeof(Datum) * Max(n, 1));
	TimestampTz now = PG_GETARG_TIMESTAMPTZ(3);

	check_shared();
	LWLockAcquire(BucketsLock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		RateBucket *b = bucket_of(name_hash(DatumGetTextPP(names[i])), now);

		refill(b, DatumGetFloat8(rates[i]), DatumGetInt32(bursts[i]), now);
		tokens[i] = Int32GetDatum((int32) b->tokens);
	}
	LWLockRelease(BucketsLock);
	PG_RETURN_ARRAYTYPE_P(construct_array(tokens, n, INT4OID, sizeof(int32), true, TYPALIGN_INT));
}

/*
 * taskq._rate_take(queues text[], counts int[], throttled bool[]): spend
 * counts[i] tokens of queues[i]'s bucket (refilled by taskq._rate_tokens
 * under the same claim lock, so they are there), and count a throttled claim
 * where throttled[i]; a claim not throttled ends the bucket's throttled span.
 */
PG_FUNCTION_INFO_V1(taskq_rate_take);
Datum
taskq_rate_take(PG_FUNCTION_ARGS)
{
	Datum	   *names;
	Datum	   *counts;
	Datum	   *throttled;
	bool	   *nulls;
	int			n;
	int			n_counts;
	int			n_throttled;
	TimestampTz now = GetCurrentTimestamp();

	check_shared();
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(0), TEXTOID, -1, false, TYPALIGN_INT,
					  &names, &nulls, &n);
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(1), INT4OID, sizeof(int32), true, TYPALIGN_INT,
					  &counts, &nulls, &n_counts);
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(2), BOOLOID, 1, true, TYPALIGN_CHAR,
					  &throttled, &nulls, &n_throttled);
	if (n_counts != n || n_throttled != n)
		elog(ERROR, "taskq: rate arrays of different lengths");
	LWLockAcquire(BucketsLock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		RateBucket *b = bucket_of(name_hash(DatumGetTextPP(names[i])), now);
		int32		c = DatumGetInt32(counts[i]);

		b->tokens -= c;
		b->taken += c;
		if (DatumGetBool(throttled[i]))
		{
			b->throttled++;
			if (b->throttled_since == 0)
				b->throttled_since = now;
		}
		else
			b->throttled_since = 0;
	}
	LWLockRelease(BucketsLock);
	PG_RETURN_VOID();
}

/*
 * taskq._rate_state(queues text[], rates float8[], bursts int[]) → table
 * (queue, tokens, wait_seconds, throttled, taken, throttled_seconds): each
 * bucket as of now, without spending; wait_seconds until its next whole
 * token; throttled_seconds since every claim of the queue was throttled,
 * NULL when the last one was not or the bucket has filled up since (no
 * claim came to be throttled).  The bucket itself is left as the last claim
 * refilled it: refilling it here, outside the claim locks, could give a
 * claim stamped earlier tokens earned later.
 */
PG_FUNCTION_INFO_V1(taskq_rate_state);
Datum
taskq_rate_state(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum	   *names;
	Datum	   *rates;
	Datum	   *bursts;
	int			n = rate_args(fcinfo, &names, &rates, &bursts);
	TimestampTz now = GetCurrentTimestamp();

	check_shared();
	InitMaterializedSRF(fcinfo, 0);
	LWLockAcquire(BucketsLock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		RateBucket copy = *bucket_of(name_hash(DatumGetTextPP(names[i])), now);
		RateBucket *b = &copy;
		double		rate = DatumGetFloat8(rates[i]);
		Datum		values[6];
		bool		nulls[6] = {false};

		refill(b, rate, DatumGetInt32(bursts[i]), now);
		values[0] = names[i];
		values[1] = Float8GetDatum(b->tokens);
		values[2] = Float8GetDatum(b->tokens >= 1 ? 0 : (1 - b->tokens) / rate);
		values[3] = Int64GetDatum((int64) b->throttled);
		values[4] = Int64GetDatum((int64) b->taken);
		if (b->throttled_since != 0 && b->tokens < DatumGetInt32(bursts[i]))
			values[5] = Float8GetDatum((double) (now - b->throttled_since) / USECS_PER_SEC);
		else
			nulls[5] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(BucketsLock);
	return (Datum) 0;
}

static Oid
jobs_relation(const char *name)
{
	Oid			relid = get_relname_relid(name, get_namespace_oid("taskq", false));

	if (!OidIsValid(relid))
		elog(ERROR, "taskq: relation taskq.%s is missing", name);
	return relid;
}

/*
 * taskq._running_per_key(queues text[]) → table (queue, key, n): the running
 * jobs with a concurrency key in these queues, per queue and key, counting
 * claims not yet committed (a dirty read, as taskq._running_in_queues: the
 * caller holds the queues' claim locks, so a claim sees every earlier one).
 */
PG_FUNCTION_INFO_V1(taskq_running_per_key);
Datum
taskq_running_per_key(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum	   *names;
	bool	   *nulls;
	int			n;
	Relation	rel;
	Relation	index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	SnapshotData dirty;
	AttrNumber	id_att,
				queue_att,
				key_att;
	HASHCTL		ctl;
	HTAB	   *seen;
	HTAB	   *counts;
	HASH_SEQ_STATUS it;
	struct KeyCount
	{
		char		name[2 * (200 * 4 + 1)];	/* queue NUL key: two names */
		int32		n;
	}		   *kc;

	deconstruct_array(PG_GETARG_ARRAYTYPE_P(0), TEXTOID, -1, false, TYPALIGN_INT,
					  &names, &nulls, &n);
	InitMaterializedSRF(fcinfo, 0);

	/* a job seen twice (a version being updated and its successor) counts once */
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(int64);
	ctl.hcxt = CurrentMemoryContext;
	seen = hash_create("taskq running keyed jobs", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ctl.keysize = sizeof(kc->name);
	ctl.entrysize = sizeof(*kc);
	counts = hash_create("taskq running per key", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	rel = table_open(jobs_relation("jobs"), AccessShareLock);
	index = index_open(jobs_relation("jobs_running_idx"), AccessShareLock);
	id_att = get_attnum(RelationGetRelid(rel), "id");
	queue_att = get_attnum(RelationGetRelid(rel), "queue");
	key_att = get_attnum(RelationGetRelid(rel), "concurrency_key");
	if (id_att == InvalidAttrNumber || queue_att == InvalidAttrNumber || key_att == InvalidAttrNumber)
		elog(ERROR, "taskq: taskq.jobs has no id, queue or concurrency_key column");
	InitDirtySnapshot(dirty);
	slot = table_slot_create(rel, NULL);
	scan = taskq_index_beginscan(rel, index, &dirty, 0);
	index_rescan(scan, NULL, 0, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		Datum		d;
		bool		isnull;
		bool		dup;
		bool		named = false;
		int64		job_id;
		text	   *queue;
		text	   *key;
		char		name[sizeof(kc->name)];
		int			qlen,
					klen;

		CHECK_FOR_INTERRUPTS();
		d = slot_getattr(slot, key_att, &isnull);
		if (isnull)
			continue;
		key = DatumGetTextPP(d);
		d = slot_getattr(slot, queue_att, &isnull);
		if (isnull)
			continue;
		queue = DatumGetTextPP(d);
		/* byte equality: queue names are compared as taskq.queues' key is */
		for (int i = 0; i < n && !named; i++)
		{
			text	   *name_i = DatumGetTextPP(names[i]);

			named = !nulls[i] && VARSIZE_ANY_EXHDR(name_i) == VARSIZE_ANY_EXHDR(queue) &&
				memcmp(VARDATA_ANY(name_i), VARDATA_ANY(queue), VARSIZE_ANY_EXHDR(queue)) == 0;
		}
		if (!named)
			continue;
		job_id = DatumGetInt64(slot_getattr(slot, id_att, &isnull));
		(void) hash_search(seen, &job_id, HASH_ENTER, &dup);
		if (dup)
			continue;
		qlen = Min(VARSIZE_ANY_EXHDR(queue), 200 * 4);
		klen = Min(VARSIZE_ANY_EXHDR(key), 200 * 4);
		memset(name, 0, sizeof(name));
		memcpy(name, VARDATA_ANY(queue), qlen);
		memcpy(name + qlen + 1, VARDATA_ANY(key), klen);
		kc = hash_search(counts, name, HASH_ENTER, &dup);
		kc->n = dup ? kc->n + 1 : 1;
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	table_close(rel, AccessShareLock);

	hash_seq_init(&it, counts);
	while ((kc = hash_seq_search(&it)) != NULL)
	{
		Datum		values[3];
		bool		vnulls[3] = {false};

		values[0] = CStringGetTextDatum(kc->name);
		values[1] = CStringGetTextDatum(kc->name + strlen(kc->name) + 1);
		values[2] = Int32GetDatum(kc->n);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, vnulls);
	}
	return (Datum) 0;
}
