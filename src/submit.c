/*
 * submit.c: taskq.submit and taskq._insert_job, one job validated and
 * inserted per call, and taskq._insert_jobs, submit_many's set-wise batches.
 *
 * In C because submit is the hot path of every producer: in PL/pgSQL its
 * two function layers and their SET clauses cost more than the INSERTs
 * themselves (bench/README.md).  What SECURITY DEFINER with SET search_path
 * gave the PL/pgSQL version is done here without a GUC save and restore per
 * call: the statements run as the function's owner, planned once per session
 * (generic plans, kept) under a search_path of pg_catalog alone, so objects
 * a caller plants in its own schemas can never capture them.  Parent checks,
 * which need taskq's locking rules, stay in SQL (taskq._check_parents).  A
 * job without parents or key skips SQL altogether: job_rows.c writes its rows.
 *
 * Every job row not written by job_rows.c is written by one statement here,
 * INSERT_JOBS_SQL, set-wise over a taskq.jobs[]: taskq.submit's SQL path
 * and submit_many's job by job path (taskq._insert_job) pass one job,
 * submit_many's set-wise batches many (taskq._insert_jobs).
 *
 * Also taskq._check_batch, which names the first bad job of a submit_many
 * batch that is not plain (job_rows.c takes plain ones).
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lmgr.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/typcache.h"
#include "utils/timestamp.h"

#include "taskq.h"

/* the arguments of taskq._insert_job, in its order */
enum
{
	ARG_JOB_TYPE,
	ARG_PAYLOAD,
	ARG_PRIORITY,
	ARG_QUEUE,
	ARG_DEPENDS_ON,
	ARG_RUN_AT,
	ARG_MAX_ATTEMPTS,
	ARG_TIMEOUT,
	ARG_CPU_UNITS,
	ARG_MEMORY_MB,
	ARG_IDEMPOTENCY_KEY,
	ARG_BACKOFF,
	ARG_CONCURRENCY_KEY,
	ARG_TENANT,
	ARG_OWNER,
	N_ARGS
};

static SPIPlanPtr find_live_key_plan = NULL;
static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr insert_keyed_plan = NULL;
static SPIPlanPtr check_parents_plan = NULL;
static SPIPlanPtr insert_edges_plan = NULL;

/* taskq.jobs[] of the install the plans were made for (a new install has another) */
static Oid	plans_jobs_type = InvalidOid;

/* generic plans: a custom plan per call would cost a planning per submit */
static SPIPlanPtr
keep_plan(const char *sql, int nargs, Oid *argtypes)
{
	return taskq_prepare_kept(sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);
}

static void
forget_plans(void)
{
	SPIPlanPtr *plans[] = {&find_live_key_plan, &insert_plan, &insert_keyed_plan,
	&check_parents_plan, &insert_edges_plan};

	for (int i = 0; i < lengthof(plans); i++)
	{
		if (*plans[i] != NULL)
			SPI_freeplan(*plans[i]);
		*plans[i] = NULL;
	}
	plans_jobs_type = InvalidOid;
}

/*
 * The one writer of job rows outside job_rows.c: the jobs of $1 (a
 * taskq.jobs[], in its order, ids given in that order), owned by $2.  Of
 * each element it reads only what a submit sets; NULL is the default (the
 * one table of them, taskq.h; the queue's own defaults first).  No log row
 * (history records what went wrong).  on_conflict: nothing, or for jobs with
 * an idempotency key the clause that makes one give way to a live job with
 * the same key.  Only then: ON CONFLICT makes every insert speculative (a
 * lock, a second WAL record), and a job without a key cannot conflict.
 * Queues and handlers are looked up per job (subqueries, not a join or an
 * EXISTS): a hash table built per call cost a job of one more than its row.
 */
