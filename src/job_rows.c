/*
 * job_rows.c
 *		Plain jobs' rows, written straight into the heap and the indexes of
 *		taskq.jobs, for taskq.submit and for submit_many's plain batches
 *		(taskq._plain_batch tells them, taskq._insert_plain_batch writes
 *		them); a submit writes no log row: history records what went wrong.
 *
 * taskq.submit of a job without parents or idempotency key is what every
 * producer calls, once per job.  Through SPI its INSERT cost more than the
 * writes themselves: each call started and ended an executor for two
 * ModifyTables, a join with taskq.queues and a subplan on taskq.handlers,
 * and parsed the table's CHECK constraints and its trigger's WHEN clause
 * again (bench/README.md).  Here the two lookups are index probes, the row
 * is formed in C and inserted as the logical replication apply worker
 * inserts them, and what the trigger would note is noted directly.
 *
 * What the SQL path gets from the table is repeated here: submit.c has
 * checked every value the CHECK constraints check, and the defaults below
 * are those of CREATE TABLE.  Where the tables are not as this file knows
 * them (another column, type, default or constraint, another INSERT
 * trigger, a rule, forced row security, another owner), it declines and
 * the caller takes the SQL path: this file checks them once per backend
 * and again after any invalidation of those tables.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_enum.h"
#include "catalog/pg_type.h"
#include "catalog/pg_trigger.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/primnodes.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "taskq.h"

/* a column's type: a built-in one, or one of taskq's enums */
#define PRIORITY_TYPE ((Oid) 1)
#define STATUS_TYPE ((Oid) 2)

/* a column's default, as CREATE TABLE gives it */
typedef enum ColumnDefault
{
	NO_DEFAULT,
	IDENTITY,					/* GENERATED ALWAYS AS IDENTITY */
	ZERO,						/* DEFAULT 0 */
	FALSE_,						/* DEFAULT false */
	NOW,						/* DEFAULT now() */
	CLOCK						/* DEFAULT clock_timestamp() */
} ColumnDefault;

/* What this file expects of a column: anything else and it declines. */
typedef struct Column
{
	const char *name;
	Oid			type;
	bool		not_null;
	ColumnDefault default_;
} Column;

/* taskq.jobs' columns, all of them */
enum
{
	J_ID, J_QUEUE, J_JOB_TYPE, J_PRIORITY, J_EFFECTIVE_PRIORITY, J_STATUS, J_PAYLOAD,
	J_RESULT, J_LAST_ERROR, J_ATTEMPTS, J_MAX_ATTEMPTS, J_BACKOFF, J_TIMEOUT,
	J_CPU_UNITS, J_MEMORY_MB, J_RUN_AT, J_IDEMPOTENCY_KEY, J_OWNER, J_WORKER,
	J_LEASE_EXPIRES_AT, J_UNFINISHED_PARENTS, J_IN_DATABASE, J_AGED_AT, J_CREATED_AT,
	J_STARTED_AT, J_FINISHED_AT, J_UPDATED_AT, J_CONCURRENCY_KEY, J_TENANT, J_FAIR_AT,
	N_JOB_COLUMNS
};

static const Column job_columns[N_JOB_COLUMNS] = {
	{"id", INT8OID, true, IDENTITY},
	{"queue", TEXTOID, true, NO_DEFAULT},
	{"job_type", TEXTOID, true, NO_DEFAULT},
	{"priority", PRIORITY_TYPE, true, NO_DEFAULT},
	{"effective_priority", PRIORITY_TYPE, true, NO_DEFAULT},
	{"status", STATUS_TYPE, true, NO_DEFAULT},
	{"payload", JSONBOID, true, NO_DEFAULT},
	{"result", JSONBOID, false, NO_DEFAULT},
	{"last_error", TEXTOID, false, NO_DEFAULT},
	{"attempts", INT4OID, true, ZERO},
	{"max_attempts", INT4OID, true, NO_DEFAULT},
	{"backoff", INTERVALOID, true, NO_DEFAULT},
	{"timeout", INTERVALOID, false, NO_DEFAULT},
	{"cpu_units", INT4OID, true, NO_DEFAULT},
	{"memory_mb", INT4OID, true, NO_DEFAULT},
	{"run_at", TIMESTAMPTZOID, true, NO_DEFAULT},
	{"idempotency_key", TEXTOID, false, NO_DEFAULT},
	{"owner", REGROLEOID, true, NO_DEFAULT},
	{"worker", TEXTOID, false, NO_DEFAULT},
	{"lease_expires_at", TIMESTAMPTZOID, false, NO_DEFAULT},
	{"unfinished_parents", INT4OID, true, ZERO},
	{"in_database", BOOLOID, true, FALSE_},
	{"aged_at", TIMESTAMPTZOID, false, NO_DEFAULT},
	{"created_at", TIMESTAMPTZOID, true, NOW},
	{"started_at", TIMESTAMPTZOID, false, NO_DEFAULT},
	{"finished_at", TIMESTAMPTZOID, false, NO_DEFAULT},
	{"updated_at", TIMESTAMPTZOID, true, NOW},
	{"concurrency_key", TEXTOID, false, NO_DEFAULT},
	{"tenant", TEXTOID, false, NO_DEFAULT},
	{"fair_at", TIMESTAMPTZOID, false, NO_DEFAULT}
};

