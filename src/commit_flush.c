/*
 * commit_flush.c
 *		A transaction that publishes (on taskq's channels), or
 *		wakes the executors, flushes its commit record after its locks are
 *		released and its wake-ups are sent.
 *
 * PostgreSQL serializes notifying transactions: PreCommit_Notify takes a
 * cluster-wide lock that is released with the transaction's other locks,
 * after the WAL flush of its commit record.  Two notifying commits can never
 * share a flush, so submitters and executors queue behind each other's
 * fsyncs (bench/README.md).  With taskq.flush_after_notify on, a transaction
 * that published commits asynchronously (its commit record is inserted into
 * the WAL, not flushed, while the lock is held) and then, once its locks are
 * gone and before COMMIT returns, flushes it as a synchronous commit would.
 * COMMIT still returns only once the commit is durable; what changes is that
 * other sessions may see the transaction for the length of that flush before
 * it is.
 *
 * The same serves taskq.wake_before_flush: a commit that makes jobs runnable
 * wakes an executor (XACT_EVENT_COMMIT) before the flush (released after the
 * locks), so the executor claims while the submitter's fsync runs instead of
 * after it.  No handler runs on a job whose submit is not durable yet: an
 * executor flushes its claim's commit record, later in the WAL than the
 * submit's, before it runs the claimed jobs (executor.c).
 *
 * Not under synchronous replication: PostgreSQL keeps a commit invisible
 * until the standbys confirm it, and the window would last as long as they
 * take (forever, with the standby down).  Nor for remote_apply, whose commit
 * record itself asks the standby for an immediate reply.
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "replication/syncrep.h"
#include "replication/walsender.h"
#include "utils/resowner.h"

#include "taskq.h"

bool		taskq_flush_after_notify = true;
bool		taskq_wake_before_flush = true;

/* what this transaction does at commit that may defer its flush */
static bool publishes = false;
static bool wakes = false;

/* >= 0: the synchronous_commit we lowered to off for this commit */
static int	lowered_synchronous_commit = -1;

void
taskq_request_commit_flush(TaskqFlushReason reason)
{
	if (reason == TASKQ_FLUSH_AFTER_NOTIFY)
		publishes = true;
	else
		wakes = true;
}

/*
 * Decided at pre-commit, with the settings of that moment.  A publishing
 * commit follows flush_after_notify alone, so that off keeps PostgreSQL's
 * order (the NOTIFY lock held through the flush) even when it also wakes.
 * Without shared memory there is no executor to wake; without an xid there
 * is no commit record to flush.
 */
static bool
flush_after_locks(void)
{
	if (!TransactionIdIsValid(GetTopTransactionIdIfAny()))
		return false;
	if (publishes)
		return taskq_flush_after_notify;
	return wakes && taskq_wake_before_flush && taskq_state() != NULL;
}

static void
forget_requests(void)
{
	publishes = false;
	wakes = false;
}

/* Does this commit wait for synchronous standbys (as configured)? */
static bool
synchronous_replication_wanted(void)
{
	return SyncRepRequested() &&
		SyncRepStandbyNames != NULL && SyncRepStandbyNames[0] != '\0';
}

static void
restore_synchronous_commit(void)
{
	if (lowered_synchronous_commit >= 0)
		synchronous_commit = lowered_synchronous_commit;
	lowered_synchronous_commit = -1;
}

/* Transaction phase (taskq.c's transaction callback, after listeners.c's). */
void
taskq_commit_flush_xact(XactEvent event)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			/* the last step before the commit record: lower it for this commit only */
			if (synchronous_commit > SYNCHRONOUS_COMMIT_OFF && flush_after_locks() &&
				!synchronous_replication_wanted())
			{
				lowered_synchronous_commit = synchronous_commit;
				synchronous_commit = SYNCHRONOUS_COMMIT_OFF;
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			restore_synchronous_commit();
			forget_requests();
			break;
		default:
			break;
	}
}

/* Called at each phase of the release of a transaction's resources (taskq.c). */
void
taskq_commit_flush_release(ResourceReleasePhase phase, bool isCommit, bool isTopLevel)
{
	bool		lowered;

	if (phase != RESOURCE_RELEASE_AFTER_LOCKS || !isTopLevel)
		return;
	lowered = lowered_synchronous_commit >= 0;
	forget_requests();
	restore_synchronous_commit();
	if (lowered && isCommit)
	{
		/*
		 * What RecordTransactionCommit would have done, now without the lock.
		 * We lower synchronous_commit only when no standby wait is configured,
		 * but the walsenders' view of synchronous_standby_names may lag ours
		 * after a reload: SyncRepWaitForLSN decides as it would have.
		 */
		XLogFlush(XactLastCommitEnd);
		SyncRepWaitForLSN(XactLastCommitEnd, true);
	}
}
