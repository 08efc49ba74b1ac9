/*
 * listeners.c: taskq publishes on its channels only while a session may be
 * listening on them.
 *
 * Channels come in two kinds (publish.c names them): taskq_jobs_* carry
 * transitions, taskq_work_* the name of a queue that got claimable work,
 * once per committing transaction, for external workers that need nothing
 * else.  A notification goes to the shared channel of its kind (admins',
 * workers') and to the channel of its kind of the job's owner.
 *
 * Every notifying commit passes PostgreSQL's cluster-wide NOTIFY lock one at
 * a time, even when nobody listens: with 4 or more submitting clients that
 * lock, not the INSERTs, set the pace (bench/README.md).  So taskq counts the
 * sessions that ran LISTEN on a channel of each class: the shared channel of
 * a kind, or any role's channel of that kind (taskq is preloaded: every
 * backend sees the statement; the prefix tells the kind, the name the
 * class).  It keeps a transaction's notifications until it commits, and
 * at PRE_COMMIT sends them only to the classes whose count is not zero.
 * Only for a role's channel is the owner of a job looked up, when the
 * publisher did not know it.  A session stays counted until it exits
 * (UNLISTEN may roll back; counting too many only costs a NOTIFY).
 *
 * No listener misses a notification PostgreSQL owes it, one of a transaction
 * that commits after its LISTEN did: a committing transaction raises its flag
 * for each class it holds notifications for before it reads the counts,
 * and lowers the flag of a class it dropped only once its commit is done;
 * LISTEN raises its class's count before it reads the flags and waits for
 * each raised flag of its class to fall.  So a commit that read zero is
 * over before LISTEN returns.
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

typedef TaskqChannelKind TaskqChannel;

#define CHANNEL_JOBS TASKQ_CHANNEL_JOBS
#define CHANNEL_WORK TASKQ_CHANNEL_WORK
#define NUM_CHANNELS NUM_TASKQ_CHANNELS

static const char *const channel_prefixes[NUM_CHANNELS] = {
	TASKQ_JOBS_CHANNEL_PREFIX, TASKQ_WORK_CHANNEL_PREFIX
};

/* listener classes: per kind, its shared channel or any role's channel */
#define SHARED_CLASS(kind) ((kind) * 2)
#define ROLE_CLASS(kind) ((kind) * 2 + 1)
#define NUM_CLASSES (NUM_CHANNELS * 2)
#define CLASS_BIT(class) (1 << (class))
#define KIND_BITS(kind) (CLASS_BIT(SHARED_CLASS(kind)) | CLASS_BIT(ROLE_CLASS(kind)))

typedef struct TaskqListeners
{
	pg_atomic_uint32 count[NUM_CLASSES];	/* sessions that ran LISTEN on one */
	/* by ProcNumber: CLASS_BIT(class), raised while a commit may drop its notifications */
	pg_atomic_uint32 committing[FLEXIBLE_ARRAY_MEMBER];
} TaskqListeners;

/* NULL when taskq is not preloaded: then every notification is sent */
static TaskqListeners *Listeners = NULL;

/* a notification kept until commit, with the subtransaction that made it */
typedef struct HeldNotification
{
	int			nest_level;
	int64		job_id;			/* 0: about no one job */
	Oid			owner;			/* InvalidOid: look up job_id's, if any */
	char		payload[FLEXIBLE_ARRAY_MEMBER];
} HeldNotification;

/* by kind, in TopTransactionContext */
static List *held[NUM_CHANNELS] = {NIL, NIL};
static bool flag_raised = false;
static bool counted[NUM_CLASSES];
static bool exit_callback_registered = false;


Size
taskq_listeners_shmem_size(void)
{
	return add_size(offsetof(TaskqListeners, committing),
					mul_size(sizeof(pg_atomic_uint32), MaxBackends + 1));
}

/* Called with AddinShmemInitLock held. */
void
taskq_listeners_shmem_init(void)
{
	bool		found;

	Listeners = ShmemInitStruct("taskq listeners", taskq_listeners_shmem_size(), &found);
	if (!found)
	{
		for (int c = 0; c < NUM_CLASSES; c++)
			pg_atomic_init_u32(&Listeners->count[c], 0);
		for (int i = 0; i <= MaxBackends; i++)
			pg_atomic_init_u32(&Listeners->committing[i], 0);
	}
}