/*
 * The CHECK constraints of taskq.jobs, which submit.c's checks cover (with
 * their own messages); any other constraint and this file declines.
 */
static const char *const job_checks[] = {
	"jobs_max_attempts_check", "jobs_timeout_check", "jobs_cpu_units_check",
	"jobs_memory_mb_check"
};

/* taskq.jobs's INSERT trigger and its function; what it does is done here */
#define JOBS_INSERT_TRIGGER "jobs_note_pending_insert"
#define JOBS_INSERT_TRIGGER_FUNCTION "_note_pending"
/* the payload size check (limits.c), which write_job makes itself */
#define JOBS_SIZE_TRIGGER "jobs_check_payload_size"
#define JOBS_SIZE_TRIGGER_FUNCTION "_check_size"

/*
 * What this backend knows of the tables, found once per install; any
 * invalidation of a relation resets it (DROP, ALTER, CREATE TRIGGER).
 */
typedef struct JobTables
{
	bool		known;
	bool		usable;			/* the tables are as this file knows them */
	Oid			jobs;
	Oid			owner;			/* the role that may write it so */
	Oid			queues;
	Oid			queues_key;		/* primary key index on name */
	Oid			queues_key_collation;
	Oid			handlers;
	Oid			handlers_key;	/* primary key index on job_type */
	Oid			handlers_key_collation;
	Oid			jobs_sequence;	/* identity of jobs.id */
	Oid			pending;		/* enum value 'pending' of taskq.job_status */
	Oid			priority_type;	/* taskq.priority */
	AttrNumber	job_att[N_JOB_COLUMNS];
	AttrNumber	queue_name;
	AttrNumber	queue_default_timeout;
	AttrNumber	queue_default_max_attempts;
	AttrNumber	handler_job_type;
} JobTables;

static JobTables tables;
static bool callback_registered = false;
static uint64 invalidations = 0;	/* of the tables, seen by forget_tables */

static void
forget_tables(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == tables.jobs ||
		relid == tables.queues || relid == tables.handlers)
	{
		tables.known = false;
		invalidations++;
	}
}

/* Column name's number in rel, or InvalidAttrNumber. */
static AttrNumber
column(Relation rel, const char *name)
{
	TupleDesc	desc = RelationGetDescr(rel);

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->attnum;
	}
	return InvalidAttrNumber;
}

/* Is the default of column att (of desc) the expression expected? */
static bool
default_is(TupleDesc desc, AttrNumber att, ColumnDefault expected)
{
	Node	   *expr = NULL;

	for (int i = 0; desc->constr != NULL && i < desc->constr->num_defval; i++)
		if (desc->constr->defval[i].adnum == att)
			expr = stringToNode(desc->constr->defval[i].adbin);
	if (expr == NULL)
		return false;
	switch (expected)
	{
		case ZERO:
			return IsA(expr, Const) && ((Const *) expr)->consttype == INT4OID &&
				!((Const *) expr)->constisnull && DatumGetInt32(((Const *) expr)->constvalue) == 0;
		case FALSE_:
			return IsA(expr, Const) && ((Const *) expr)->consttype == BOOLOID &&
				!((Const *) expr)->constisnull && !DatumGetBool(((Const *) expr)->constvalue);
		case NOW:
			return IsA(expr, FuncExpr) && ((FuncExpr *) expr)->funcid == F_NOW;
		case CLOCK:
			return IsA(expr, FuncExpr) && ((FuncExpr *) expr)->funcid == F_CLOCK_TIMESTAMP;
		default:
			return false;
	}
}

/*
 * Does rel have exactly these columns (their types, NOT NULL and defaults),
 * and nothing an INSERT would compute that this file does not: no dropped
 * or generated column, no other default?  types: taskq's enum types.
 */
static bool
columns_are(Relation rel, const Column *columns, int n, const Oid *types, AttrNumber *atts)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			defaults = 0;

	if (desc->natts != n || (desc->constr && desc->constr->has_generated_stored))
		return false;
	for (int i = 0; i < n; i++)
	{
		const Column *c = &columns[i];
		Form_pg_attribute att;
		Oid			type = c->type == PRIORITY_TYPE || c->type == STATUS_TYPE ?
			types[c->type - 1] : c->type;

		if ((atts[i] = column(rel, c->name)) == InvalidAttrNumber)
			return false;
		att = TupleDescAttr(desc, atts[i] - 1);
		if (att->atttypid != type || att->atttypmod != -1 || att->attnotnull != c->not_null ||
			(att->attidentity == ATTRIBUTE_IDENTITY_ALWAYS) != (c->default_ == IDENTITY) ||
			att->atthasdef != (c->default_ > IDENTITY))
			return false;
		if (c->default_ > IDENTITY)
		{
			if (!default_is(desc, atts[i], c->default_))
				return false;
			defaults++;
		}
	}
	return desc->constr == NULL ? defaults == 0 : desc->constr->num_defval == defaults;
}

