/*
 * publish.c: what taskq publishes, and on which channel.
 *
 * PostgreSQL puts no privilege on LISTEN: anyone may listen on any channel.
 * So a role's jobs are published only on channels whose names it alone can
 * know.  Each name is the HMAC of a kind and a role under a secret no role
 * but the extension's owner can read (taskq.channel_secret):
 *
 *	taskq_jobs_<hmac("jobs/role/" oid)>   one role's jobs' transitions
 *	taskq_jobs_<hmac("jobs/admin")>       every transition, for taskq_admin
 *	taskq_work_<hmac("work/role/" oid)>   queues where one role's jobs became
 *	                                      claimable, for its own workers
 *	taskq_work_<hmac("work/workers")>     every such queue, for taskq_worker
 *
 * taskq.channel() and taskq.work_channel() give each role its names.  The
 * payloads are those of DESIGN.md (Notifications, at the repository's top),
 * as taskq.notify_level says; the old channels taskq_jobs and taskq_work
 * carry nothing.  listeners.c holds the notifications until commit, sends
 * them only while someone may listen, and asks taskq_job_owner whose job it
 * was when the caller did not know.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/extension.h"
#include "common/hmac.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "taskq.h"

/* hex digits of the HMAC in a channel name (128 bits; the name stays under NAMEDATALEN) */
#define CHANNEL_HASH_HEX 32

/* the secret, read once per install: its table's oid tells installs apart */
static Oid	secret_table = InvalidOid;
static char *secret = NULL;
static int	secret_len = 0;
static LocalTransactionId secret_checked_in = InvalidLocalTransactionId;

/* the last name made, and the shared ones, per kind */
static Oid	named_table = InvalidOid;
static Oid	last_role[NUM_TASKQ_CHANNELS];
static char last_name[NUM_TASKQ_CHANNELS][NAMEDATALEN];
static char shared_name[NUM_TASKQ_CHANNELS][NAMEDATALEN];

/*
 * taskq.<name>, or InvalidOid unless it is the taskq extension's own table:
 * in a database without taskq any role may create a schema of that name.
 */
static Oid
taskq_table(const char *name)
{
	Oid			ext = get_extension_oid("taskq", true);
	Oid			schema = get_namespace_oid("taskq", true);
	Oid			table;

	if (!OidIsValid(ext) || !OidIsValid(schema))
		return InvalidOid;
	table = get_relname_relid(name, schema);
	if (!OidIsValid(table) || getExtensionOfObject(RelationRelationId, table) != ext)
		return InvalidOid;
	return table;
}

/*
 * Read taskq.channel_secret, bypassing its privileges (no role may read it).
 * missing_ok: false instead of an error when this database has none.
 */
static bool
read_secret(bool missing_ok)
{
	Oid			table;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tuple;

	if (secret != NULL && secret_checked_in == MyProcLxid)
		return true;
	table = taskq_table("channel_secret");
	if (!OidIsValid(table) && missing_ok)
		return false;
	if (!OidIsValid(table))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("taskq's channel secret is missing"),
				 errhint("Update the extension: ALTER EXTENSION taskq UPDATE.")));
	if (table != secret_table || secret == NULL)
	{
		bool		isnull = true;
		Datum		value = (Datum) 0;

		rel = table_open(table, AccessShareLock);
		if (RelationGetDescr(rel)->natts < 1 || TupleDescAttr(RelationGetDescr(rel), 0)->atttypid != BYTEAOID)
			elog(ERROR, "taskq: taskq.channel_secret is not as the extension made it");
		scan = systable_beginscan(rel, InvalidOid, false, SnapshotSelf, 0, NULL);
		if ((tuple = systable_getnext(scan)) != NULL)
			value = heap_getattr(tuple, 1, RelationGetDescr(rel), &isnull);
		if (!isnull)
		{
			bytea	   *b = DatumGetByteaPP(value);

			if (secret != NULL)
				pfree(secret);
			secret_len = VARSIZE_ANY_EXHDR(b);
			secret = MemoryContextAlloc(TopMemoryContext, Max(secret_len, 1));
			memcpy(secret, VARDATA_ANY(b), secret_len);
		}
		systable_endscan(scan);
		table_close(rel, AccessShareLock);
		if ((isnull || secret_len < 16) && missing_ok)
			return false;
		if (isnull || secret_len < 16)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("taskq's channel secret is missing or too short")));
		secret_table = table;
	}
	secret_checked_in = MyProcLxid;
	return true;
}

