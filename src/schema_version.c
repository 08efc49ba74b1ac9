/*
 * schema_version.c: the schema version this library was built for.
 *
 * The library and the schema are installed separately: a new package puts
 * the new library in place at the next restart, while each database keeps
 * the schema it has until ALTER EXTENSION taskq UPDATE.  The old schema's
 * SQL would call the new C code with the old contract, so taskq's entry
 * points refuse to run until the schema is current (the error says how to
 * update), and the workers wait (taskq_extension_ready).
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"

#include "taskq.h"

/* the extension found current last time: it can only move forward */
static Oid	current_extension = InvalidOid;

/* extversion of extension ext, palloc'd, or NULL */
static char *
installed_version(Oid ext)
{
	Relation	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	char	   *version = NULL;

	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(ext));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = text_to_cstring(DatumGetTextPP(d));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/*
 * Is extension ext's schema the one this library needs?  *installed gets
 * the installed version when it is not.
 */
bool
taskq_schema_is_current(Oid ext, char **installed)
{
	char	   *version;

	if (ext == current_extension)
		return true;
	version = installed_version(ext);
	if (version != NULL && strcmp(version, TASKQ_SCHEMA_VERSION) == 0)
	{
		current_extension = ext;
		return true;
	}
	*installed = version ? version : "unknown";
	return false;
}

/* ERROR unless this database's taskq schema is the one this library needs */
void
taskq_require_current_schema(void)
{
	Oid			ext = get_extension_oid("taskq", true);
	char	   *installed;

	if (ext == current_extension || !OidIsValid(ext))
		return;
	if (!taskq_schema_is_current(ext, &installed))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("taskq's schema in this database is version %s, but its library is version %s",
						installed, TASKQ_SCHEMA_VERSION),
				 errhint("Run ALTER EXTENSION taskq UPDATE in this database.")));
}

/*
 * Is the extension installed in this database, with the schema this library
 * needs (schema_version.c)?  Needs a transaction.  Locks
 * the extension until the transaction ends: DROP EXTENSION locks it first,
 * so it waits for a worker's transaction instead of deadlocking with it.
 */
bool
taskq_extension_ready(void)
{
	static bool told_schema = false;
	Oid			ext = get_extension_oid("taskq", true);
	char	   *installed;

	if (!OidIsValid(ext))
		return false;
	LockDatabaseObject(ExtensionRelationId, ext, 0, AccessShareLock);
	/* dropped while we waited for the lock? */
	if (get_extension_oid("taskq", true) != ext)
		return false;
	if (!taskq_schema_is_current(ext, &installed))
	{
		/* said once per worker: the workers wait for the update */
		if (!told_schema)
			ereport(LOG,
					(errmsg("taskq: schema version %s in database \"%s\", library version %s: workers wait",
							installed, get_database_name(MyDatabaseId), TASKQ_SCHEMA_VERSION),
					 errhint("Run ALTER EXTENSION taskq UPDATE in that database.")));
		told_schema = true;
		return false;
	}
	return true;
}