#define INSERT_JOBS_SQL(on_conflict) \
	"INSERT INTO taskq.jobs AS j (queue, job_type, priority, effective_priority, status," \
	"      payload, max_attempts, backoff, timeout, cpu_units, memory_mb, run_at," \
	"      idempotency_key, owner, unfinished_parents, in_database, concurrency_key, tenant)" \
	"  SELECT s.queue, s.job_type, s.priority, s.priority," \
	"         CASE WHEN s.unfinished > 0 THEN 'blocked' ELSE 'pending' END::taskq.job_status," \
	"         coalesce(s.payload, '{}')," \
	"         coalesce(s.max_attempts," \
	"                  (SELECT q.default_max_attempts FROM taskq.queues q WHERE q.name = s.queue)," \
	"                  " CppAsString2(TASKQ_DEFAULT_MAX_ATTEMPTS) ")," \
	"         coalesce(s.backoff, taskq._backoff_base())," \
	"         coalesce(s.timeout," \
	"                  (SELECT q.default_timeout FROM taskq.queues q WHERE q.name = s.queue))," \
	"         coalesce(s.cpu_units, " CppAsString2(TASKQ_DEFAULT_CPU_UNITS) ")," \
	"         coalesce(s.memory_mb, " CppAsString2(TASKQ_DEFAULT_MEMORY_MB) ")," \
	"         coalesce(s.run_at, now()), s.idempotency_key, $2, s.unfinished," \
	"         coalesce((SELECT true FROM taskq.handlers h WHERE h.job_type = s.job_type), false)," \
	"         s.concurrency_key, s.tenant" \
	"    FROM (SELECT coalesce(u.queue, '" TASKQ_DEFAULT_QUEUE "') AS queue, u.job_type," \
	"                 coalesce(u.priority, '" TASKQ_DEFAULT_PRIORITY "') AS priority," \
	"                 u.payload, u.max_attempts, u.backoff, u.timeout, u.cpu_units, u.memory_mb," \
	"                 u.run_at, u.idempotency_key, coalesce(u.unfinished_parents, 0) AS unfinished," \
	"                 u.concurrency_key, u.tenant, u.ordinality" \
	"            FROM unnest($1) WITH ORDINALITY AS u) s" \
	"   ORDER BY s.ordinality" \
	"  " on_conflict \
	"  RETURNING j.id, j.in_database, j.queue, j.job_type"

/* the columns of INSERT_JOBS_SQL's RETURNING */
enum
{
	RET_ID = 1, RET_IN_DATABASE, RET_QUEUE, RET_JOB_TYPE
};

static void
prepare_plans(Oid jobs_type)
{
	Oid			key_types[] = {REGROLEOID, TEXTOID};
	Oid			insert_types[] = {jobs_type, REGROLEOID};
	Oid			parents_types[] = {INT8ARRAYOID, REGROLEOID};
	Oid			edges_types[] = {INT8OID, INT8ARRAYOID};

	if (plans_jobs_type == jobs_type)
		return;
	forget_plans();

	find_live_key_plan = keep_plan(
		"SELECT j.id FROM taskq.jobs j"
		" WHERE j.owner = $1 AND j.idempotency_key = $2"
		"   AND j.status IN ('blocked', 'pending', 'running')",
		lengthof(key_types), key_types);

	insert_plan = keep_plan(INSERT_JOBS_SQL(""), lengthof(insert_types), insert_types);
	insert_keyed_plan = keep_plan(INSERT_JOBS_SQL(
		"ON CONFLICT (owner, idempotency_key)"
		"    WHERE idempotency_key IS NOT NULL AND status IN ('blocked', 'pending', 'running')"
		"    DO NOTHING"), lengthof(insert_types), insert_types);

	check_parents_plan = keep_plan("SELECT taskq._check_parents($1, $2)",
								   lengthof(parents_types), parents_types);

	insert_edges_plan = keep_plan(
		"INSERT INTO taskq.job_dependencies (job_id, depends_on)"
		" SELECT DISTINCT $1, d FROM unnest($2) d",
		lengthof(edges_types), edges_types);

	plans_jobs_type = jobs_type;
}

static bool
interval_below_zero(Datum interval, bool or_zero)
{
	Interval	zero = {0};

	if (or_zero)
		return DatumGetBool(DirectFunctionCall2(interval_le, interval, IntervalPGetDatum(&zero)));
	return DatumGetBool(DirectFunctionCall2(interval_lt, interval, IntervalPGetDatum(&zero)));
}

static char *
interval_text(Datum interval)
{
	return DatumGetCString(DirectFunctionCall1(interval_out, interval));
}