/*
 * Send payload on the shared channel of its kind (to_shared) and on the
 * channel of that kind of the job's owner (to_owner; none when no job, or
 * the job is gone).
 */
static void
send_now(TaskqChannel channel, HeldNotification *n, bool to_shared, bool to_owner)
{
	const char *name;

	if (to_owner && !OidIsValid(n->owner) && n->job_id != 0)
		n->owner = taskq_job_owner(n->job_id);
	/* (no names before ALTER EXTENSION taskq UPDATE: nobody can listen) */
	if (to_shared && (name = taskq_channel_name(channel, InvalidOid)) != NULL)
		Async_Notify(name, n->payload);
	if (to_owner && OidIsValid(n->owner) &&
		(name = taskq_channel_name(channel, n->owner)) != NULL)
		Async_Notify(name, n->payload);
	taskq_request_commit_flush(TASKQ_FLUSH_AFTER_NOTIFY);
}

static bool
is_held(TaskqChannel channel, Oid owner, const char *payload)
{
	ListCell   *lc;

	foreach(lc, held[channel])
	{
		HeldNotification *n = lfirst(lc);

		if (n->job_id == 0 && n->owner == owner && strcmp(n->payload, payload) == 0)
			return true;
	}
	return false;
}

/*
 * Publish payload when this transaction commits.  unique: not when this
 * transaction holds it already for the same owner (a held one at a
 * shallower subtransaction outlives this one; one at the same level shares
 * its fate).  A notification about a job whose owner is not known yet is
 * kept with its id.
 */
static void
hold(TaskqChannel channel, int64 job_id, Oid owner, const char *payload, bool unique)
{
	HeldNotification *n;
	Size		len = strlen(payload) + 1;
	MemoryContext old;
	bool		now = Listeners == NULL || MyProcNumber == INVALID_PROC_NUMBER;

	if (OidIsValid(owner))
		job_id = 0;				/* its owner is all that is needed of it */
	if (!now && unique && job_id == 0 && is_held(channel, owner, payload))
		return;
	old = MemoryContextSwitchTo(now ? CurrentMemoryContext : TopTransactionContext);
	n = palloc(offsetof(HeldNotification, payload) + len);
	n->nest_level = GetCurrentTransactionNestLevel();
	n->job_id = job_id;
	n->owner = owner;
	memcpy(n->payload, payload, len);
	if (!now)
		held[channel] = lappend(held[channel], n);	/* (the list too) */
	MemoryContextSwitchTo(old);
	if (now)
	{
		send_now(channel, n, true, true);
		pfree(n);
	}
}

/*
 * Publish a transition of job job_id (owner InvalidOid: not known) when this
 * transaction commits; job_id 0 with no owner: for admins only.
 */
void
taskq_notify(int64 job_id, Oid owner, const char *payload)
{
	hold(CHANNEL_JOBS, job_id, owner, payload, false);
}

/*
 * Announce, when this transaction commits, that queue has claimable work:
 * to external workers once per transaction and queue, however many jobs
 * (PostgreSQL would fold the copies too; holding one spares an entry per
 * job), and to the job's owner (or with job_id 0, to owner only, if valid).
 */
void
taskq_announce_work(int64 job_id, Oid owner, const char *queue)
{
	hold(CHANNEL_WORK, job_id, owner, queue, true);
}

/* (the list and its cells die with TopTransactionContext) */
static void
forget_held(void)
{
	for (int c = 0; c < NUM_CHANNELS; c++)
		held[c] = NIL;
}

static void
lower_flag(void)
{
	if (flag_raised)
		pg_atomic_write_u32(&Listeners->committing[MyProcNumber], 0);
	flag_raised = false;
}

static void
send_held(TaskqChannel channel, bool to_shared, bool to_owner)
{
	ListCell   *lc;

	foreach(lc, held[channel])
		send_now(channel, lfirst(lc), to_shared, to_owner);
}

