/*
 * taskq.h: declarations shared by taskq's C files.
 */
#ifndef TASKQ_H
#define TASKQ_H

#include "postgres.h"

#include "compat.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#define TASKQ_MAX_EXECUTORS 64
#define TASKQ_MAX_DATABASES 32		/* entries of taskq.databases served */
#define TASKQ_MAX_SLOTS (TASKQ_MAX_EXECUTORS + 1)
#define TASKQ_MAX_BATCH 1000		/* most jobs of one batch (taskq.batch_size) */
/* a cancelled (or stopped) handler that has not ended by then ends its executor */
#define TASKQ_CANCEL_ESCALATE_MS 2000

typedef enum TaskqWorkerKind
{
	TASKQ_SLOT_FREE = 0,
	TASKQ_SLOT_LAUNCHER,
	TASKQ_SLOT_EXECUTOR
} TaskqWorkerKind;

typedef enum TaskqWorkerState
{
	TASKQ_STATE_STARTING = 0,
	TASKQ_STATE_IDLE,
	TASKQ_STATE_CLAIMING,
	TASKQ_STATE_RUNNING,
	TASKQ_STATE_MAINTAINING,
	TASKQ_STATE_WAITING,		/* for the extension or for promotion */
	TASKQ_STATE_STOPPING
} TaskqWorkerState;

/* One live launcher or executor; guarded by TaskqShared->mutex. */
typedef struct TaskqWorkerSlot
{
	TaskqWorkerKind kind;
	TaskqWorkerState state;
	pid_t		pid;
	char		name[NAMEDATALEN];	/* worker name in taskq.jobs.worker */
	Latch	   *latch;
	int64		job_id;			/* job being executed, 0 if none */
	TimestampTz since;			/* when state or job last changed */
	int64		jobs_done;
	int			cpu_held;		/* capacity this executor holds */
	int			memory_held;
	bool		wants_capacity; /* found none free; wake it on release */
	bool		wake_requested; /* its latch was set for work, not by a signal */
	bool		retiring;		/* the launcher asked it to stop (surplus) */
} TaskqWorkerSlot;

/*
 * The jobs of a batch an executor holds, claimed or running (its claim may
 * not be committed), so that taskq.cancel() can flag any of them without
 * waiting for the batch's row locks.  An executor uses area 0; area 1 is
 * kept for the layout.  An array is filled while its n is 0 and published
 * by setting n; guarded by TaskqShared->mutex.  The executor polls the flag
 * of its running job; "done" says a cancel comes too late: the job's
 * handler succeeded in the batch (TASKQ_HELD_SUCCEEDED), or every outcome
 * of the batch is decided and being recorded (TASKQ_HELD_RECORDING).
 */
#define TASKQ_HELD_SUCCEEDED 1
#define TASKQ_HELD_RECORDING 2
typedef struct TaskqHeldBatch
{
	int			n;
	int64		ids[TASKQ_MAX_BATCH];
	bool		cancel[TASKQ_MAX_BATCH];
	uint8		done[TASKQ_MAX_BATCH];
} TaskqHeldBatch;

/* counter values at one moment; the launcher keeps ~16 minutes of them */
#define TASKQ_RATE_SAMPLES 100
#define TASKQ_RATE_SAMPLE_SECS 10

typedef struct TaskqRateSample
{
	TimestampTz at;
	uint64		claimed;
	uint64		succeeded;
	uint64		failed;
} TaskqRateSample;

/*
 * The shared state of one database in taskq.databases: its workers, their
 * capacity and counters.  Every database has its own, so the databases
 * share nothing but max_worker_processes.
 */
typedef struct TaskqShared
{
	slock_t		mutex;
	char		dbname[NAMEDATALEN];	/* as listed in taskq.databases */
	Oid			dboid;			/* set by its launcher once connected */
	bool		missing;		/* its launcher found no such database */
	bool		missing_told;	/* and said so once */
	Latch	   *waiting_latch;	/* the launcher waiting for it to be created */
	int			cpu_used;		/* sum of cpu_held over slots */
	int			memory_used;
	pg_atomic_uint64 claimed;
	pg_atomic_uint64 succeeded;
	pg_atomic_uint64 failed;
	pg_atomic_uint64 retried;	/* failed attempts that go back for another */
	int			next_sample;	/* ring position; guarded by mutex */
	bool		stop_now;		/* the database is being dropped or renamed */
	int			connect_failures;	/* launcher starts that did not connect */
	TaskqRateSample samples[TASKQ_RATE_SAMPLES];
	TaskqWorkerSlot slots[TASKQ_MAX_SLOTS];
	TaskqHeldBatch held[TASKQ_MAX_SLOTS][2];	/* by slot index */
} TaskqShared;

/* taskq.c: GUCs and shared state */
extern int	taskq_workers;
extern int	taskq_max_cpu_units;
extern int	taskq_max_memory_mb;
extern int	taskq_poll_interval_ms;
extern int	taskq_shutdown_grace_ms;
extern int	taskq_batch_size;