/* Every check of submit in DESIGN.md (top level), each with its message and SQLSTATE. */
static void
check_job(NullableDatum *args)
{
	Jsonb	   *payload;

	taskq_check_name("job_type", args[ARG_JOB_TYPE]);
	taskq_check_name("queue", args[ARG_QUEUE]);
	if (args[ARG_PAYLOAD].isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload must not be NULL"),
				 errhint("Pass '{}' for an empty payload.")));
	payload = DatumGetJsonbP(args[ARG_PAYLOAD].value);
	if (!JB_ROOT_IS_OBJECT(payload))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload must be a JSON object, got a JSON %s",
						TextDatumGetCString(DirectFunctionCall1(jsonb_typeof,
																JsonbPGetDatum(payload))))));
	if (args[ARG_PRIORITY].isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("priority must not be NULL")));
	if (args[ARG_CPU_UNITS].isnull || DatumGetInt32(args[ARG_CPU_UNITS].value) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cpu_units must be positive, got %s",
						args[ARG_CPU_UNITS].isnull ? "NULL" :
						psprintf("%d", DatumGetInt32(args[ARG_CPU_UNITS].value)))));
	if (args[ARG_MEMORY_MB].isnull || DatumGetInt32(args[ARG_MEMORY_MB].value) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("memory_mb must not be negative, got %s",
						args[ARG_MEMORY_MB].isnull ? "NULL" :
						psprintf("%d", DatumGetInt32(args[ARG_MEMORY_MB].value)))));
	if (DatumGetInt32(args[ARG_CPU_UNITS].value) > taskq_max_cpu_units)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("job needs %d cpu_units but taskq.max_cpu_units is %d",
						DatumGetInt32(args[ARG_CPU_UNITS].value), taskq_max_cpu_units),
				 errhint("Raise taskq.max_cpu_units or ask for fewer cpu_units.")));
	if (DatumGetInt32(args[ARG_MEMORY_MB].value) > taskq_max_memory_mb)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("job needs %d memory_mb but taskq.max_memory_mb is %d",
						DatumGetInt32(args[ARG_MEMORY_MB].value), taskq_max_memory_mb),
				 errhint("Raise taskq.max_memory_mb or ask for less memory_mb.")));
	if (!args[ARG_MAX_ATTEMPTS].isnull && DatumGetInt32(args[ARG_MAX_ATTEMPTS].value) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_attempts must be at least 1, got %d",
						DatumGetInt32(args[ARG_MAX_ATTEMPTS].value))));
	if (!args[ARG_TIMEOUT].isnull && interval_below_zero(args[ARG_TIMEOUT].value, true))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must be positive, got %s",
						interval_text(args[ARG_TIMEOUT].value))));
	if (!args[ARG_BACKOFF].isnull && interval_below_zero(args[ARG_BACKOFF].value, false))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("backoff must not be negative, got %s",
						interval_text(args[ARG_BACKOFF].value))));
	if (!args[ARG_IDEMPOTENCY_KEY].isnull &&
		VARSIZE_ANY_EXHDR(DatumGetTextPP(args[ARG_IDEMPOTENCY_KEY].value)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("idempotency_key must not be empty")));
	if (!args[ARG_CONCURRENCY_KEY].isnull)
		taskq_check_name("concurrency_key", args[ARG_CONCURRENCY_KEY]);
	if (!args[ARG_TENANT].isnull)
		taskq_check_name("tenant", args[ARG_TENANT]);
	if (!args[ARG_RUN_AT].isnull &&
		TIMESTAMP_NOT_FINITE(DatumGetTimestampTz(args[ARG_RUN_AT].value)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("run_at must be a finite timestamp")));
}

/* Run a kept plan; its first row's column col, or false when it returned none. */
static bool
run_plan(SPIPlanPtr plan, Datum *values, const char *nulls, int col, Datum *result,
		 bool *result_isnull)
{
	int			rc = SPI_execute_plan(plan, values, nulls, false, 0);

	if (rc < 0)
		elog(ERROR, "taskq: SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return false;
	*result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col, result_isnull);
	return true;
}

/*
 * The id of the caller's live job with this idempotency key, or 0.
 */
static int64
find_live_key(Datum owner, Datum key)
{
	Datum		values[] = {owner, key};
	Datum		id;
	bool		isnull;

	if (!run_plan(find_live_key_plan, values, NULL, 1, &id, &isnull))
		return 0;
	return DatumGetInt64(id);
}

/* The job type's lock, shared: see taskq_lock_job_type (dag.c). */
static void
lock_job_type_shared(Datum job_type)
{
	taskq_lock_job_type(job_type, false);
}

/* The owner of the function called.  No cache: ALTER FUNCTION OWNER. */
static Oid
function_owner_of(Oid fn_oid)
{
	HeapTuple	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn_oid));
	Oid			owner;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for function %u", fn_oid);
	owner = ((Form_pg_proc) GETSTRUCT(tuple))->proowner;
	ReleaseSysCache(tuple);
	return owner;
}

/* taskq.jobs[] of this install: the type of INSERT_JOBS_SQL's $1 */
static Oid
jobs_array_type(void)
{
	Oid			jobs = get_relname_relid("jobs", get_namespace_oid("taskq", false));
	Oid			type = OidIsValid(jobs) ? get_array_type(get_rel_type_id(jobs)) : InvalidOid;

	if (!OidIsValid(type))
		elog(ERROR, "taskq: table taskq.jobs not found");
	return type;
}

/*
 * The job of args as a taskq.jobs[] of one element, as INSERT_JOBS_SQL reads
 * it: the columns a submit sets, the others NULL.
 */