/* Are rel's CHECK constraints exactly these (none when n is 0)? */
static bool
checks_are(Relation rel, const char *const *names, int n)
{
	TupleConstr *constr = RelationGetDescr(rel)->constr;
	int			found = constr == NULL ? 0 : constr->num_check;

	if (found != n)
		return false;
	for (int i = 0; i < found; i++)
	{
		bool		known = false;

		for (int k = 0; k < n; k++)
			known |= strcmp(constr->check[i].ccname, names[k]) == 0;
		if (!known)
			return false;
	}
	return true;
}

/* Is t the BEFORE INSERT row trigger name of taskq's function function? */
static bool
is_insert_trigger(Trigger *t, const char *name, const char *function, Oid schema)
{
	char	   *fn;

	if (strcmp(t->tgname, name) != 0 ||
		t->tgtype != (TRIGGER_TYPE_ROW | TRIGGER_TYPE_BEFORE | TRIGGER_TYPE_INSERT) ||
		get_func_namespace(t->tgfoid) != schema)
		return false;
	fn = get_func_name(t->tgfoid);
	return fn != NULL && strcmp(fn, function) == 0;
}

/*
 * Are rel's INSERT triggers exactly the one named allowed, a BEFORE row
 * trigger of taskq's function allowed_function (or none when NULL), and for
 * taskq.jobs also the size check, which write_job does itself?
 */
static bool
insert_triggers_are(Relation rel, const char *allowed, const char *allowed_function,
					Oid schema)
{
	TriggerDesc *trigdesc = rel->trigdesc;
	int			found = 0;

	for (int i = 0; trigdesc != NULL && i < trigdesc->numtriggers; i++)
	{
		Trigger    *t = &trigdesc->triggers[i];

		if (!TRIGGER_FOR_INSERT(t->tgtype))
			continue;
		if (allowed != NULL && is_insert_trigger(t, allowed, allowed_function, schema))
			found++;
		else if (allowed == NULL ||
				 !is_insert_trigger(t, JOBS_SIZE_TRIGGER, JOBS_SIZE_TRIGGER_FUNCTION, schema))
			return false;
	}
	return found == (allowed == NULL ? 0 : 1);
}

/*
 * An ordinary table, no partition, without rules, whose owner may insert
 * into it (no forced row security).
 */
static bool
plain_table(Relation rel)
{
	return rel->rd_rel->relkind == RELKIND_RELATION && !rel->rd_rel->relispartition &&
		rel->rd_rules == NULL && !rel->rd_rel->relforcerowsecurity;
}

/*
 * Is index key_index a one-column index on column key of its table?  Its
 * collation, which the scan keys must use, in *collation.
 */
static bool
key_index_on(Oid key_index, AttrNumber key, Oid *collation)
{
	Relation	index;
	bool		ok;

	if (!OidIsValid(key_index) || key == InvalidAttrNumber)
		return false;
	index = index_open(key_index, AccessShareLock);
	ok = index->rd_index->indnkeyatts == 1 && index->rd_index->indkey.values[0] == key &&
		index->rd_rel->relam == BTREE_AM_OID;
	*collation = index->rd_indcollation[0];
	index_close(index, AccessShareLock);
	return ok;
}

/* Look the tables up and check them; tables.usable says whether they will do. */
static void
know_tables(void)
{
	Oid			schema = get_namespace_oid("taskq", false);
	Relation	jobs,
				queues,
				handlers;
	Oid			enum_types[2];
	uint64		invalidations_before;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(forget_tables, (Datum) 0);
		callback_registered = true;
	}
	memset(&tables, 0, sizeof(tables));
	invalidations_before = invalidations;
	tables.jobs = get_relname_relid("jobs", schema);
	tables.queues = get_relname_relid("queues", schema);
	tables.handlers = get_relname_relid("handlers", schema);
	if (!OidIsValid(tables.jobs) ||
		!OidIsValid(tables.queues) || !OidIsValid(tables.handlers))
		elog(ERROR, "taskq: a table of the extension is missing");

	jobs = table_open(tables.jobs, AccessShareLock);
	queues = table_open(tables.queues, AccessShareLock);
	handlers = table_open(tables.handlers, AccessShareLock);

	enum_types[PRIORITY_TYPE - 1] = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
													CStringGetDatum("priority"),
													ObjectIdGetDatum(schema));
	enum_types[STATUS_TYPE - 1] = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
												  CStringGetDatum("job_status"),
												  ObjectIdGetDatum(schema));
	tables.owner = jobs->rd_rel->relowner;
	tables.usable =
		plain_table(jobs) &&
		columns_are(jobs, job_columns, N_JOB_COLUMNS, enum_types, tables.job_att) &&
		checks_are(jobs, job_checks, lengthof(job_checks)) &&
		insert_triggers_are(jobs, JOBS_INSERT_TRIGGER, JOBS_INSERT_TRIGGER_FUNCTION, schema);
	if (tables.usable)
	{
		tables.queue_name = column(queues, "name");
		tables.queue_default_timeout = column(queues, "default_timeout");
		tables.queue_default_max_attempts = column(queues, "default_max_attempts");
		tables.handler_job_type = column(handlers, "job_type");
		tables.queues_key = RelationGetPrimaryKeyIndex(queues, false);
		tables.handlers_key = RelationGetPrimaryKeyIndex(handlers, false);
		tables.jobs_sequence = getIdentitySequence(jobs, tables.job_att[J_ID], true);
		tables.priority_type = enum_types[PRIORITY_TYPE - 1];
		tables.pending = GetSysCacheOid2(ENUMTYPOIDNAME, Anum_pg_enum_oid,
										 ObjectIdGetDatum(enum_types[STATUS_TYPE - 1]),
										 CStringGetDatum("pending"));
		tables.usable =
			key_index_on(tables.queues_key, tables.queue_name, &tables.queues_key_collation) &&
			key_index_on(tables.handlers_key, tables.handler_job_type,
						 &tables.handlers_key_collation) &&
			tables.queue_default_timeout != InvalidAttrNumber &&
			tables.queue_default_max_attempts != InvalidAttrNumber &&
			TupleDescAttr(RelationGetDescr(queues), tables.queue_default_timeout - 1)->atttypid == INTERVALOID &&
			TupleDescAttr(RelationGetDescr(queues), tables.queue_default_max_attempts - 1)->atttypid == INT4OID &&
			OidIsValid(tables.jobs_sequence) &&
			OidIsValid(tables.pending);
	}

	table_close(handlers, AccessShareLock);
	table_close(queues, AccessShareLock);
	table_close(jobs, AccessShareLock);
	/* an invalidation that came while we looked: look again next time */
	tables.known = invalidations == invalidations_before;
}

