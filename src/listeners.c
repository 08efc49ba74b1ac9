/*
 * listeners.c: taskq publishes on taskq_jobs only while a session may be
 * listening on it.
 *
 * Every notifying commit passes PostgreSQL's cluster-wide NOTIFY lock one at
 * a time, even when nobody listens: with 4 or more submitting clients that
 * lock, not the INSERTs, set the pace (bench/README.md).  So taskq counts the
 * sessions that ran LISTEN taskq_jobs (taskq is preloaded: every backend sees
 * the statement), keeps a transaction's notifications until it commits, and
 * sends them at PRE_COMMIT only when that count is not zero.  A session stays
 * counted until it exits (UNLISTEN may roll back; counting too many only
 * costs a NOTIFY).
 *
 * No listener misses a notification PostgreSQL owes it, one of a transaction
 * that commits after its LISTEN did: a committing transaction raises its flag
 * before it reads the count and lowers it only once its commit is done;
 * LISTEN raises the count before it reads the flags and waits for each raised
 * flag to fall.  So a commit that read zero is over before LISTEN returns.
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/async.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "taskq.h"

#define TASKQ_CHANNEL "taskq_jobs"

typedef struct TaskqListeners
{
	pg_atomic_uint32 count;		/* sessions that ran LISTEN taskq_jobs */
	pg_atomic_uint32 committing[FLEXIBLE_ARRAY_MEMBER];	/* by BackendId */
} TaskqListeners;

/* NULL when taskq is not preloaded: then every notification is sent */
static TaskqListeners *Listeners = NULL;

/* a notification kept until commit, with the subtransaction that made it */
typedef struct HeldNotification
{
	int			nest_level;
	char		payload[FLEXIBLE_ARRAY_MEMBER];
} HeldNotification;

static List *held = NIL;		/* in TopTransactionContext */
static bool flag_raised = false;
static bool counted = false;	/* and listeners_at_exit registered */


Size
taskq_listeners_size(void)
{
	return add_size(offsetof(TaskqListeners, committing),
					mul_size(sizeof(pg_atomic_uint32), MaxBackends + 1));
}

/* Called with AddinShmemInitLock held. */
void
taskq_listeners_attach(void)
{
	bool		found;

	Listeners = ShmemInitStruct("taskq listeners", taskq_listeners_size(), &found);
	if (!found)
	{
		pg_atomic_init_u32(&Listeners->count, 0);
		for (int i = 0; i <= MaxBackends; i++)
			pg_atomic_init_u32(&Listeners->committing[i], 0);
	}
}

static void
send_now(const char *payload)
{
	Async_Notify(TASKQ_CHANNEL, payload);
	taskq_request_commit_flush(TASKQ_FLUSH_AFTER_NOTIFY);
}

/* Publish payload on taskq_jobs when this transaction commits. */
void
taskq_notify(const char *payload)
{
	HeldNotification *n;
	Size		len = strlen(payload) + 1;
	MemoryContext old;

	if (Listeners == NULL || MyBackendId == InvalidBackendId)
	{
		send_now(payload);
		return;
	}
	old = MemoryContextSwitchTo(TopTransactionContext);
	n = palloc(offsetof(HeldNotification, payload) + len);
	n->nest_level = GetCurrentTransactionNestLevel();
	memcpy(n->payload, payload, len);
	held = lappend(held, n);
	MemoryContextSwitchTo(old);
}

/* (the list and its cells die with TopTransactionContext) */
static void
forget_held(void)
{
	held = NIL;
}

static void
lower_flag(void)
{
	if (flag_raised)
		pg_atomic_write_u32(&Listeners->committing[MyBackendId], 0);
	flag_raised = false;
}

static void
send_or_drop_held(void)
{
	ListCell   *lc;

	pg_atomic_write_u32(&Listeners->committing[MyBackendId], 1);
	flag_raised = true;
	pg_memory_barrier();
	if (pg_atomic_read_u32(&Listeners->count) == 0)
	{
		/* nobody to tell; the flag stays up until the commit is done */
		forget_held();
		return;
	}
	foreach(lc, held)
		send_now(((HeldNotification *) lfirst(lc))->payload);
	forget_held();
	lower_flag();
}

static void
listeners_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (held != NIL)
				send_or_drop_held();
			break;
		case XACT_EVENT_PRE_PREPARE:
			/* PostgreSQL itself refuses to PREPARE a transaction that notified */
			{
				ListCell   *lc;

				foreach(lc, held)
					send_now(((HeldNotification *) lfirst(lc))->payload);
			}
			forget_held();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			forget_held();
			lower_flag();
			break;
		default:
			break;
	}
}

static void
listeners_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						   SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();
	ListCell   *lc;

	if (held == NIL)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		foreach(lc, held)
		{
			HeldNotification *n = lfirst(lc);

			if (n->nest_level >= level)
				held = foreach_delete_current(held, lc);
		}
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		foreach(lc, held)
		{
			HeldNotification *n = lfirst(lc);

			if (n->nest_level >= level)
				n->nest_level = level - 1;
		}
	}
}

static void
listeners_at_exit(int code, Datum arg)
{
	lower_flag();
	if (counted)
		pg_atomic_fetch_sub_u32(&Listeners->count, 1);
	counted = false;
}

/*
 * This session is about to LISTEN on taskq_jobs: count it, then wait out
 * the commits that read the count before it was raised.  Every LISTEN
 * waits, not only the first: one cancelled while waiting may be retried.
 */
static void
count_this_listener(void)
{
	if (!counted)
	{
		on_shmem_exit(listeners_at_exit, 0);
		pg_atomic_fetch_add_u32(&Listeners->count, 1);	/* a full barrier */
		counted = true;
	}

	for (int i = 1; i <= MaxBackends; i++)
	{
		long		sleep_ms = 1;

		while (i != MyBackendId && pg_atomic_read_u32(&Listeners->committing[i]) != 0)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 sleep_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			sleep_ms = Min(sleep_ms * 2, 16);
		}
	}
}

/* A LISTEN taskq_jobs about to run (called from taskq.c's ProcessUtility hook) */
void
taskq_listeners_utility(Node *stmt)
{
	/* (only where PostgreSQL will let the LISTEN run: see standard_ProcessUtility) */
	if (IsA(stmt, ListenStmt) &&
		strcmp(((ListenStmt *) stmt)->conditionname, TASKQ_CHANNEL) == 0 &&
		MyBackendType == B_BACKEND && MyBackendId != InvalidBackendId &&
		!InSecurityRestrictedOperation() && !RecoveryInProgress())
		count_this_listener();
}

/*
 * Called from _PG_init when preloading, after taskq_commit_flush_init:
 * transaction callbacks run newest first, and whether this commit notifies
 * must be settled before commit_flush.c looks.
 */
void
taskq_listeners_init(void)
{
	RegisterXactCallback(listeners_xact_callback, NULL);
	RegisterSubXactCallback(listeners_subxact_callback, NULL);
}