static Datum
job_as_array(NullableDatum *args, int32 unfinished, Oid jobs_type)
{
	static const struct
	{
		const char *column;
		int			arg;
	}			from_args[] = {
		{"queue", ARG_QUEUE}, {"job_type", ARG_JOB_TYPE}, {"priority", ARG_PRIORITY},
		{"payload", ARG_PAYLOAD}, {"max_attempts", ARG_MAX_ATTEMPTS},
		{"backoff", ARG_BACKOFF}, {"timeout", ARG_TIMEOUT}, {"cpu_units", ARG_CPU_UNITS},
		{"memory_mb", ARG_MEMORY_MB}, {"run_at", ARG_RUN_AT},
		{"idempotency_key", ARG_IDEMPOTENCY_KEY}, {"concurrency_key", ARG_CONCURRENCY_KEY},
		{"tenant", ARG_TENANT}, {"unfinished_parents", -1}
	};
	Oid			row_type = get_element_type(jobs_type);
	TupleDesc	desc = lookup_rowtype_tupdesc(row_type, -1);
	Datum	   *values = palloc0(sizeof(Datum) * desc->natts);
	bool	   *nulls = palloc(sizeof(bool) * desc->natts);
	int			found = 0;
	Datum		row;
	int16		typlen;
	bool		typbyval;
	char		typalign;

	memset(nulls, true, sizeof(bool) * desc->natts);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		for (int c = 0; !att->attisdropped && c < lengthof(from_args); c++)
		{
			if (strcmp(NameStr(att->attname), from_args[c].column) != 0)
				continue;
			found++;
			if (from_args[c].arg < 0)
			{
				values[i] = Int32GetDatum(unfinished);
				nulls[i] = false;
			}
			else
			{
				values[i] = args[from_args[c].arg].value;
				nulls[i] = args[from_args[c].arg].isnull;
			}
		}
	}
	if (found != lengthof(from_args))
		elog(ERROR, "taskq: table taskq.jobs lacks a column of submit");
	row = heap_copy_tuple_as_datum(heap_form_tuple(desc, values, nulls), desc);
	ReleaseTupleDesc(desc);
	get_typlenbyvalalign(row_type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_array(&row, 1, row_type, typlen, typbyval, typalign));
}

/*
 * Run INSERT_JOBS_SQL (connected to SPI, plans prepared) on jobs, owned by
 * owner; keyed: the plan for jobs with an idempotency key.  The rows written
 * are in SPI_tuptable (columns RET_*), in the order of jobs.
 */
static uint64
write_rows(Datum jobs, Datum owner, bool keyed)
{
	Datum		values[] = {jobs, owner};
	int			rc = SPI_execute_plan(keyed ? insert_keyed_plan : insert_plan, values, NULL,
									  false, 0);

	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "taskq: SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	return SPI_processed;
}

/* column col of row i of the rows write_rows wrote */
static Datum
written(uint64 i, int col)
{
	bool		isnull;

	return SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, col, &isnull);
}

/*
 * A job without parents or key: its rows written by job_rows.c, without SQL.
 * False when job_rows.c declines.
 */
static bool
insert_plain(NullableDatum *args, int64 *id, bool *in_database)
{
	TaskqPlainJob job;

	job.queue = args[ARG_QUEUE].value;
	job.job_type = args[ARG_JOB_TYPE].value;
	job.priority = args[ARG_PRIORITY].value;
	job.payload = args[ARG_PAYLOAD].value;
	job.max_attempts = args[ARG_MAX_ATTEMPTS];
	job.backoff = args[ARG_BACKOFF];
	job.timeout = args[ARG_TIMEOUT];
	job.cpu_units = args[ARG_CPU_UNITS].value;
	job.memory_mb = args[ARG_MEMORY_MB].value;
	job.run_at = args[ARG_RUN_AT];
	job.concurrency_key = args[ARG_CONCURRENCY_KEY];
	job.tenant = args[ARG_TENANT];
	job.owner = DatumGetObjectId(args[ARG_OWNER].value);
	return taskq_insert_plain_job(&job, id, in_database);
}

/* Publish a job just created (queue, job_type: text) and wake the executors for it. */
static void
announce(int64 id, Datum queue, Datum job_type, int32 unfinished, bool in_database, Oid owner)
{
	const char *status = unfinished > 0 ? "blocked" : "pending";

	if (taskq_publishing_now(status))
		taskq_publish_transition(id, status, TextDatumGetCString(queue),
								 TextDatumGetCString(job_type), 0, in_database, owner);
	/*
	 * Executors run only jobs with a handler; waking them for any other job
	 * made each of them scan the whole backlog for nothing (bench/).
	 */
	if (unfinished == 0 && in_database)
		taskq_wake_at_commit();
}

/*
 * Insert the job of args through SQL (SPI); its id.  Locks the job type
 * unless lock_type is false (the caller holds it).  *created: false when a
 * live job with its idempotency key was found instead.
 */