/*
 * The row of table rel whose key column (index key_index, its first
 * column, collation collation) equals the text key, as snapshot sees it;
 * found: its columns want[0..n-1], copied, into values/nulls.
 */
static bool
find_by_key(Relation rel, Oid key_index, AttrNumber key_column, Oid collation, Datum key,
			Snapshot snapshot, const AttrNumber *want, int n, Datum *values, bool *nulls)
{
	TupleDesc	desc = RelationGetDescr(rel);
	ScanKeyData skey;
	SysScanDesc scan;
	HeapTuple	tuple;
	bool		found;

	ScanKeyEntryInitialize(&skey, 0, key_column, BTEqualStrategyNumber, InvalidOid,
						   collation, F_TEXTEQ, key);
	scan = systable_beginscan(rel, key_index, true, snapshot, 1, &skey);
	tuple = systable_getnext(scan);
	found = HeapTupleIsValid(tuple);
	for (int i = 0; found && i < n; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, want[i] - 1);

		values[i] = heap_getattr(tuple, want[i], desc, &nulls[i]);
		if (!nulls[i])
			values[i] = datumCopy(values[i], att->attbyval, att->attlen);
	}
	systable_endscan(scan);
	return found;
}

/*
 * The tables opened, locked and checked for one statement's jobs, with what
 * inserting into them needs; all of it in estate's memory but the snapshot.
 */
typedef struct JobWriter
{
	Relation	jobs;
	Relation	queues;
	Relation	handlers;
	Snapshot	snapshot;		/* the lookups', one for the statement */
	EState	   *estate;
	ResultRelInfo *job_rri;
	TupleTableSlot *job_slot;
} JobWriter;

/* a queue's defaults, as taskq.queues has them (or not: found false) */
typedef struct QueueDefaults
{
	bool		found;
	NullableDatum max_attempts;
	NullableDatum timeout;
} QueueDefaults;

static void
close_tables(JobWriter *w)
{
	table_close(w->handlers, NoLock);
	table_close(w->queues, NoLock);
	table_close(w->jobs, NoLock);
}

static ResultRelInfo *
open_for_insert(JobWriter *w, Relation rel, TupleTableSlot **slot)
{
	ResultRelInfo *rri = makeNode(ResultRelInfo);

	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	*slot = ExecInitExtraTupleSlot(w->estate, RelationGetDescr(rel), &TTSOpsVirtual);
	return rri;
}

/*
 * Open, lock and check the tables.  False, with nothing written, when they
 * are not as this file knows them (or this is not the owner, or the
 * transaction cannot write): the caller then takes the SQL path.
 */
static bool
begin_writing(JobWriter *w)
{
	MemoryContext caller;

	/* the SQL path raises the errors of a read-only transaction */
	if (XactReadOnly || IsInParallelMode())
		return false;

	/*
	 * What SPI does before a statement that writes: make this transaction's
	 * writes visible, and take in its own DDL's invalidations.
	 */
	CommandCounterIncrement();
	if (!tables.known)
		know_tables();
	/* anyone else would have the SQL path check their privileges */
	if (!tables.usable || GetUserId() != tables.owner)
		return false;

	/*
	 * Lock as the INSERT would, then make sure that what we know of the
	 * tables still holds: taking a lock takes in the invalidations of DDL
	 * that committed meanwhile (CREATE TRIGGER, ALTER TABLE).
	 */
	w->jobs = table_open(tables.jobs, RowExclusiveLock);
	w->queues = table_open(tables.queues, AccessShareLock);
	w->handlers = table_open(tables.handlers, AccessShareLock);
	if (!tables.known)
		know_tables();
	if (!tables.usable || GetUserId() != tables.owner ||
		RelationGetRelid(w->jobs) != tables.jobs ||
		RelationGetRelid(w->queues) != tables.queues ||
		RelationGetRelid(w->handlers) != tables.handlers)
	{
		close_tables(w);
		return false;
	}

	w->snapshot = RegisterSnapshot(GetTransactionSnapshot());
	w->estate = CreateExecutorState();
	caller = MemoryContextSwitchTo(w->estate->es_query_cxt);
	w->job_rri = open_for_insert(w, w->jobs, &w->job_slot);
	MemoryContextSwitchTo(caller);
	return true;
}

