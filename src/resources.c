/*
 * resources.c: the CPU-unit and memory-MB capacity of in-database execution,
 * accounted in shared memory.
 *
 * An executor first reserves all capacity that is free, claims jobs that fit
 * in it, then keeps only what its batch needs.  Every change happens under
 * TaskqState->mutex, so the sum held never exceeds taskq.max_cpu_units /
 * taskq.max_memory_mb, not even for a moment.
 */
#include "postgres.h"

#include "taskq.h"

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