static int64
insert_with_sql(NullableDatum *args, bool has_parents, bool lock_type, int32 *unfinished,
				bool *created, bool *in_database)
{
	int64		id = 0;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "taskq: SPI_connect failed");
	prepare_plans(jobs_array_type());

	/* A live job with the same key wins; the unique index settles races. */
	if (!args[ARG_IDEMPOTENCY_KEY].isnull)
		id = find_live_key(args[ARG_OWNER].value, args[ARG_IDEMPOTENCY_KEY].value);
	if (id == 0)
	{
		if (has_parents)
		{
			Datum		parent_args[] = {args[ARG_DEPENDS_ON].value, args[ARG_OWNER].value};
			Datum		count;
			bool		isnull;

			/* checks, locks and counts the parents, or raises the error */
			run_plan(check_parents_plan, parent_args, NULL, 1, &count, &isnull);
			*unfinished = DatumGetInt32(count);
		}
		if (lock_type)
			lock_job_type_shared(args[ARG_JOB_TYPE].value);
		if (write_rows(job_as_array(args, *unfinished, plans_jobs_type), args[ARG_OWNER].value,
					   !args[ARG_IDEMPOTENCY_KEY].isnull) == 1)
		{
			id = DatumGetInt64(written(0, RET_ID));
			*in_database = DatumGetBool(written(0, RET_IN_DATABASE));
		}
		*created = id != 0;
		/* lost the race to a concurrent submit with the same key */
		if (!*created)
			id = find_live_key(args[ARG_OWNER].value, args[ARG_IDEMPOTENCY_KEY].value);
		if (id == 0)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not submit the job: the job holding its idempotency key finished meanwhile"),
					 errhint("Submit it again.")));
	}
	if (*created && has_parents)
	{
		Datum		edge_args[] = {Int64GetDatum(id), args[ARG_DEPENDS_ON].value};
		int			rc = SPI_execute_plan(insert_edges_plan, edge_args, NULL, false, 0);

		if (rc != SPI_OK_INSERT)
			elog(ERROR, "taskq: SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	}
	SPI_finish();
	return id;
}

/*
 * Insert the job of args; as the owner of the function called (fcinfo) when
 * as_owner, as SECURITY DEFINER would, else as the current user.  On error
 * the (sub)transaction's abort restores the user and the path.
 */
static int64
insert_job(NullableDatum *args, FunctionCallInfo fcinfo, bool as_owner)
{
	Oid			function_owner;
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	bool		has_parents = false;
	bool		plain;
	int32		unfinished = 0;
	bool		created = false;
	bool		in_database = false;
	int64		id = 0;

	function_owner = function_owner_of(fcinfo->flinfo->fn_oid);
	check_job(args);
	if (!args[ARG_DEPENDS_ON].isnull)
	{
		ArrayType  *parents = DatumGetArrayTypeP(args[ARG_DEPENDS_ON].value);

		has_parents = ArrayGetNItems(ARR_NDIM(parents), ARR_DIMS(parents)) > 0;
	}
	/* no parents, no key: job_rows.c writes it, unless it declines */
	plain = !has_parents && args[ARG_IDEMPOTENCY_KEY].isnull;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	if (as_owner)
		SetUserIdAndSecContext(function_owner,
							   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	/* also for job_rows.c: index predicates are evaluated as the owner */
	save_nestlevel = NewGUCNestLevel();
	RestrictSearchPath();
	taskq_check_job_type_allows(args[ARG_JOB_TYPE].value, !args[ARG_TENANT].isnull,
								!args[ARG_CONCURRENCY_KEY].isnull);
	if (plain)
	{
		/* (a keyed submit may only find its job: it can run read-only) */
		PreventCommandIfReadOnly(as_owner ? "taskq.submit" : "taskq.submit_many");
		lock_job_type_shared(args[ARG_JOB_TYPE].value);
		created = insert_plain(args, &id, &in_database);
	}
	if (!created)
		id = insert_with_sql(args, has_parents, !plain, &unfinished, &created, &in_database);
	AtEOXact_GUC(true, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);

	if (created)
		announce(id, args[ARG_QUEUE].value, args[ARG_JOB_TYPE].value, unfinished, in_database,
				 DatumGetObjectId(args[ARG_OWNER].value));
	return id;
}

/*
 * taskq._insert_job(job_type, payload, priority, queue, depends_on, run_at,
 * max_attempts, timeout, cpu_units, memory_mb, idempotency_key, backoff,
 * concurrency_key, tenant, owner): submit_many's job by job path.  Runs as the current user (the
 * owner, inside submit_many): EXECUTE on it alone grants nothing.
 */
PG_FUNCTION_INFO_V1(taskq_insert_job);
Datum
taskq_insert_job(PG_FUNCTION_ARGS)
{
	if (PG_NARGS() != N_ARGS)
		elog(ERROR, "taskq: _insert_job called with %d arguments", PG_NARGS());
	PG_RETURN_INT64(insert_job(fcinfo->args, fcinfo, false));
}

/*
 * taskq._insert_jobs(jobs taskq.jobs[], owner regrole): submit_many's
 * set-wise path, for checked jobs without parents or key whose job types
 * it has locked.  Writes them with INSERT_JOBS_SQL, publishes and wakes as
 * submit does; their ids, in the order of jobs.  Runs as the current user
 * (the owner, inside submit_many): EXECUTE on it alone grants nothing.
 */
PG_FUNCTION_INFO_V1(taskq_insert_jobs);
Datum
taskq_insert_jobs(PG_FUNCTION_ARGS)
{
	Oid			owner = PG_GETARG_OID(1);
	MemoryContext cxt = CurrentMemoryContext;
	int			save_nestlevel = NewGUCNestLevel();
	uint64		n;
	Datum	   *ids;
	bool	   *in_database;
	Datum	   *queues;
	Datum	   *job_types;

	RestrictSearchPath();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "taskq: SPI_connect failed");
	prepare_plans(get_fn_expr_argtype(fcinfo->flinfo, 0));
	n = write_rows(PG_GETARG_DATUM(0), ObjectIdGetDatum(owner), false);
	/* (copied out of SPI's memory, which SPI_finish frees) */
	ids = MemoryContextAlloc(cxt, sizeof(Datum) * (n + 1));
	in_database = MemoryContextAlloc(cxt, sizeof(bool) * (n + 1));
	queues = MemoryContextAlloc(cxt, sizeof(Datum) * (n + 1));
	job_types = MemoryContextAlloc(cxt, sizeof(Datum) * (n + 1));
	MemoryContextSwitchTo(cxt);
	for (uint64 i = 0; i < n; i++)
	{
		ids[i] = written(i, RET_ID);
		in_database[i] = DatumGetBool(written(i, RET_IN_DATABASE));
		queues[i] = datumCopy(written(i, RET_QUEUE), false, -1);
		job_types[i] = datumCopy(written(i, RET_JOB_TYPE), false, -1);
	}
	SPI_finish();
	AtEOXact_GUC(true, save_nestlevel);

	for (uint64 i = 0; i < n; i++)
		announce(DatumGetInt64(ids[i]), queues[i], job_types[i], 0, in_database[i], owner);
	PG_RETURN_ARRAYTYPE_P(construct_array(ids, (int) n, INT8OID, sizeof(int64),
										  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * taskq.submit(job_type, payload, priority, queue, depends_on, run_at,
 * max_attempts, timeout, cpu_units, memory_mb, idempotency_key, backoff,
 * concurrency_key, tenant):
 * the job's owner is the caller (taskq._caller(), src/caller.c).
 */
PG_FUNCTION_INFO_V1(taskq_submit);
Datum
taskq_submit(PG_FUNCTION_ARGS)
{
	NullableDatum args[N_ARGS];
	Oid			function_owner;
	TaskqActing acting;
	volatile int64 id = 0;

	/* first: an old schema's submit has fewer arguments, and must be told so */
	taskq_require_current_schema();
	if (PG_NARGS() != N_ARGS - 1)
		elog(ERROR, "taskq: submit called with %d arguments", PG_NARGS());
	memcpy(args, fcinfo->args, sizeof(NullableDatum) * (N_ARGS - 1));
	args[ARG_OWNER].value = ObjectIdGetDatum(taskq_caller_role());
	args[ARG_OWNER].isnull = false;
	/* the SQL it runs as the function's owner acts for the caller */
	function_owner = function_owner_of(fcinfo->flinfo->fn_oid);
	acting = taskq_start_acting(DatumGetObjectId(args[ARG_OWNER].value), function_owner);
	PG_TRY();
	{
		id = insert_job(args, fcinfo, true);
	}
	PG_FINALLY();
	{
		taskq_stop_acting(acting);
	}
	PG_END_TRY();
	PG_RETURN_INT64(id);
}

/* the JSON type of a value, as jsonb_typeof names it */
static const char *
json_type_name(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "string";
		case jbvNumeric:
			return "number";
		case jbvBool:
			return "boolean";
		case jbvBinary:
			return JsonContainerIsArray(v->val.binary.data) ? "array" : "object";
		default:
			return "value";
	}
}

#define BATCH_DETAIL "Jobs of the batch are numbered from 0, in array order."

static void
wrong_json_type(int job, const char *key, const char *wanted, JsonbValue *v)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("job %d of the batch: %s must be a JSON %s, got a JSON %s",
					job, key, wanted, json_type_name(v)),
			 errdetail(BATCH_DETAIL)));
}