/* databases.c: the served databases and their shared state */
extern int	taskq_max_total_workers;
extern int	taskq_ndatabases;
extern TaskqShared *TaskqDatabases;	/* taskq_ndatabases entries */
extern TaskqShared *TaskqState; /* this process's database, or NULL */
extern void taskq_define_database_gucs(void);
extern void taskq_databases_init(void);
extern Size taskq_databases_shmem_size(void);
extern void taskq_databases_shmem_init(void);
extern int	taskq_database_index(const char *dbname);
extern const char *taskq_database_name(int index);
extern TaskqShared *taskq_state(void);
extern TaskqShared *taskq_state_of(Oid dboid);
extern void taskq_pin_state(int index);
extern int	taskq_executors_wanted(int index);
extern void taskq_wake_waiting_launchers(void);

/* worker_slots.c: worker slots, wake-ups and capacity, within this process's database */
extern TaskqWorkerSlot *taskq_attach_slot(TaskqWorkerKind kind, const char *name);
extern void taskq_set_slot_state(TaskqWorkerSlot *slot, TaskqWorkerState state, int64 job_id);
extern void taskq_wake_executors(void);
extern void taskq_wake_one_executor(void);
extern void taskq_wake_capacity_waiters(void);
extern bool taskq_take_wake_request(TaskqWorkerSlot *slot);
extern bool taskq_reserve_all_free(TaskqWorkerSlot *slot, int *cpu, int *memory);
extern void taskq_keep_reserved(TaskqWorkerSlot *slot, int cpu, int memory);
extern void taskq_release_all(TaskqWorkerSlot *slot);

/* taskq.c: kept plans, wake-up at commit */
extern SPIPlanPtr taskq_prepare_kept(const char *sql, int nargs, Oid *argtypes,
									 int cursor_options);
extern void taskq_wake_at_commit(void);

/* cron_cleanup.c: DROP EXTENSION taskq removes its pg_cron jobs */
extern void taskq_unschedule_on_drop(Node *stmt);

/* job_metrics.c: counters and histograms per queue, job type and lane */
extern Size taskq_job_metrics_shmem_size(void);
extern void taskq_job_metrics_shmem_init(void);
extern void taskq_job_metrics_at_commit(void);
extern void taskq_job_metrics_forget(void);
extern void taskq_job_metrics_at_subabort(SubTransactionId subid);

/* tenants.c: a tenant job's turn in the claim order (issue 23) */
extern TimestampTz taskq_tenant_turn(Datum tenant, TimestampTz run_at);
extern void taskq_check_job_type_allows(Datum job_type, bool has_tenant, bool has_key);

/* scan_floor.c: where claims start reading the runnable index */
extern Size taskq_scan_floors_shmem_size(void);
extern void taskq_scan_floors_shmem_request(void);
extern void taskq_scan_floors_shmem_init(void);

/* fairness.c: rate limits' token buckets */
extern Size taskq_rate_buckets_shmem_size(void);
extern void taskq_rate_buckets_shmem_request(void);
extern void taskq_rate_buckets_shmem_init(void);
extern void taskq_scan_floors_at_commit(void);
extern void taskq_scan_floors_forget(void);
extern void taskq_scan_floors_at_subabort(void);
extern bool taskq_scan_floors_noted(void);
extern void taskq_note_pending_key(Oid jobs, bool lane, Oid priority, TimestampTz run_at,
								   int64 id);

/* job_rows.c: a plain job's rows inserted without SQL */
typedef struct TaskqPlainJob
{
	Datum		queue;			/* text */
	Datum		job_type;		/* text */
	Datum		priority;		/* taskq.priority */
	Datum		payload;		/* jsonb object */
	NullableDatum max_attempts; /* int4; NULL: the queue's default, else 3 */
	NullableDatum backoff;		/* interval; NULL: taskq.backoff_base */
	NullableDatum timeout;		/* interval; NULL: the queue's default */
	Datum		cpu_units;		/* int4 */
	Datum		memory_mb;		/* int4 */
	NullableDatum run_at;		/* timestamptz; NULL: now() */
	NullableDatum concurrency_key;	/* text; NULL: none */
	NullableDatum tenant;		/* text; NULL: none */
	Oid			owner;
} TaskqPlainJob;

extern bool taskq_insert_plain_job(const TaskqPlainJob *job, int64 *id, bool *in_database);

/*
 * A job's defaults, the one table of them: C uses these, SQL reads them with
 * taskq._job_defaults().  max_attempts: unless the queue has its own
 * default_max_attempts; the backoff: taskq.backoff_base (taskq_default_backoff()).
 */
#define TASKQ_DEFAULT_QUEUE "default"
#define TASKQ_DEFAULT_PRIORITY "normal"
#define TASKQ_DEFAULT_MAX_ATTEMPTS 3
#define TASKQ_DEFAULT_CPU_UNITS 1
#define TASKQ_DEFAULT_MEMORY_MB 0
extern Datum taskq_default_backoff(void);