/* name := prefix || hex(HMAC-SHA256(secret, what))[0..CHANNEL_HASH_HEX) */
static void
make_name(char *name, TaskqChannelKind kind, const char *what)
{
	static const char hex[] = "0123456789abcdef";
	uint8		mac[PG_SHA256_DIGEST_LENGTH];
	pg_hmac_ctx *ctx = pg_hmac_create(PG_SHA256);
	int			len;

	if (ctx == NULL ||
		pg_hmac_init(ctx, (uint8 *) secret, secret_len) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) what, strlen(what)) < 0 ||
		pg_hmac_final(ctx, mac, sizeof(mac)) < 0)
		elog(ERROR, "taskq: could not compute a channel name: %s",
			 ctx ? pg_hmac_error(ctx) : "out of memory");
	pg_hmac_free(ctx);
	len = snprintf(name, NAMEDATALEN, "%s", kind == TASKQ_CHANNEL_JOBS ?
				   TASKQ_JOBS_CHANNEL_PREFIX : TASKQ_WORK_CHANNEL_PREFIX);
	for (int i = 0; i < CHANNEL_HASH_HEX / 2; i++)
	{
		name[len++] = hex[mac[i] >> 4];
		name[len++] = hex[mac[i] & 0xf];
	}
	name[len] = '\0';
}

/*
 * The channel of kind for role, or with role InvalidOid the shared one
 * (admins' for jobs, external workers' for work); NULL while the schema has
 * no secret yet (the library is newer than the installed extension).
 */
const char *
taskq_channel_name(TaskqChannelKind kind, Oid role)
{
	char		what[64];

	if (!read_secret(true))
		return NULL;
	if (named_table != secret_table)
	{
		for (int k = 0; k < NUM_TASKQ_CHANNELS; k++)
		{
			last_role[k] = InvalidOid;
			shared_name[k][0] = '\0';
		}
		named_table = secret_table;
	}
	if (!OidIsValid(role))
	{
		if (shared_name[kind][0] == '\0')
			make_name(shared_name[kind], kind,
					  kind == TASKQ_CHANNEL_JOBS ? "jobs/admin" : "work/workers");
		return shared_name[kind];
	}
	if (last_role[kind] != role)
	{
		snprintf(what, sizeof(what), "%s/role/%u",
				 kind == TASKQ_CHANNEL_JOBS ? "jobs" : "work", role);
		make_name(last_name[kind], kind, what);
		last_role[kind] = role;
	}
	return last_name[kind];
}

/*
 * Is name the shared channel of kind in this database?  False where taskq is
 * not installed (a LISTEN anywhere asks).
 */
bool
taskq_is_shared_channel(TaskqChannelKind kind, const char *name)
{
	const char *shared = taskq_channel_name(kind, InvalidOid);

	return shared != NULL && strcmp(name, shared) == 0;
}

/*
 * The owner of job id, read past the table's privileges and row security
 * (the job was just written by this transaction, which may not see it
 * through them); InvalidOid when it is gone.
 */
Oid
taskq_job_owner(int64 id)
{
	Oid			table = taskq_table("jobs");
	Relation	rel;
	Oid			index;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	Oid			owner = InvalidOid;

	if (!OidIsValid(table))
		return InvalidOid;
	rel = table_open(table, AccessShareLock);
	index = RelationGetPrimaryKeyIndex(rel, false);
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(id));
	scan = systable_beginscan(rel, index, OidIsValid(index), SnapshotSelf, 1, &key);
	if ((tuple = systable_getnext(scan)) != NULL)
	{
		int			att = get_attnum(table, "owner");
		bool		isnull;
		Datum		value = att > 0 ? heap_getattr(tuple, att, RelationGetDescr(rel), &isnull)
			: (Datum) 0;

		if (att > 0 && !isnull)
			owner = DatumGetObjectId(value);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return owner;
}

/*
 * taskq._channel(kind, role): the channel of kind ('jobs' or 'work') for
 * role, or for a NULL role the shared one.  Not for PUBLIC: it reads the
 * secret; taskq.channel() and taskq.work_channel() say who gets which.
 */
PG_FUNCTION_INFO_V1(taskq_channel);
Datum
taskq_channel(PG_FUNCTION_ARGS)
{
	char	   *kind;
	TaskqChannelKind k;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (strcmp(kind, "jobs") == 0)
		k = TASKQ_CHANNEL_JOBS;
	else if (strcmp(kind, "work") == 0)
		k = TASKQ_CHANNEL_WORK;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("channel kind must be \"jobs\" or \"work\", got \"%s\"", kind)));
	(void) read_secret(false);	/* (the error when there is none) */
	PG_RETURN_TEXT_P(cstring_to_text(taskq_channel_name(k, PG_ARGISNULL(1) ? InvalidOid
														: PG_GETARG_OID(1))));
}

static bool
is_terminal_status(const char *status)
{
	return strcmp(status, "succeeded") == 0 || strcmp(status, "failed") == 0 ||
		strcmp(status, "cancelled") == 0;
}

/* Does taskq.notify_level publish a transition to status on taskq_jobs? */
static bool
published_on_jobs(const char *status)
{
	return taskq_notify_level == NOTIFY_ALL ||
		(taskq_notify_level == NOTIFY_TERMINAL && is_terminal_status(status));
}

/*
 * May a transition to status be published now?  Above
 * taskq.notify_queue_limit nothing is, so a listener that never reads slows
 * nothing down and a full queue fails no transaction.  Usage is read once
 * per transaction.
 */