/* a JSON number that is a whole number within [min, max], else the error */
static int64
batch_integer(int job, const char *key, JsonbValue *v, int64 min, int64 max)
{
	char	   *digits;
	char	   *end;
	int64		n;

	if (v->type != jbvNumeric)
		wrong_json_type(job, key, "number", v);
	digits = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	if (strspn(digits + (digits[0] == '-'), "0123456789") != strlen(digits + (digits[0] == '-')))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("job %d of the batch: %s must be a whole number, got %s", job, key, digits),
				 errdetail(BATCH_DETAIL)));
	errno = 0;
	n = strtoi64(digits, &end, 10);
	if (errno == ERANGE || n < min || n > max)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("job %d of the batch: %s %s is out of range", job, key, digits),
				 errdetail(BATCH_DETAIL)));
	return n;
}

/* a JSON string read by a type's input function, its error naming job and key */
static Datum
batch_input(int job, const char *key, JsonbValue *v, PGFunction input)
{
	MemoryContext cxt = CurrentMemoryContext;
	char	   *s;
	Datum		result = (Datum) 0;

	if (v->type != jbvString)
		wrong_json_type(job, key, "string", v);
	s = pnstrdup(v->val.string.val, v->val.string.len);
	PG_TRY();
	{
		result = DirectFunctionCall3(input, CStringGetDatum(s), ObjectIdGetDatum(InvalidOid),
									 Int32GetDatum(-1));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* rethrown at once, with the job and key: the abort cleans up */
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(ERROR,
				(errcode(edata->sqlerrcode),
				 errmsg("job %d of the batch: %s: %s", job, key, edata->message),
				 errdetail(BATCH_DETAIL)));
	}
	PG_END_TRY();
	return result;
}