static void
end_writing(JobWriter *w)
{
	ExecCloseIndices(w->job_rri);
	ExecResetTupleTable(w->estate->es_tupleTable, false);
	FreeExecutorState(w->estate);
	UnregisterSnapshot(w->snapshot);
	close_tables(w);
	/* and what SPI does after a statement: later commands see the rows */
	CommandCounterIncrement();
}

/* The defaults of queue (text), copied into the current memory context. */
static void
look_up_queue(JobWriter *w, Datum queue, QueueDefaults *defaults)
{
	AttrNumber	want[2] = {tables.queue_default_max_attempts, tables.queue_default_timeout};
	Datum		values[2];
	bool		nulls[2];

	defaults->found = find_by_key(w->queues, tables.queues_key, tables.queue_name,
								  tables.queues_key_collation, queue, w->snapshot,
								  want, 2, values, nulls);
	defaults->max_attempts.value = values[0];
	defaults->max_attempts.isnull = !defaults->found || nulls[0];
	defaults->timeout.value = values[1];
	defaults->timeout.isnull = !defaults->found || nulls[1];
}

/* Has job_type (text) a handler, so that the executors run its jobs? */
static bool
has_handler(JobWriter *w, Datum job_type)
{
	return find_by_key(w->handlers, tables.handlers_key, tables.handler_job_type,
					   tables.handlers_key_collation, job_type, w->snapshot, NULL, 0,
					   NULL, NULL);
}

/* Insert one row and its index entries, as an INSERT would without triggers. */
static void
insert_row(JobWriter *w, ResultRelInfo *rri, TupleTableSlot *slot, Datum *values, bool *nulls)
{
	int			natts = RelationGetDescr(rri->ri_RelationDesc)->natts;
	List	   *recheck;

	ExecClearTuple(slot);
	memcpy(slot->tts_values, values, sizeof(Datum) * natts);
	memcpy(slot->tts_isnull, nulls, sizeof(bool) * natts);
	ExecStoreVirtualTuple(slot);
	table_tuple_insert(rri->ri_RelationDesc, slot, GetCurrentCommandId(true), 0, NULL);
	/* no deferred unique index, no exclusion constraint: nothing to recheck */
	recheck = ExecInsertIndexTuples(rri, slot, w->estate, false, false, NULL, NIL, false);
	list_free(recheck);
	ResetPerTupleExprContext(w->estate);
}

/* Write job, pending; its id. */
static int64
write_job(JobWriter *w, const TaskqPlainJob *job, const QueueDefaults *defaults,
		  bool in_database)
{
	Datum		job_values[N_JOB_COLUMNS];
	bool		job_nulls[N_JOB_COLUMNS];
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	TimestampTz run_at = job->run_at.isnull ? now : DatumGetTimestampTz(job->run_at.value);
	NullableDatum timeout = job->timeout.isnull ? defaults->timeout : job->timeout;
	Datum		max_attempts = Int32GetDatum(TASKQ_DEFAULT_MAX_ATTEMPTS);
	int64		id;

	taskq_check_payload_size(job->payload);
	if (!job->max_attempts.isnull)
		max_attempts = job->max_attempts.value;
	else if (!defaults->max_attempts.isnull)
		max_attempts = defaults->max_attempts.value;

	memset(job_nulls, true, sizeof(job_nulls));
#define SET_JOB(col, datum) \
	(job_values[tables.job_att[col] - 1] = (datum), job_nulls[tables.job_att[col] - 1] = false)
	/* as the identity columns' defaults call it: no permission check */
	id = nextval_internal(tables.jobs_sequence, false);
	SET_JOB(J_ID, Int64GetDatum(id));
	SET_JOB(J_QUEUE, job->queue);
	SET_JOB(J_JOB_TYPE, job->job_type);
	SET_JOB(J_PRIORITY, job->priority);
	SET_JOB(J_EFFECTIVE_PRIORITY, job->priority);
	SET_JOB(J_STATUS, ObjectIdGetDatum(tables.pending));
	SET_JOB(J_PAYLOAD, job->payload);
	SET_JOB(J_ATTEMPTS, Int32GetDatum(0));
	SET_JOB(J_MAX_ATTEMPTS, max_attempts);
	SET_JOB(J_BACKOFF, job->backoff.isnull ? taskq_default_backoff() : job->backoff.value);
	if (!timeout.isnull)
		SET_JOB(J_TIMEOUT, timeout.value);
	SET_JOB(J_CPU_UNITS, job->cpu_units);
	SET_JOB(J_MEMORY_MB, job->memory_mb);
	SET_JOB(J_RUN_AT, TimestampTzGetDatum(run_at));
	SET_JOB(J_OWNER, ObjectIdGetDatum(job->owner));
	SET_JOB(J_UNFINISHED_PARENTS, Int32GetDatum(0));
	SET_JOB(J_IN_DATABASE, BoolGetDatum(in_database));
	if (!job->concurrency_key.isnull)
		SET_JOB(J_CONCURRENCY_KEY, job->concurrency_key.value);
	if (!job->tenant.isnull)
	{
		SET_JOB(J_TENANT, job->tenant.value);
		/* its turn, as the INSERT trigger sets it (tenants.c) */
		SET_JOB(J_FAIR_AT, TimestampTzGetDatum(taskq_tenant_turn(job->tenant.value, run_at)));
	}
	SET_JOB(J_CREATED_AT, TimestampTzGetDatum(now));
	SET_JOB(J_UPDATED_AT, TimestampTzGetDatum(now));
#undef SET_JOB

	insert_row(w, w->job_rri, w->job_slot, job_values, job_nulls);
	taskq_note_pending_key(tables.jobs, in_database, DatumGetObjectId(job->priority),
						   run_at, id);
	return id;
}