bool
taskq_publishing_now(const char *status)
{
	static LocalTransactionId checked_in = InvalidLocalTransactionId;
	static bool queue_has_room = true;

	if (taskq_notify_level == NOTIFY_NONE ||
		(!published_on_jobs(status) && strcmp(status, "pending") != 0))
		return false;
	if (checked_in != MyProcLxid)
	{
		LOCAL_FCINFO(usage_fcinfo, 0);

		InitFunctionCallInfoData(*usage_fcinfo, NULL, 0, InvalidOid, NULL, NULL);
		queue_has_room = DatumGetFloat8(pg_notification_queue_usage(usage_fcinfo)) <
			taskq_notify_queue_limit;
		checked_in = MyProcLxid;
	}
	return queue_has_room;
}

/* taskq._publishing(status) */
PG_FUNCTION_INFO_V1(taskq_publishing_status);
Datum
taskq_publishing_status(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(taskq_publishing_now(text_to_cstring(PG_GETARG_TEXT_PP(0))));
}

/*
 * Publish one transition of a job (the caller asked taskq_publishing_now);
 * owner InvalidOid when the caller does not know it.  In C because it runs
 * once per job per transition: json_build_object looked up the type of
 * every argument at every call.
 */
void
taskq_publish_transition(int64 id, const char *status, const char *queue,
						 const char *job_type, int attempt, bool in_database, Oid owner)
{
	PreventCommandDuringRecovery("NOTIFY");
	if (!in_database && strcmp(status, "pending") == 0)
		taskq_announce_work(id, owner, queue);
	if (published_on_jobs(status))
	{
		StringInfoData buf;

		initStringInfo(&buf);
		appendStringInfo(&buf, "{\"id\": " INT64_FORMAT ", \"status\": ", id);
		escape_json(&buf, status);
		appendStringInfoString(&buf, ", \"queue\": ");
		escape_json(&buf, queue);
		appendStringInfoString(&buf, ", \"job_type\": ");
		escape_json(&buf, job_type);
		appendStringInfo(&buf, ", \"attempt\": %d}", attempt);
		taskq_notify(id, owner, buf.data);
		pfree(buf.data);
	}
}

/*
 * taskq._publish(id, status, queue, job_type, attempt, in_database).
 * STRICT: every caller passes columns that are NOT NULL.
 */
PG_FUNCTION_INFO_V1(taskq_publish_job);
Datum
taskq_publish_job(PG_FUNCTION_ARGS)
{
	taskq_publish_transition(PG_GETARG_INT64(0), text_to_cstring(PG_GETARG_TEXT_PP(1)),
							 text_to_cstring(PG_GETARG_TEXT_PP(2)),
							 text_to_cstring(PG_GETARG_TEXT_PP(3)), PG_GETARG_INT32(4),
							 PG_GETARG_BOOL(5), InvalidOid);
	PG_RETURN_VOID();
}

/*
 * Announce on the workers' channel, and on the work channel of each role
 * with claimable jobs there, that queue has work.  Rare (an admin resumed the
 * queue or unregistered a handler), so the owners are asked of SQL.
 */
static void
announce_queue(const char *queue)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(queue)};
	int			rc;

	taskq_announce_work(0, InvalidOid, queue);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "taskq: SPI_connect failed");
	rc = SPI_execute_with_args("SELECT DISTINCT owner::oid FROM taskq.jobs"
							   " WHERE queue = $1 AND status = 'pending' AND NOT in_database",
							   1, argtypes, args, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "taskq: SPI_execute failed: %s", SPI_result_code_string(rc));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		owner = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1,
										  &isnull);

		if (!isnull)
			taskq_announce_work(0, DatumGetObjectId(owner), queue);
	}
	SPI_finish();
}

/*
 * taskq._publish_resumed(queue), when _publishing('pending'): a resumed
 * queue's pending jobs changed no status, but listening workers should claim
 * them now.  {"status": "resumed", "queue"} goes to admins only.
 */
PG_FUNCTION_INFO_V1(taskq_publish_resumed);
Datum
taskq_publish_resumed(PG_FUNCTION_ARGS)
{
	char	   *queue = text_to_cstring(PG_GETARG_TEXT_PP(0));

	PreventCommandDuringRecovery("NOTIFY");
	announce_queue(queue);
	if (taskq_notify_level == NOTIFY_ALL)
	{
		StringInfoData buf;

		initStringInfo(&buf);
		appendStringInfoString(&buf, "{\"status\": \"resumed\", \"queue\": ");
		escape_json(&buf, queue);
		appendStringInfoChar(&buf, '}');
		taskq_notify(0, InvalidOid, buf.data);
	}
	PG_RETURN_VOID();
}

/*
 * taskq._announce_work(queue), when _publishing('pending'): jobs of queue
 * became claimable by external workers without a transition of their own
 * (their handler was unregistered).
 */
PG_FUNCTION_INFO_V1(taskq_announce_work_sql);
Datum
taskq_announce_work_sql(PG_FUNCTION_ARGS)
{
	PreventCommandDuringRecovery("NOTIFY");
	announce_queue(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}