static void
batch_name(int job, const char *key, JsonbValue *v)
{
	const char *problem;

	if (v->type == jbvNull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job %d of the batch: %s must not be NULL", job, key),
				 errdetail(BATCH_DETAIL)));
	if (v->type != jbvString)
		wrong_json_type(job, key, "string", v);
	problem = taskq_name_problem(v->val.string.val, v->val.string.len);
	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("job %d of the batch: %s %s", job, key, problem),
				 errdetail(BATCH_DETAIL)));
}

/* a JSON array of whole numbers within [min, max] */
static void
batch_id_list(int job, const char *key, JsonbValue *v, int64 min, int64 max)
{
	JsonbIterator *it;
	JsonbValue	elem;
	JsonbIteratorToken token;

	if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		wrong_json_type(job, key, "array", v);
	it = JsonbIteratorInit(v->val.binary.data);
	while ((token = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
	{
		int64		k;

		if (token != WJB_ELEM)
			continue;
		if (elem.type == jbvNull)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("job %d of the batch: %s must not contain NULL", job, key),
					 errdetail(BATCH_DETAIL)));
		if (elem.type != jbvNumeric)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
					 errmsg("job %d of the batch: %s must be a JSON array of numbers, got a JSON %s in it",
							job, key, json_type_name(&elem)),
					 errdetail(BATCH_DETAIL)));
		k = batch_integer(job, key, &elem, PG_INT64_MIN, PG_INT64_MAX);
		if (k < min || k > max)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("job %d of the batch depends on batch index " INT64_FORMAT ", which is not an earlier job",
							job, k),
					 errhint("\"after\" may only name earlier jobs of the same batch.")));
	}
}

/* a label of enum taskq.<type_name>? */
static bool
is_enum_label(const char *type_name, JsonbValue *v)
{
	Oid			type = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
									   CStringGetDatum(type_name),
									   ObjectIdGetDatum(get_namespace_oid("taskq", false)));
	char	   *label;

	if (!OidIsValid(type) || v->val.string.len >= NAMEDATALEN)
		return false;
	label = pnstrdup(v->val.string.val, v->val.string.len);
	return SearchSysCacheExists2(ENUMTYPOIDNAME, ObjectIdGetDatum(type), CStringGetDatum(label));
}

