/*
 * publish.c: what taskq publishes, and on which channel.
 *
 * taskq_jobs carries each job's transitions with the payload of DESIGN.md,
 * as taskq.notify_level says; taskq_work carries the name of a queue that got
 * work external workers can claim, at every level but none.  listeners.c
 * holds them until commit and sends them only while someone may listen.
 */
#include "postgres.h"

#include "commands/async.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"

#include "taskq.h"

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
	if (checked_in != MyProc->lxid)
	{
		LOCAL_FCINFO(usage_fcinfo, 0);

		InitFunctionCallInfoData(*usage_fcinfo, NULL, 0, InvalidOid, NULL, NULL);
		queue_has_room = DatumGetFloat8(pg_notification_queue_usage(usage_fcinfo)) <
			taskq_notify_queue_limit;
		checked_in = MyProc->lxid;
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
 * Publish one transition of a job (the caller asked taskq_publishing_now).
 * In C because it runs once per job per
 * transition: json_build_object looked up the type of every argument at
 * every call.
 */
void
taskq_publish_transition(int64 id, const char *status, const char *queue,
						 const char *job_type, int attempt, bool in_database)
{
	PreventCommandDuringRecovery("NOTIFY");
	if (!in_database && strcmp(status, "pending") == 0)
		taskq_announce_work(queue);
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
		taskq_notify(buf.data);
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
							 PG_GETARG_BOOL(5));
	PG_RETURN_VOID();
}

/*
 * taskq._publish_resumed(queue), when _publishing('pending'): a resumed
 * queue's pending jobs changed no status, but listening workers should claim
 * them now.
 */
PG_FUNCTION_INFO_V1(taskq_publish_resumed);
Datum
taskq_publish_resumed(PG_FUNCTION_ARGS)
{
	char	   *queue = text_to_cstring(PG_GETARG_TEXT_PP(0));

	PreventCommandDuringRecovery("NOTIFY");
	taskq_announce_work(queue);
	if (taskq_notify_level == NOTIFY_ALL)
	{
		StringInfoData buf;

		initStringInfo(&buf);
		appendStringInfoString(&buf, "{\"status\": \"resumed\", \"queue\": ");
		escape_json(&buf, queue);
		appendStringInfoChar(&buf, '}');
		taskq_notify(buf.data);
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
	taskq_announce_work(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}
