/*
 * compat.h: the PostgreSQL major versions taskq is tested against (15, 17
 * and 18) and the APIs that differ between them.  The C files use the
 * newest name of each API; only this header tests PG_VERSION_NUM.
 */
#ifndef TASKQ_COMPAT_H
#define TASKQ_COMPAT_H

#include "postgres.h"

#include "catalog/dependency.h"
#include "catalog/pg_database.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/relcache.h"

/* 16 is not tested: refused like the others */
#if PG_VERSION_NUM < 150000 || PG_VERSION_NUM >= 190000 || \
	(PG_VERSION_NUM >= 160000 && PG_VERSION_NUM < 170000)
#error "taskq supports PostgreSQL 15, 17 and 18 only (the versions it is tested against)"
#endif

#if PG_VERSION_NUM < 160000

/*
 * 16's PG_TRY(suffix): a PG_TRY nested in another one names its variables
 * apart (16's -Wshadow=compatible-local flags the unnamed pair)
 */
#undef PG_TRY
#undef PG_CATCH
#undef PG_FINALLY
#undef PG_END_TRY
#define PG_TRY(...)  \
	do { \
		sigjmp_buf *_save_exception_stack##__VA_ARGS__ = PG_exception_stack; \
		ErrorContextCallback *_save_context_stack##__VA_ARGS__ = error_context_stack; \
		sigjmp_buf _local_sigjmp_buf##__VA_ARGS__; \
		bool _do_rethrow##__VA_ARGS__ = false; \
		if (sigsetjmp(_local_sigjmp_buf##__VA_ARGS__, 0) == 0) \
		{ \
			PG_exception_stack = &_local_sigjmp_buf##__VA_ARGS__
#define PG_CATCH(...)	\
		} \
		else \
		{ \
			PG_exception_stack = _save_exception_stack##__VA_ARGS__; \
			error_context_stack = _save_context_stack##__VA_ARGS__
#define PG_FINALLY(...) \
		} \
		else \
			_do_rethrow##__VA_ARGS__ = true; \
		{ \
			PG_exception_stack = _save_exception_stack##__VA_ARGS__; \
			error_context_stack = _save_context_stack##__VA_ARGS__
#define PG_END_TRY(...)  \
		} \
		if (_do_rethrow##__VA_ARGS__) \
				PG_RE_THROW(); \
		PG_exception_stack = _save_exception_stack##__VA_ARGS__; \
		error_context_stack = _save_context_stack##__VA_ARGS__; \
	} while (0)

/* 16 folded pg_<class>_aclcheck and pg_<class>_ownercheck into these */
static inline AclResult
object_aclcheck(Oid classid, Oid objectid, Oid roleid, AclMode mode)
{
	switch (classid)
	{
		case ProcedureRelationId:
			return pg_proc_aclcheck(objectid, roleid, mode);
		case NamespaceRelationId:
			return pg_namespace_aclcheck(objectid, roleid, mode);
		case DatabaseRelationId:
			return pg_database_aclcheck(objectid, roleid, mode);
		case TypeRelationId:
			return pg_type_aclcheck(objectid, roleid, mode);
	}
	elog(ERROR, "taskq: object_aclcheck of catalog %u is not supported on PostgreSQL 15",
		 classid);
	return ACLCHECK_NO_PRIV;
}

static inline bool
object_ownercheck(Oid classid, Oid objectid, Oid roleid)
{
	switch (classid)
	{
		case ProcedureRelationId:
			return pg_proc_ownercheck(objectid, roleid);
		case NamespaceRelationId:
			return pg_namespace_ownercheck(objectid, roleid);
		case DatabaseRelationId:
			return pg_database_ownercheck(objectid, roleid);
		case TypeRelationId:
			return pg_type_ownercheck(objectid, roleid);
	}
	elog(ERROR, "taskq: object_ownercheck of catalog %u is not supported on PostgreSQL 15",
		 classid);
	return false;
}

/* 16 added onlySummarizing (true only for HOT updates of summarizing indexes) */
#define ExecInsertIndexTuples(rri, slot, estate, update, noDupErr, specConflict, \
							  arbiterIndexes, onlySummarizing) \
	ExecInsertIndexTuples(rri, slot, estate, update, noDupErr, specConflict, \
						  arbiterIndexes)

#endif							/* PG_VERSION_NUM < 160000 */

#if PG_VERSION_NUM < 170000

/* 17 takes the open relation */
#define getIdentitySequence(rel, attnum, missing_ok) \
	getIdentitySequence(RelationGetRelid(rel), attnum, missing_ok)

/*
 * 17 numbers backends by their PGPROC (from 0) instead of BackendId (from
 * 1); both are below MaxBackends + 1 for any process that runs transactions.
 */
typedef BackendId ProcNumber;
#define MyProcNumber MyBackendId
#define INVALID_PROC_NUMBER InvalidBackendId

/*
 * 17's way to run code with a safe search_path; the caller brackets it with
 * NewGUCNestLevel() and AtEOXact_GUC(true, nestlevel) (an abort restores it).
 */
#define GUC_SAFE_SEARCH_PATH "pg_catalog, pg_temp"
static inline void
RestrictSearchPath(void)
{
	set_config_option("search_path", GUC_SAFE_SEARCH_PATH, PGC_USERSET, PGC_S_SESSION,
					  GUC_ACTION_SAVE, true, 0, false);
}

#endif							/* PG_VERSION_NUM < 170000 */

/*
 * 18 can return a deferrable primary key (deferrable_ok); before 18 it
 * never did, which is deferrable_ok = false
 */
#if PG_VERSION_NUM < 180000
#define RelationGetPrimaryKeyIndex(relation, deferrable_ok) \
	RelationGetPrimaryKeyIndex(relation)
#endif

/* 17 moved PGPROC's lxid into vxid: this backend's local transaction id */
#if PG_VERSION_NUM >= 170000
#define MyProcLxid (MyProc->vxid.lxid)
#else
#define MyProcLxid (MyProc->lxid)
#endif

/* 18 added the instrumentation argument of index_beginscan */
#if PG_VERSION_NUM >= 180000
#define taskq_index_beginscan(rel, index, snapshot, nkeys) \
	index_beginscan((rel), (index), (snapshot), NULL, (nkeys), 0)
#else
#define taskq_index_beginscan(rel, index, snapshot, nkeys) \
	index_beginscan((rel), (index), (snapshot), (nkeys), 0)
#endif

#endif							/* TASKQ_COMPAT_H */