/*
 * Insert job, a pending job without parents or idempotency key.  False,
 * with nothing written, when the tables are not as this file knows them;
 * the caller then takes the SQL path.
 */
bool
taskq_insert_plain_job(const TaskqPlainJob *job, int64 *id, bool *in_database)
{
	JobWriter	w;
	QueueDefaults defaults;

	if (!begin_writing(&w))
		return false;
	look_up_queue(&w, job->queue, &defaults);
	*in_database = has_handler(&w, job->job_type);
	*id = write_job(&w, job, &defaults, *in_database);
	end_writing(&w);
	return true;
}

/*
 * What a batch has looked up already: a queue's defaults, a job type's
 * handler, a priority's enum value.  A batch names a few of each; past
 * KNOWN_MAX the others are looked up for every job, as the SQL did, so that
 * a batch of a million queues costs a million probes, not a search each.
 */
#define KNOWN_MAX 32

typedef struct Known
{
	char	   *name;
	QueueDefaults defaults;
	bool		in_database;
	Datum		priority;
} Known;

typedef struct KnownSet
{
	int			n;
	Known		entries[KNOWN_MAX];
	Known		spare;			/* for a name that did not fit */
} KnownSet;

/*
 * name's entry in set; when missing, a new one (*added) for the caller to
 * fill: remembered if there is room, else the spare.
 */
static Known *
find_known(KnownSet *set, const char *name, bool *added)
{
	for (int i = 0; i < set->n; i++)
		if (strcmp(set->entries[i].name, name) == 0)
		{
			*added = false;
			return &set->entries[i];
		}
	*added = true;
	if (set->n == KNOWN_MAX)
		return &set->spare;
	set->entries[set->n].name = pstrdup(name);
	return &set->entries[set->n++];
}

/*
 * The one name check (job_type, queue, concurrency_key, tenant, and through
 * taskq._check_name() every name SQL checks): what is wrong with the name,
 * to follow the field's name in a message, or NULL.  Blank: empty or only
 * spaces, tabs, CRs and LFs.
 */
const char *
taskq_name_problem(const char *s, int len)
{
	bool		blank = true;

	for (int i = 0; i < len && blank; i++)
		blank = s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n';
	if (blank)
		return "must not be empty";
	if (pg_mbstrlen_with_len(s, len) > TASKQ_NAME_MAX_CHARS)
		return "is longer than 200 characters";
	return NULL;
}

/*
 * taskq._job_defaults(): a job's defaults (taskq.h) for submit_many's SQL,
 * the backoff as taskq.backoff_base is shown.
 */
PG_FUNCTION_INFO_V1(taskq_job_defaults_sql);
Datum
taskq_job_defaults_sql(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	char	   *values[] = {TASKQ_DEFAULT_QUEUE, TASKQ_DEFAULT_PRIORITY,
		CppAsString2(TASKQ_DEFAULT_MAX_ATTEMPTS), GetConfigOptionByName("taskq.backoff_base", NULL, false),
		CppAsString2(TASKQ_DEFAULT_CPU_UNITS), CppAsString2(TASKQ_DEFAULT_MEMORY_MB)};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE || desc->natts != lengthof(values))
		elog(ERROR, "taskq: _job_defaults must return a record of %d columns", (int) lengthof(values));
	desc = BlessTupleDesc(desc);
	PG_RETURN_DATUM(HeapTupleGetDatum(BuildTupleFromCStrings(TupleDescGetAttInMetadata(desc),
															 values)));
}

/* Raise the error of a name (a text) that is NULL or fails the check. */
void
taskq_check_name(const char *what, NullableDatum name)
{
	text	   *value;
	const char *problem;

	if (name.isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", what)));
	value = DatumGetTextPP(name.value);
	problem = taskq_name_problem(VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value));
	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s %s", what, problem)));
}

/*
 * taskq._check_name(what, value): the same check for SQL (queues, handlers,
 * schedules, tenants, worker names), raising what taskq.submit raises.
 */