/* job_rows.c: the one check of a job's names (job_type, queue, concurrency_key, tenant) */
#define TASKQ_NAME_MAX_CHARS 200
extern const char *taskq_name_problem(const char *s, int len);
extern void taskq_check_name(const char *what, NullableDatum name);

/* limits.c: how big a payload and a result may be */
extern int	taskq_max_payload_size;
extern int	taskq_max_result_size;
extern void taskq_check_payload_size(Datum payload);
extern void taskq_check_result_size(Datum result, int64 job_id);

/* dag.c: taskq's private locks */
extern void taskq_lock_job_type(Datum job_type, bool exclusive);

/* database_guard.c */
extern void taskq_guard_database(Node *stmt, bool top_level);
extern void taskq_database_guard_at_commit(bool commit);

/* metrics.c */
extern void taskq_sample_counters(void);

/* jobs_vacuum.c */
extern void taskq_vacuum_jobs_if_needed(void);

/* crash_marks.c: the job a handler runs, kept for after a crash */
extern void taskq_crash_mark_open(const char *worker);
extern void taskq_crash_mark_set(int64 job_id, int32 attempts_before, TimestampTz started);
extern void taskq_crash_mark_clear(void);
extern void taskq_crash_mark_remove(void);
extern int	taskq_charge_crash_marks(void);

/* launcher.c */
extern int64 taskq_upkeep_step(const char *what, const char *sql, int nargs, Oid *argtypes,
							   Datum *args, int64 on_error);

/* executor.c / launcher.c: background worker entry points */
extern PGDLLEXPORT void TaskqLauncherMain(Datum main_arg);
extern PGDLLEXPORT void TaskqExecutorMain(Datum main_arg);
extern void taskq_register_launchers(void);

/* executor.c: the job being executed by this backend */
extern int64 taskq_current_job;
extern int32 taskq_current_job_attempt;
extern bool taskq_claim_deferred;
extern void taskq_guard_handler_utility(Node *stmt);

/* commit_flush.c: a publishing or waking transaction flushes its commit after its locks */
extern bool taskq_flush_after_notify;
extern bool taskq_wake_before_flush;

/* why a commit's flush waits until its locks are released */
typedef enum TaskqFlushReason
{
	TASKQ_FLUSH_AFTER_NOTIFY,	/* it published on taskq's channels */
	TASKQ_FLUSH_AFTER_WAKE		/* it wakes an executor */
} TaskqFlushReason;

extern void taskq_request_commit_flush(TaskqFlushReason reason);
extern void taskq_commit_flush_xact(XactEvent event);
extern void taskq_commit_flush_release(ResourceReleasePhase phase, bool isCommit,
									   bool isTopLevel);

/* publish.c: what is published, on which channel */
typedef enum TaskqNotifyLevel
{
	NOTIFY_NONE,
	NOTIFY_TERMINAL,
	NOTIFY_ALL
} TaskqNotifyLevel;

/* the two kinds of channel: transitions (JSON), and queues with claimable work */
typedef enum TaskqChannelKind
{
	TASKQ_CHANNEL_JOBS,
	TASKQ_CHANNEL_WORK,
	NUM_TASKQ_CHANNELS
} TaskqChannelKind;

#define TASKQ_JOBS_CHANNEL_PREFIX "taskq_jobs_"
#define TASKQ_WORK_CHANNEL_PREFIX "taskq_work_"

extern int	taskq_notify_level;
extern double taskq_notify_queue_limit;
extern bool taskq_publishing_now(const char *status);
extern void taskq_publish_transition(int64 id, const char *status, const char *queue,
									 const char *job_type, int attempt, bool in_database,
									 Oid owner);
extern const char *taskq_channel_name(TaskqChannelKind kind, Oid role);
extern bool taskq_is_shared_channel(TaskqChannelKind kind, const char *name);
extern Oid	taskq_job_owner(int64 id);

/* listeners.c: notifications are sent only while a session may listen */
extern void taskq_notify(int64 job_id, Oid owner, const char *payload);
extern void taskq_announce_work(int64 job_id, Oid owner, const char *queue);
extern Size taskq_listeners_shmem_size(void);
extern void taskq_listeners_shmem_init(void);
extern void taskq_listeners_xact(XactEvent event);
extern void taskq_listeners_subxact(SubXactEvent event);
extern void taskq_listeners_utility(Node *stmt);

/* schema_version.c: the schema this library needs (taskq.control's default_version) */
#define TASKQ_SCHEMA_VERSION "0.2.0"
extern bool taskq_schema_is_current(Oid ext, char **installed);
extern bool taskq_extension_ready(void);
extern void taskq_require_current_schema(void);

/* caller.c */
typedef struct TaskqActing
{
	Oid			caller;
	Oid			runs_as;
} TaskqActing;

extern Oid	taskq_caller_role(void);
extern TaskqActing taskq_start_acting(Oid caller, Oid runs_as);
extern void taskq_stop_acting(TaskqActing previous);
extern void taskq_check_handler_trusted(Oid handler);

#endif							/* TASKQ_H */
