/*
 * caller.c: who acts in taskq.
 *
 * The rights of running SQL are current_user's, and taskq uses exactly
 * those.  Its privileged functions run as the extension's owner (SECURITY
 * DEFINER), where current_user is that owner, so each public one is a C
 * entry point (taskq_api_call) in front of its body, the function of the
 * same name and arguments in schema taskq_internal.  The entry point notes
 * current_user as the caller, refuses to act inside a security-restricted
 * operation, as PostgreSQL's own commands do, and calls the body, which asks
 * taskq._caller() who is acting.  Nobody but the extension's owner may use
 * schema taskq_internal: only the entry point reaches the bodies.
 *
 * Nothing else names the caller: not the session user (an index expression
 * evaluated by a superuser's ANALYZE would act as that superuser), not the
 * outer user (a SECURITY DEFINER function would act for whoever called it).
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_proc.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/value.h"
#include "catalog/namespace.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/regproc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "taskq.h"

/*
 * The caller noted by the entry point now running (InvalidOid outside one),
 * and the role its body runs as: code running as any other role acts for
 * itself, whatever called it.
 */
static Oid	api_caller = InvalidOid;
static Oid	api_runs_as = InvalidOid;

/* fn_extra of an entry point: its body, looked up once per call site */
typedef struct ApiBody
{
	FmgrInfo	flinfo;
	Oid			owner;			/* the extension's owner, as whom the body runs */
} ApiBody;

static void
refuse_security_restricted(void)
{
	if (InSecurityRestrictedOperation())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("taskq cannot be used within a security-restricted operation"),
				 errdetail("Index expressions, materialized views and maintenance commands run as "
						   "another role than the one that started them.")));
}

/*
 * The role taskq acts for: the caller noted by the entry point, or, outside
 * one, current_user.  Never inside a security-restricted operation.
 */
Oid
taskq_caller_role(void)
{
	refuse_security_restricted();
	if (OidIsValid(api_caller) && GetUserId() == api_runs_as)
		return api_caller;
	return GetUserId();
}

/*
 * Act for caller while a body runs as runs_as (taskq.submit switches user
 * itself); returns what taskq_stop_acting must restore.
 */
TaskqActing
taskq_start_acting(Oid caller, Oid runs_as)
{
	TaskqActing previous = {api_caller, api_runs_as};

	api_caller = caller;
	api_runs_as = runs_as;
	return previous;
}

void
taskq_stop_acting(TaskqActing previous)
{
	api_caller = previous.caller;
	api_runs_as = previous.runs_as;
}

PG_FUNCTION_INFO_V1(taskq_caller);
Datum
taskq_caller(PG_FUNCTION_ARGS)
{
	/* every function of an older schema asks: it must not run on this library */
	taskq_require_current_schema();
	PG_RETURN_OID(taskq_caller_role());
}

/*
 * current_user as an OID, for the row security policies: a role name parsed
 * again as regrole matches another role ("Victim" as victim) or fails.
 */
PG_FUNCTION_INFO_V1(taskq_current_role);
Datum
taskq_current_role(PG_FUNCTION_ARGS)
{
	PG_RETURN_OID(GetUserId());
}

/* taskq_internal.<name> with the entry point's argument types, checked */
static void
find_body(FunctionCallInfo fcinfo, ApiBody *body)
{
	Oid			entry = fcinfo->flinfo->fn_oid;
	HeapTuple	tup;
	Form_pg_proc proc;
	Oid			body_oid;
	Oid			entry_owner;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(entry));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", entry);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	/* no USAGE on taskq_internal is needed: that is the point */
	body_oid = GetSysCacheOid3(PROCNAMEARGSNSP, Anum_pg_proc_oid,
							   NameGetDatum(&proc->proname),
							   PointerGetDatum(&proc->proargtypes),
							   ObjectIdGetDatum(get_namespace_oid("taskq_internal", false)));
	if (!OidIsValid(body_oid))
		elog(ERROR, "taskq: function %s has no body in schema taskq_internal",
			 NameStr(proc->proname));
	entry_owner = proc->proowner;
	ReleaseSysCache(tup);

	/* a body that is not taskq's own would run as someone else */
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(body_oid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", body_oid);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	if (proc->proowner != entry_owner || !proc->prosecdef || proc->proretset != fcinfo->flinfo->fn_retset)
		elog(ERROR, "taskq: function %u is not the body of function %u", body_oid, entry);
	body->owner = proc->proowner;
	ReleaseSysCache(tup);

	fmgr_info_cxt(body_oid, &body->flinfo, fcinfo->flinfo->fn_mcxt);
}

/*
 * The entry point of every privileged public function: note the caller and
 * call the body with the same arguments and result info, through which a
 * set-returning body returns its rows.  A body calling another public
 * function still acts for its own caller.
 */
PG_FUNCTION_INFO_V1(taskq_api_call);
Datum
taskq_api_call(PG_FUNCTION_ARGS)
{
	ApiBody    *body = (ApiBody *) fcinfo->flinfo->fn_extra;
	LOCAL_FCINFO(inner, FUNC_MAX_ARGS);
	TaskqActing acting;
	volatile Datum result = (Datum) 0;

	refuse_security_restricted();
	taskq_require_current_schema();
	if (body == NULL)
	{
		body = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ApiBody));
		find_body(fcinfo, body);
		fcinfo->flinfo->fn_extra = body;
	}

	InitFunctionCallInfoData(*inner, &body->flinfo, fcinfo->nargs, fcinfo->fncollation,
							 fcinfo->context, fcinfo->resultinfo);
	memcpy(inner->args, fcinfo->args, sizeof(NullableDatum) * fcinfo->nargs);

	acting = taskq_start_acting(taskq_caller_role(), body->owner);
	PG_TRY();
	{
		result = FunctionCallInvoke(inner);
	}
	PG_FINALLY();
	{
		taskq_stop_acting(acting);
	}
	PG_END_TRY();

	fcinfo->isnull = inner->isnull;
	return result;
}

/*
 * A handler runs as the owner of every job of its type, so whoever can
 * change its code must be trusted to act as them all: its owner is a
 * superuser or a member of taskq_admin, and it is not SECURITY DEFINER
 * (which would run it as that owner instead).  Checked at registration and
 * again before each run, since both can change after registration.
 */
void
taskq_check_handler_trusted(Oid handler)
{
	HeapTuple	tup;
	Form_pg_proc proc;
	Oid			admin = get_role_oid("taskq_admin", true);

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(handler));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", handler)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	if (proc->prosecdef)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("handler %s is SECURITY DEFINER", format_procedure(handler)),
				 errdetail("Handlers run with the rights of the role that submitted the job.")));
	if (!superuser_arg(proc->proowner) &&
		!(OidIsValid(admin) && is_member_of_role(proc->proowner, admin)))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("handler %s is owned by role \"%s\", which is not trusted to run code as other roles",
						format_procedure(handler), GetUserNameFromId(proc->proowner, true)),
				 errdetail("A handler runs as the owner of each job, and its owner can change its code."),
				 errhint("Make a superuser or a member of taskq_admin the function's owner.")));
	ReleaseSysCache(tup);
}

PG_FUNCTION_INFO_V1(taskq_check_handler);
Datum
taskq_check_handler(PG_FUNCTION_ARGS)
{
	taskq_check_handler_trusted(PG_GETARG_OID(0));
	PG_RETURN_VOID();
}