/* Every check of submit() on job i of a submit_many batch, naming i and the key. */
static void
check_batch_job(int job, JsonbValue *element)
{
	JsonbIterator *it;
	JsonbValue	key;
	JsonbValue	v;
	JsonbIteratorToken token;
	bool		has_job_type = false;

	if (element->type != jbvBinary || !JsonContainerIsObject(element->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("job %d of the batch is not a JSON object", job)));
	it = JsonbIteratorInit(element->val.binary.data);
	while ((token = JsonbIteratorNext(&it, &key, true)) != WJB_DONE)
	{
		char	   *k;

		if (token != WJB_KEY)
			continue;
		if (JsonbIteratorNext(&it, &v, true) != WJB_VALUE)
			elog(ERROR, "taskq: unexpected jsonb token");
		k = pnstrdup(key.val.string.val, key.val.string.len);
		if (strcmp(k, "job_type") == 0)
		{
			batch_name(job, k, &v);
			has_job_type = true;
			continue;
		}
		if (strcmp(k, "payload") == 0)
		{
			if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("job %d of the batch: payload must be a JSON object, got a JSON %s",
								job, json_type_name(&v)),
						 errdetail(BATCH_DETAIL)));
			continue;
		}
		/* every other key may be null: the default */
		if (v.type == jbvNull &&
			(strcmp(k, "queue") == 0 || strcmp(k, "priority") == 0 ||
			 strcmp(k, "depends_on") == 0 || strcmp(k, "after") == 0 ||
			 strcmp(k, "run_at") == 0 || strcmp(k, "max_attempts") == 0 ||
			 strcmp(k, "timeout") == 0 || strcmp(k, "cpu_units") == 0 ||
			 strcmp(k, "memory_mb") == 0 || strcmp(k, "idempotency_key") == 0 ||
			 strcmp(k, "backoff") == 0 || strcmp(k, "concurrency_key") == 0 ||
			 strcmp(k, "tenant") == 0))
			continue;
		if (strcmp(k, "queue") == 0 || strcmp(k, "concurrency_key") == 0 ||
			strcmp(k, "tenant") == 0)
			batch_name(job, k, &v);
		else if (strcmp(k, "priority") == 0)
		{
			if (v.type != jbvString)
				wrong_json_type(job, k, "string", &v);
			if (!is_enum_label("priority", &v))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
						 errmsg("job %d of the batch: invalid priority \"%s\"",
								job, pnstrdup(v.val.string.val, v.val.string.len)),
						 errdetail(BATCH_DETAIL)));
		}
		else if (strcmp(k, "depends_on") == 0)
			batch_id_list(job, k, &v, PG_INT64_MIN, PG_INT64_MAX);
		else if (strcmp(k, "after") == 0)
			batch_id_list(job, k, &v, 0, job - 1);
		else if (strcmp(k, "run_at") == 0)
		{
			if (TIMESTAMP_NOT_FINITE(DatumGetTimestampTz(batch_input(job, k, &v, timestamptz_in))))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("job %d of the batch: run_at must be a finite timestamp", job),
						 errdetail(BATCH_DETAIL)));
		}
		else if (strcmp(k, "timeout") == 0 || strcmp(k, "backoff") == 0)
		{
			bool		is_timeout = strcmp(k, "timeout") == 0;
			Datum		d = batch_input(job, k, &v, interval_in);

			if (interval_below_zero(d, is_timeout))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("job %d of the batch: %s must be %s, got %s", job, k,
								is_timeout ? "positive" : "non-negative", interval_text(d)),
						 errdetail(BATCH_DETAIL)));
		}
		else if (strcmp(k, "max_attempts") == 0)
		{
			int64		n = batch_integer(job, k, &v, PG_INT32_MIN, PG_INT32_MAX);

			if (n < 1)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("job %d of the batch: max_attempts must be at least 1, got " INT64_FORMAT,
								job, n),
						 errdetail(BATCH_DETAIL)));
		}
		else if (strcmp(k, "cpu_units") == 0 || strcmp(k, "memory_mb") == 0)
		{
			bool		cpu = strcmp(k, "cpu_units") == 0;
			int64		n = batch_integer(job, k, &v, PG_INT32_MIN, PG_INT32_MAX);

			if (n < (cpu ? 1 : 0))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("job %d of the batch: %s must be %s, got " INT64_FORMAT,
								job, k, cpu ? "positive" : "non-negative", n),
						 errdetail(BATCH_DETAIL)));
			if (n > (cpu ? taskq_max_cpu_units : taskq_max_memory_mb))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("job %d of the batch needs " INT64_FORMAT " %s but taskq.max_%s is %d",
								job, n, k, k, cpu ? taskq_max_cpu_units : taskq_max_memory_mb),
						 errdetail(BATCH_DETAIL)));
		}
		else if (strcmp(k, "idempotency_key") == 0)
		{
			if (v.type != jbvString)
				wrong_json_type(job, k, "string", &v);
			if (v.val.string.len == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("job %d of the batch: idempotency_key must not be empty", job),
						 errdetail(BATCH_DETAIL)));
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("job %d of the batch has unknown key \"%s\"", job, k)));
		pfree(k);
	}
	if (!has_job_type)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job %d of the batch: job_type must not be NULL", job),
				 errdetail(BATCH_DETAIL)));
}

/*
 * taskq._check_batch(jobs jsonb): raise the error of the first bad job of a
 * submit_many batch, naming its index and key; every value must have its
 * JSON type (a job_type of 5 or a cpu_units of "1" are errors, not cast).
 * After it, submit_many's casts cannot fail.
 */
PG_FUNCTION_INFO_V1(taskq_check_batch);
Datum
taskq_check_batch(PG_FUNCTION_ARGS)
{
	Jsonb	   *jobs = PG_GETARG_JSONB_P(0);
	JsonbIterator *it;
	JsonbValue	job;
	JsonbIteratorToken token;
	int			i = 0;

	if (!JB_ROOT_IS_ARRAY(jobs) || JB_ROOT_IS_SCALAR(jobs))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("jobs must be a JSON array of objects")));
	it = JsonbIteratorInit(&jobs->root);
	while ((token = JsonbIteratorNext(&it, &job, true)) != WJB_DONE)
	{
		if (token != WJB_ELEM)
			continue;
		CHECK_FOR_INTERRUPTS();
		check_batch_job(i++, &job);
	}
	PG_RETURN_VOID();
}