PG_FUNCTION_INFO_V1(taskq_check_name_sql);
Datum
taskq_check_name_sql(PG_FUNCTION_ARGS)
{
	NullableDatum value = fcinfo->args[1];

	taskq_check_name(PG_ARGISNULL(0) ? "<NULL>" : text_to_cstring(PG_GETARG_TEXT_PP(0)), value);
	PG_RETURN_VOID();
}

/* the fields of a plain job of submit_many (absent ones jbvNull) */
typedef struct PlainFields
{
	JsonbValue	job_type;		/* jbvString */
	JsonbValue	queue;			/* jbvString */
	JsonbValue	payload;		/* jbvBinary, an object */
	JsonbValue	priority;		/* jbvString */
} PlainFields;

/*
 * Is a JSON value a good job_type or queue?  Only a string qualifies here:
 * submit_many's SQL check takes any scalar, and decides the rest.
 */
static bool
is_good_name(JsonbValue *v)
{
	return v->type == jbvString &&
		taskq_name_problem(v->val.string.val, v->val.string.len) == NULL;
}

/*
 * A label of taskq.priority?  Any other string makes the batch not plain, so
 * that the batch's check names the job (an unknown label only declines).
 */
static bool
is_priority_label(JsonbValue *v)
{
	static const char *const labels[] = {"critical", "high", "normal", "low"};

	if (v->type != jbvString)
		return false;
	for (int i = 0; i < lengthof(labels); i++)
	{
		if (v->val.string.len == strlen(labels[i]) &&
			memcmp(v->val.string.val, labels[i], v->val.string.len) == 0)
			return true;
	}
	return false;
}

static bool
key_is(JsonbValue *key, const char *name)
{
	return key->val.string.len == strlen(name) &&
		memcmp(key->val.string.val, name, key->val.string.len) == 0;
}

/*
 * Read a plain job of submit_many: an object of at most job_type, queue,
 * payload and priority, with a good job_type and queue, an object payload
 * and a string priority.  Its fields into *fields (absent ones jbvNull);
 * false when it is not plain.  This file writes what it accepts.
 */
static bool
read_plain_job(JsonbContainer *job, PlainFields *fields)
{
	JsonbIterator *it = JsonbIteratorInit(job);
	JsonbValue	key;
	JsonbValue	value;
	JsonbIteratorToken token;

	fields->job_type.type = jbvNull;
	fields->queue.type = jbvNull;
	fields->payload.type = jbvNull;
	fields->priority.type = jbvNull;
	/* skipNested: a nested object or array comes whole, as jbvBinary */
	while ((token = JsonbIteratorNext(&it, &key, true)) != WJB_DONE)
	{
		if (token != WJB_KEY)
			continue;			/* WJB_BEGIN_OBJECT, WJB_END_OBJECT */
		if (JsonbIteratorNext(&it, &value, true) != WJB_VALUE)
			return false;
		if (key_is(&key, "job_type") && is_good_name(&value))
			fields->job_type = value;
		else if (key_is(&key, "queue") && is_good_name(&value))
			fields->queue = value;
		else if (key_is(&key, "payload") && value.type == jbvBinary &&
				 JsonContainerIsObject(value.val.binary.data))
			fields->payload = value;
		else if (key_is(&key, "priority") && is_priority_label(&value))
			fields->priority = value;
		else
			return false;
	}
	return fields->job_type.type != jbvNull;
}

