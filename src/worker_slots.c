/*
 * worker_slots.c: the worker slots of a served database's shared state (one
 * per launcher and executor: pid, state, latch, the capacity it holds), the
 * wake-ups that set their latches, the cancel flags of the batches executors
 * hold, and the CPU-unit and memory-MB capacity of in-database execution.
 *
 * An executor first reserves all capacity that is free, claims jobs that fit
 * in it, then keeps only what its batch needs.  Every change happens under
 * TaskqState->mutex, so the sum held never exceeds taskq.max_cpu_units /
 * taskq.max_memory_mb, not even for a moment.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "utils/builtins.h"

#include "taskq.h"

/* Free this process's slot and the capacity it held; runs at process exit. */
static void
taskq_detach_slot(int code, Datum arg)
{
	TaskqWorkerSlot *slot = (TaskqWorkerSlot *) DatumGetPointer(arg);

	taskq_release_all(slot);
	SpinLockAcquire(&TaskqState->mutex);
	memset(slot, 0, sizeof(TaskqWorkerSlot));
	SpinLockRelease(&TaskqState->mutex);
}

/* Take a free slot for this process; FATAL when none is left. */
TaskqWorkerSlot *
taskq_attach_slot(TaskqWorkerKind kind, const char *name)
{
	TaskqWorkerSlot *slot = NULL;

	SpinLockAcquire(&TaskqState->mutex);
	for (int i = 0; i < TASKQ_MAX_SLOTS; i++)
	{
		if (TaskqState->slots[i].kind == TASKQ_SLOT_FREE)
		{
			slot = &TaskqState->slots[i];
			memset(slot, 0, sizeof(TaskqWorkerSlot));
			slot->kind = kind;
			slot->state = TASKQ_STATE_STARTING;
			slot->pid = MyProcPid;
			strlcpy(slot->name, name, NAMEDATALEN);
			slot->latch = &MyProc->procLatch;
			slot->since = GetCurrentTimestamp();
			break;
		}
	}
	SpinLockRelease(&TaskqState->mutex);

	if (slot == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("no free taskq worker slot")));
	on_shmem_exit(taskq_detach_slot, PointerGetDatum(slot));
	return slot;
}

void
taskq_set_slot_state(TaskqWorkerSlot *slot, TaskqWorkerState state, int64 job_id)
{
	SpinLockAcquire(&TaskqState->mutex);
	if (slot->state != state || slot->job_id != job_id)
		slot->since = GetCurrentTimestamp();
	slot->state = state;
	slot->job_id = job_id;
	SpinLockRelease(&TaskqState->mutex);
}

/* Set the latch of every executor. */
void
taskq_wake_executors(void)
{
	Latch	   *latches[TASKQ_MAX_SLOTS];
	int			n = 0;

	if (taskq_state() == NULL)
		return;
	SpinLockAcquire(&TaskqState->mutex);
	for (int i = 0; i < TASKQ_MAX_SLOTS; i++)
		if (TaskqState->slots[i].kind == TASKQ_SLOT_EXECUTOR)
		{
			TaskqState->slots[i].wake_requested = true;
			latches[n++] = TaskqState->slots[i].latch;
		}
	SpinLockRelease(&TaskqState->mutex);
	for (int i = 0; i < n; i++)
		SetLatch(latches[i]);
}

/*
 * Wake one idle executor for newly runnable jobs: waking them all made every
 * one of them claim, and all but one find nothing.  The woken one is marked
 * claiming at once, so the next wake-up goes to another.  With none idle,
 * every executor's latch is set: one of them may be on its way to sleep
 * after a claim that could not see the new jobs yet, and must not sleep.
 * An executor that claims a full batch wakes the next one itself.
 */
void
taskq_wake_one_executor(void)
{
	Latch	   *idle = NULL;
	TimestampTz now = GetCurrentTimestamp();

	if (taskq_state() == NULL)
		return;
	SpinLockAcquire(&TaskqState->mutex);
	for (int i = 0; i < TASKQ_MAX_SLOTS; i++)
	{
		TaskqWorkerSlot *slot = &TaskqState->slots[i];

		if (slot->kind == TASKQ_SLOT_EXECUTOR && slot->state == TASKQ_STATE_IDLE)
		{
			slot->state = TASKQ_STATE_CLAIMING;
			slot->since = now;
			slot->wake_requested = true;
			idle = slot->latch;
			break;
		}
	}
	SpinLockRelease(&TaskqState->mutex);
	if (idle != NULL)
		SetLatch(idle);
	else
		taskq_wake_executors();
}

/*
 * Was this executor asked to look for work since it last asked?  Clears the
 * request.  A latch is also set by signals (every SIGALRM of a timeout, even
 * one already disabled), and an executor woken that way goes back to sleep
 * instead of claiming for nothing.
 */
bool
taskq_take_wake_request(TaskqWorkerSlot *slot)
{
	bool		requested;

	SpinLockAcquire(&TaskqState->mutex);
	requested = slot->wake_requested;
	slot->wake_requested = false;
	SpinLockRelease(&TaskqState->mutex);
	return requested;
}