static void
send_or_drop_held(void)
{
	uint32		holding = 0;
	uint32		dropped = 0;

	for (int k = 0; k < NUM_CHANNELS; k++)
	{
		if (held[k] != NIL)
			holding |= KIND_BITS(k);
	}
	if (holding == 0)
		return;
	pg_atomic_write_u32(&Listeners->committing[MyProcNumber], holding);
	flag_raised = true;
	pg_memory_barrier();
	for (int k = 0; k < NUM_CHANNELS; k++)
	{
		bool		to_shared;
		bool		to_owner;

		if (held[k] == NIL)
			continue;
		to_shared = pg_atomic_read_u32(&Listeners->count[SHARED_CLASS(k)]) != 0;
		to_owner = pg_atomic_read_u32(&Listeners->count[ROLE_CLASS(k)]) != 0;
		if (!to_shared)
			dropped |= CLASS_BIT(SHARED_CLASS(k));
		if (!to_owner)
			dropped |= CLASS_BIT(ROLE_CLASS(k));
		if (to_shared || to_owner)
			send_held(k, to_shared, to_owner);
	}
	forget_held();
	/* nobody to tell in a class: its flag stays up until the commit is done */
	if (dropped == 0)
		lower_flag();
	else if (dropped != holding)
		pg_atomic_write_u32(&Listeners->committing[MyProcNumber], dropped);
}

/* Transaction phase (called from taskq.c's transaction callback, first). */
void
taskq_listeners_xact(XactEvent event)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			send_or_drop_held();
			break;
		case XACT_EVENT_PRE_PREPARE:
			/* PostgreSQL itself refuses to PREPARE a transaction that notified */
			for (int k = 0; k < NUM_CHANNELS; k++)
				send_held(k, true, true);
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

/*
 * Subtransaction phase (called from taskq.c's subtransaction callback,
 * first).  A list's nest levels never decrease from head to tail (a
 * notification is held at the current level, and an ending subtransaction
 * lowers its own), so only the tail belongs to the ending subtransaction:
 * an executor's batch runs each job in one, and a walk of the whole list
 * per job would cost the batch the square of its notifications.
 */
void
taskq_listeners_subxact(SubXactEvent event)
{
	int			level = GetCurrentTransactionNestLevel();

	if (event != SUBXACT_EVENT_ABORT_SUB && event != SUBXACT_EVENT_COMMIT_SUB)
		return;
	for (int c = 0; c < NUM_CHANNELS; c++)
	{
		int			i = list_length(held[c]);

		while (i > 0 && ((HeldNotification *) list_nth(held[c], i - 1))->nest_level >= level)
			i--;
		if (event == SUBXACT_EVENT_ABORT_SUB)
			held[c] = list_truncate(held[c], i);
		else
			for (int k = i; k < list_length(held[c]); k++)
				((HeldNotification *) list_nth(held[c], k))->nest_level = level - 1;
	}
}

static void
listeners_at_exit(int code, Datum arg)
{
	lower_flag();
	for (int c = 0; c < NUM_CLASSES; c++)
	{
		if (counted[c])
			pg_atomic_fetch_sub_u32(&Listeners->count[c], 1);
		counted[c] = false;
	}
}

/*
 * This session is about to LISTEN on a channel of class class: count it, then wait out the
 * commits that read the count before it was raised and dropped what they
 * held for channel.  Every LISTEN waits,
 * not only the first: one cancelled while waiting may be retried.
 */
static void
count_this_listener(int class)
{
	if (!exit_callback_registered)
	{
		on_shmem_exit(listeners_at_exit, 0);
		exit_callback_registered = true;
	}
	if (!counted[class])
	{
		pg_atomic_fetch_add_u32(&Listeners->count[class], 1);	/* a full barrier */
		counted[class] = true;
	}

	for (int i = 0; i <= MaxBackends; i++)
	{
		long		sleep_ms = 1;

		while (i != MyProcNumber &&
			   (pg_atomic_read_u32(&Listeners->committing[i]) & CLASS_BIT(class)) != 0)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 sleep_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			sleep_ms = Min(sleep_ms * 2, 16);
		}
	}
}

/* A LISTEN about to run (called from taskq.c's ProcessUtility hook) */
void
taskq_listeners_utility(Node *stmt)
{
	if (!IsA(stmt, ListenStmt))
		return;
	/* (only where PostgreSQL will let the LISTEN run: see standard_ProcessUtility) */
	if (MyBackendType != B_BACKEND || MyProcNumber == INVALID_PROC_NUMBER ||
		InSecurityRestrictedOperation() || RecoveryInProgress())
		return;
	for (int k = 0; k < NUM_CHANNELS; k++)
	{
		const char *name = ((ListenStmt *) stmt)->conditionname;

		if (strncmp(name, channel_prefixes[k], strlen(channel_prefixes[k])) == 0)
			count_this_listener(taskq_is_shared_channel(k, name) ? SHARED_CLASS(k)
								: ROLE_CLASS(k));
	}
}