/* a string field read by read_plain_job, or dflt when absent */
static char *
string_or(JsonbValue *v, const char *dflt)
{
	if (v->type == jbvNull)
		return pstrdup(dflt);
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * taskq._plain_batch(jobs jsonb): is jobs an array of plain jobs, objects
 * of at most job_type, queue, payload and priority, with a good job_type and
 * queue and an object payload?  Such a batch needs none of submit_many's
 * per-job checks in SQL, which took about a fifth of a batch's time.  False
 * says nothing: the SQL check decides then.
 */
PG_FUNCTION_INFO_V1(taskq_plain_batch);
Datum
taskq_plain_batch(PG_FUNCTION_ARGS)
{
	Jsonb	   *jobs = PG_GETARG_JSONB_P(0);
	JsonbIterator *it;
	JsonbValue	job;
	JsonbIteratorToken token;
	PlainFields fields;

	if (!JB_ROOT_IS_ARRAY(jobs) || JB_ROOT_IS_SCALAR(jobs))
		PG_RETURN_BOOL(false);
	it = JsonbIteratorInit(&jobs->root);
	while ((token = JsonbIteratorNext(&it, &job, true)) != WJB_DONE)
	{
		if (token != WJB_ELEM)
			continue;			/* WJB_BEGIN_ARRAY, WJB_END_ARRAY */
		if (job.type != jbvBinary || !JsonContainerIsObject(job.val.binary.data) ||
			!read_plain_job(job.val.binary.data, &fields))
			PG_RETURN_BOOL(false);
	}
	PG_RETURN_BOOL(true);
}

/*
 * taskq._insert_plain_batch(jobs jsonb, owner regrole) → bigint[]: the jobs
 * of a batch taskq._plain_batch accepted (objects of at most job_type,
 * queue, payload and priority), inserted in order for owner, published, the
 * executors woken for them at commit; their ids, or NULL (nothing written)
 * when this file declines.  For submit_many, which has checked the batch
 * and locked its job types.
 */
PG_FUNCTION_INFO_V1(taskq_insert_plain_batch);
Datum
taskq_insert_plain_batch(PG_FUNCTION_ARGS)
{
	Jsonb	   *jobs = PG_GETARG_JSONB_P(0);
	Oid			owner = PG_GETARG_OID(1);
	int64	   *ids;
	Datum	   *id_datums;
	KnownSet   *queues = palloc0(sizeof(KnownSet));
	KnownSet   *types = palloc0(sizeof(KnownSet));
	KnownSet   *priorities = palloc0(sizeof(KnownSet));
	int			n_ids = 0;
	Datum		backoff;
	Datum		empty_payload;
	bool		publishing = taskq_publishing_now("pending");
	bool		wake = false;
	JobWriter	w;
	JsonbIterator *it;
	JsonbValue	element;
	JsonbIteratorToken token;
	MemoryContext row_cxt;
	MemoryContext caller = CurrentMemoryContext;

	if (!JB_ROOT_IS_ARRAY(jobs) || JB_ROOT_IS_SCALAR(jobs))
		elog(ERROR, "taskq: _insert_plain_batch called with a batch that is not an array");
	if (!begin_writing(&w))
		PG_RETURN_NULL();
	ids = palloc(sizeof(int64) * Max(JB_ROOT_COUNT(jobs), 1));
	backoff = taskq_default_backoff();
	empty_payload = DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
	row_cxt = AllocSetContextCreate(caller, "taskq batch row", ALLOCSET_DEFAULT_SIZES);

	it = JsonbIteratorInit(&jobs->root);
	while ((token = JsonbIteratorNext(&it, &element, true)) != WJB_DONE)
	{
		TaskqPlainJob job;
		PlainFields fields;
		char	   *job_type;
		char	   *queue;
		char	   *priority;
		Known	   *q,
				   *t,
				   *p;
		bool		added;

		if (token != WJB_ELEM)
			continue;			/* WJB_BEGIN_ARRAY, WJB_END_ARRAY */
		CHECK_FOR_INTERRUPTS();

		/* the job, in the row's memory */
		MemoryContextSwitchTo(row_cxt);
		if (element.type != jbvBinary || !JsonContainerIsObject(element.val.binary.data) ||
			!read_plain_job(element.val.binary.data, &fields))
			elog(ERROR, "taskq: _insert_plain_batch called with a batch that is not plain");
		job_type = pnstrdup(fields.job_type.val.string.val, fields.job_type.val.string.len);
		queue = string_or(&fields.queue, TASKQ_DEFAULT_QUEUE);
		priority = string_or(&fields.priority, TASKQ_DEFAULT_PRIORITY);
		job.payload = fields.payload.type == jbvNull ? empty_payload :
			JsonbPGetDatum(JsonbValueToJsonb(&fields.payload));
		job.queue = CStringGetTextDatum(queue);
		job.job_type = CStringGetTextDatum(job_type);
		job.concurrency_key.isnull = true;	/* a plain job has none */
		job.tenant.isnull = true;	/* nor a tenant */

		/* what earlier jobs of the batch looked up, or look it up once */
		MemoryContextSwitchTo(caller);
		p = find_known(priorities, priority, &added);
		if (added)
			p->priority = DirectFunctionCall2(enum_in, CStringGetDatum(priority),
											  ObjectIdGetDatum(tables.priority_type));
		q = find_known(queues, queue, &added);
		if (added)
		{
			/* a remembered queue's defaults outlive the row, the spare's do not */
			MemoryContextSwitchTo(q == &queues->spare ? row_cxt : caller);
			look_up_queue(&w, job.queue, &q->defaults);
			MemoryContextSwitchTo(caller);
		}
		t = find_known(types, job_type, &added);
		if (added)
			t->in_database = has_handler(&w, job.job_type);

		job.priority = p->priority;
		job.max_attempts.isnull = true;
		job.backoff.value = backoff;
		job.backoff.isnull = false;
		job.timeout.isnull = true;
		job.cpu_units = Int32GetDatum(TASKQ_DEFAULT_CPU_UNITS);
		job.memory_mb = Int32GetDatum(TASKQ_DEFAULT_MEMORY_MB);
		job.run_at.isnull = true;
		job.owner = owner;

		MemoryContextSwitchTo(row_cxt);
		ids[n_ids] = write_job(&w, &job, &q->defaults, t->in_database);
		if (publishing)
			taskq_publish_transition(ids[n_ids], "pending", queue, job_type, 0, t->in_database,
									 owner);
		MemoryContextSwitchTo(caller);
		MemoryContextReset(row_cxt);
		wake |= t->in_database;
		n_ids++;
	}
	end_writing(&w);
	MemoryContextDelete(row_cxt);
	if (wake)
		taskq_wake_at_commit();
	id_datums = palloc(sizeof(Datum) * Max(n_ids, 1));
	for (int i = 0; i < n_ids; i++)
		id_datums[i] = Int64GetDatum(ids[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(id_datums, n_ids, INT8OID, sizeof(int64),
										  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}