/* Set the latch of the executors that are waiting for capacity. */
void
taskq_wake_capacity_waiters(void)
{
	Latch	   *latches[TASKQ_MAX_SLOTS];
	int			n = 0;

	SpinLockAcquire(&TaskqState->mutex);
	for (int i = 0; i < TASKQ_MAX_SLOTS; i++)
	{
		TaskqWorkerSlot *slot = &TaskqState->slots[i];

		if (slot->kind == TASKQ_SLOT_EXECUTOR && slot->wants_capacity)
		{
			slot->wants_capacity = false;
			slot->wake_requested = true;
			latches[n++] = slot->latch;
		}
	}
	SpinLockRelease(&TaskqState->mutex);
	for (int i = 0; i < n; i++)
		SetLatch(latches[i]);
}

/*
 * Reserve everything that is free for this slot (on top of what it holds).
 * Returns false, reserving nothing, when no CPU unit is free.
 */
bool
taskq_reserve_all_free(TaskqWorkerSlot *slot, int *cpu, int *memory)
{
	bool		ok;

	SpinLockAcquire(&TaskqState->mutex);
	*cpu = taskq_max_cpu_units - TaskqState->cpu_used;
	*memory = taskq_max_memory_mb - TaskqState->memory_used;
	ok = *cpu > 0 && *memory >= 0;
	if (ok)
	{
		TaskqState->cpu_used += *cpu;
		TaskqState->memory_used += *memory;
		slot->cpu_held += *cpu;
		slot->memory_held += *memory;
	}
	else
		*cpu = *memory = 0;
	slot->wants_capacity = !ok;
	SpinLockRelease(&TaskqState->mutex);
	return ok;
}

/* Shrink this slot's holding to cpu/memory (never grows it). */
void
taskq_keep_reserved(TaskqWorkerSlot *slot, int cpu, int memory)
{
	bool		released;

	SpinLockAcquire(&TaskqState->mutex);
	cpu = Min(cpu, slot->cpu_held);
	memory = Min(memory, slot->memory_held);
	released = cpu < slot->cpu_held || memory < slot->memory_held;
	TaskqState->cpu_used -= slot->cpu_held - cpu;
	TaskqState->memory_used -= slot->memory_held - memory;
	slot->cpu_held = cpu;
	slot->memory_held = memory;
	SpinLockRelease(&TaskqState->mutex);

	/* capacity came free: an executor that found none may now fit a job */
	if (released)
		taskq_wake_capacity_waiters();
}

void
taskq_release_all(TaskqWorkerSlot *slot)
{
	taskq_keep_reserved(slot, 0, 0);
}

/*
 * Flag a job held by an executor for cancellation; true if the executor
 * holds it in a batch.  No signal is sent: the executor polls the flag of
 * the job it runs (executor.c), so a request can only ever stop that job,
 * never the one the executor has moved on to.  The ids are scanned under
 * the spinlock: at most two batches of TASKQ_MAX_BATCH, and cancels are rare.
 */
PG_FUNCTION_INFO_V1(taskq_request_cancel);
Datum
taskq_request_cancel(PG_FUNCTION_ARGS)
{
	int64		job_id = PG_GETARG_INT64(0);
	char	   *worker = text_to_cstring(PG_GETARG_TEXT_PP(1));
	bool		found = false;

	if (taskq_state() == NULL)
		PG_RETURN_BOOL(false);

	SpinLockAcquire(&TaskqState->mutex);
	for (int i = 0; i < TASKQ_MAX_SLOTS && !found; i++)
	{
		TaskqWorkerSlot *slot = &TaskqState->slots[i];

		if (slot->kind != TASKQ_SLOT_EXECUTOR || strcmp(slot->name, worker) != 0)
			continue;
		for (int b = 0; b < 2 && !found; b++)
		{
			TaskqHeldBatch *held = &TaskqState->held[i][b];

			for (int k = 0; k < held->n; k++)
				if (held->ids[k] == job_id)
				{
					held->cancel[k] = true;
					found = true;
					break;
				}
		}
		break;
	}
	SpinLockRelease(&TaskqState->mutex);
	PG_RETURN_BOOL(found);
}

/*
 * taskq._cancel_held(job_id) → integer: flag the job for cancel in whichever
 * executor's batch holds it, committed claim or not.  1: flagged (the
 * executor skips or interrupts it and records the cancel); 2: its handler
 * already succeeded in the batch, whose commit records that; 3: the batch's
 * outcomes are decided and being recorded (no handler runs: its commit
 * comes at once); 0: not held.  Never waits.
 */
PG_FUNCTION_INFO_V1(taskq_cancel_held);
Datum
taskq_cancel_held(PG_FUNCTION_ARGS)
{
	int64		job_id = PG_GETARG_INT64(0);
	int			found = 0;

	if (taskq_state() == NULL)
		PG_RETURN_INT32(0);

	/* one held batch at a time under the spinlock: each holds it briefly */
	for (int i = 0; i < TASKQ_MAX_SLOTS * 2 && found == 0; i++)
	{
		TaskqHeldBatch *held = &TaskqState->held[i / 2][i % 2];

		SpinLockAcquire(&TaskqState->mutex);
		if (TaskqState->slots[i / 2].kind == TASKQ_SLOT_EXECUTOR)
			for (int k = 0; k < held->n; k++)
				if (held->ids[k] == job_id)
				{
					if (held->done[k] == TASKQ_HELD_SUCCEEDED)
						found = 2;
					else if (held->done[k] == TASKQ_HELD_RECORDING)
						found = 3;
					else
					{
						held->cancel[k] = true;
						found = 1;
					}
					break;
				}
		SpinLockRelease(&TaskqState->mutex);
	}
	PG_RETURN_INT32(found);
}
