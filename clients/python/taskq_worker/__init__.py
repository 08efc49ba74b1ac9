"""taskq reference external worker (psycopg 3).

An external worker runs jobs whose job_type has no in-database handler:

    claim -> run the handler -> complete (or fail), heartbeating while it runs.

Claims take up to max_batch jobs at once; successes are recorded in batches
(taskq.complete_many) by one thread: a batch goes when it is full
(complete_batch), when its oldest success has waited complete_delay, and on
shutdown.  Failures are recorded one by one, at once.

    from taskq_worker import Worker, Permanent

    worker = Worker("dbname=app", queues=["mail"], concurrency=8)

    @worker.handler("send_mail")
    def send_mail(payload, job):
        ...                     # raise Permanent("...") for a non-retryable failure
        return {"sent": True}   # stored as the job's result (JSON)

    worker.run()                # blocks until SIGTERM/SIGINT or worker.stop()

Delivery is at least once: a job whose worker dies is retried by another worker
after its lease expires, so handlers should be idempotent.  See README.md for
the protocol, which any language can implement.
"""

import json
import logging
import os
import queue
import secrets
import select
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import psycopg

__all__ = ["Worker", "Job", "Permanent", "FENCING_SQLSTATES", "__version__"]

__version__ = "0.2.0"

log = logging.getLogger("taskq_worker")

Seconds = Union[int, float, timedelta]

# SQLSTATEs of complete/fail/heartbeat meaning "this worker no longer holds the
# job" (not running, held by another worker, lease expired / job not visible).
FENCING_SQLSTATES = frozenset({"55000", "P0002"})

CLAIM_SQL = """
SELECT id, queue, job_type, priority::text, payload, attempts, max_attempts,
       timeout, lease_expires_at
FROM taskq.claim(%s::text[], %s, %s, %s)
"""

COMPLETE_MANY_SQL = "SELECT taskq.complete_many(%s::bigint[], %s::jsonb[], %s)"

# Most jobs taskq.complete_many takes in one call.
MAX_COMPLETE_BATCH = 10000

# Cap on the error text stored in taskq.jobs.last_error.
MAX_ERROR_CHARS = 4000


class Permanent(Exception):
    """Raised by a handler for a failure that retrying cannot fix: the job is
    failed with retryable = false and goes straight to the dead-letter queue."""


@dataclass
class Job:
    """A claimed job, as passed to handlers."""

    id: int
    queue: str
    job_type: str
    priority: str
    payload: Dict[str, Any]
    attempt: int
    max_attempts: int
    timeout: Optional[timedelta]
    lease_expires_at: datetime
    worker: str
    claimed_at: float = field(default_factory=time.monotonic, repr=False)
    # When the handler started (monotonic; None while the job waits in the
    # local queue, see prefetch): its timeout counts from here.
    started_at: Optional[float] = field(default=None, repr=False)
    # Set when the worker lost the job (lease expired, cancelled, timed out):
    # a long handler may check it and give up early; its result is discarded.
    lost: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _done: bool = field(default=False, repr=False)


def _seconds(value: Seconds, what: str) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{what} must be a positive number of seconds or a timedelta, got {value!r}")
    return float(value)


def _sqlstate(exc: BaseException) -> Optional[str]:
    return getattr(exc, "sqlstate", None)


def _transient(exc: BaseException) -> bool:
    """Connection trouble or a serialization/deadlock failure: worth retrying."""
    state = _sqlstate(exc) or ""
    return isinstance(exc, psycopg.OperationalError) or state.startswith("40")


class _Connection:
    """One lazily (re)opened autocommit connection, used by a single thread."""

    def __init__(self, conninfo: str, kwargs: Dict[str, Any]):
        self.conninfo = conninfo
        self.kwargs = kwargs
        self.conn: Optional[psycopg.Connection] = None

    def get(self) -> psycopg.Connection:
        if self.conn is not None and (self.conn.closed or self.conn.broken):
            self.close()
        if self.conn is None:
            self.conn = psycopg.connect(self.conninfo, autocommit=True, **self.kwargs)
        return self.conn

    def execute(self, sql: str, params: Iterable[Any] = ()) -> List[tuple]:
        try:
            cur = self.get().execute(sql, params)
            return cur.fetchall() if cur.description is not None else []
        except psycopg.OperationalError:
            self.close()
            raise

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # already broken: nothing to release
                pass
            self.conn = None


class Worker:
    """A taskq external worker: see the module docstring.

    conninfo       libpq connection string (or URI) of the taskq database
    queues         queue names to serve; None serves every queue
    name           optional prefix; the full name is [name:]host:pid:random,
                   unique per Worker object (it fences completions)
    concurrency    jobs run side by side, one thread each
    lease          seconds (or timedelta) a claim lasts without a heartbeat
    heartbeat      seconds between lease extensions (default lease / 3)
    poll_interval  seconds between claims when no notification arrives
    max_batch      most jobs taken by one claim (default concurrency + prefetch)
    listen         LISTEN on taskq.work_channel() to claim new work at once; use False
                   behind a transaction-pooling pooler (polling only)
    prefetch       jobs claimed beyond concurrency, waiting in a local queue
                   (their leases are heartbeated meanwhile); a claim is made
                   when the local queue is at most half full.  Default 0
    complete_batch most successes recorded by one taskq.complete_many call
                   (default 100); 1 records each with taskq.complete from the
                   job's thread as soon as it finishes
    complete_delay seconds (or timedelta) a success may wait for a fuller
                   batch (default 0.01; must be shorter than heartbeat)
    """

    def __init__(self, conninfo: str, queues: Optional[Iterable[str]] = None,
                 name: Optional[str] = None, concurrency: int = 4, lease: Seconds = 30,
                 heartbeat: Optional[Seconds] = None, poll_interval: Seconds = 5,
                 max_batch: Optional[int] = None, listen: bool = True, prefetch: int = 0,
                 complete_batch: int = 100, complete_delay: Seconds = 0.01):
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
        if not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0:
            raise ValueError(f"prefetch must be a non-negative integer, got {prefetch!r}")
        if (not isinstance(complete_batch, int) or isinstance(complete_batch, bool)
                or not 1 <= complete_batch <= MAX_COMPLETE_BATCH):
            raise ValueError(f"complete_batch must be an integer from 1 to {MAX_COMPLETE_BATCH}, "
                             f"got {complete_batch!r}")
        if max_batch is not None and (not isinstance(max_batch, int) or max_batch < 1):
            raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
        if isinstance(queues, str):
            raise ValueError("queues must be a list of queue names, not a string")
        self.conninfo = conninfo
        self.queues = None if queues is None else list(queues)
        if self.queues is not None and not self.queues:
            raise ValueError("queues must not be empty (use None for every queue)")
        self.concurrency = concurrency
        self.lease = _seconds(lease, "lease")
        self.heartbeat_interval = (self.lease / 3 if heartbeat is None
                                   else _seconds(heartbeat, "heartbeat"))
        if self.heartbeat_interval >= self.lease:
            raise ValueError("heartbeat must be shorter than the lease")
        self.poll_interval = _seconds(poll_interval, "poll_interval")
        self.prefetch = prefetch
        self.max_batch = max_batch or concurrency + prefetch
        self.complete_batch = complete_batch
        self.complete_delay = _seconds(complete_delay, "complete_delay")
        if self.complete_delay >= self.heartbeat_interval:
            # a buffered success must be recorded long before its lease needs a heartbeat
            raise ValueError("complete_delay must be shorter than heartbeat")
        self.listen = listen
        host = socket.gethostname().split(".")[0]
        unique = f"{host}:{os.getpid()}:{secrets.token_hex(4)}"
        self.name = f"{name}:{unique}" if name else unique

        self._handlers: Dict[str, Callable[[Dict[str, Any], Job], Any]] = {}
        self._running: Dict[int, Job] = {}
        # reentrant: the signal handler takes it in the main thread, which may hold it
        self._running_lock = threading.RLock()
        self._stopping = threading.Event()
        # successes waiting for complete_many: (job, result JSON text, monotonic time)
        self._completions: List[tuple] = []
        self._completions_cond = threading.Condition()
        self._wake_r, self._wake_w = os.pipe()
        self._wake_pending = False
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._local = threading.local()
        self._thread_conns: List[_Connection] = []
        self._conn_kwargs: Dict[str, Any] = {"application_name": f"taskq worker {self.name}"[:63]}
        if not listen:
            # transaction poolers cannot keep server-side prepared statements
            self._conn_kwargs["prepare_threshold"] = None

    # -- registration ---------------------------------------------------

    def register(self, job_type: str, fn: Callable[[Dict[str, Any], Job], Any]) -> None:
        """Run fn(payload, job) for jobs of job_type."""
        if not job_type:
            raise ValueError("job_type must not be empty")
        if not callable(fn):
            raise TypeError("handler must be callable")
        self._handlers[job_type] = fn

    def handler(self, job_type: str):
        """Decorator form of register()."""
        def decorate(fn):
            self.register(job_type, fn)
            return fn
        return decorate

    # -- control --------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; run() returns once the running jobs are finished.  Thread-safe."""
        self._stopping.set()
        self._wake()

    @property
    def running_jobs(self) -> int:
        with self._running_lock:
            return len(self._running)

    def _wake(self) -> None:
        with self._running_lock:
            # one byte in the pipe wakes the claim loop; it clears the flag
            # after it has emptied the pipe, then looks at what changed
            if self._wake_w >= 0 and not self._wake_pending:
                self._wake_pending = True
                try:
                    os.write(self._wake_w, b"x")
                except BlockingIOError:  # pipe full: a wake-up is already pending
                    pass

    def _on_signal(self, signum, _frame) -> None:
        if self._stopping.is_set():
            log.warning("worker %s: second signal, exiting now; its running jobs are "
                        "retried after their lease expires", self.name)
            os._exit(128 + signum)
        log.info("worker %s: %s received, finishing %d running job(s)",
                 self.name, signal.Signals(signum).name, self.running_jobs)
        self.stop()

    # -- main loop ------------------------------------------------------

    def run(self) -> None:
        """Claim and run jobs until stop() or, in the main thread, SIGTERM/SIGINT."""
        if not self._handlers:
            raise RuntimeError("no handlers registered")
        if self._wake_r < 0:
            raise RuntimeError("a Worker runs only once")
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._on_signal)
        log.info("worker %s: serving queues %s, job types %s", self.name,
                 "(all)" if self.queues is None else ",".join(self.queues),
                 ",".join(sorted(self._handlers)))
        # concurrency threads take claimed jobs from a local queue (no future
        # per job: for short jobs that cost as much as the job)
        local_queue: "queue.SimpleQueue[Optional[Job]]" = queue.SimpleQueue()
        job_threads = [threading.Thread(target=self._job_thread, args=(local_queue,),
                                        name=f"taskq-job_{i}", daemon=True)
                       for i in range(self.concurrency)]
        for t in job_threads:
            t.start()
        beat_stop = threading.Event()
        beater = threading.Thread(target=self._heartbeat_loop, args=(beat_stop,),
                                  name="taskq-heartbeat", daemon=True)
        beater.start()
        completer_stop = threading.Event()
        completer = threading.Thread(target=self._complete_loop, args=(completer_stop,),
                                     name="taskq-complete", daemon=True)
        completer.start()
        claimer = _Connection(self.conninfo, self._conn_kwargs)
        listener = _Connection(self.conninfo, self._conn_kwargs)
        try:
            self._loop(local_queue, claimer, listener)
        finally:
            self._stopping.set()
            # Graceful: running jobs finish and are recorded; heartbeats go on meanwhile.
            for _ in job_threads:
                local_queue.put(None)   # after every job already queued
            for t in job_threads:
                t.join()
            # then the buffered successes, while their leases are still heartbeat-fresh
            completer_stop.set()
            with self._completions_cond:
                self._completions_cond.notify_all()
            completer.join()
            beat_stop.set()
            beater.join()
            claimer.close()
            listener.close()
            for conn in self._thread_conns:
                conn.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            with self._running_lock:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1
            log.info("worker %s: stopped", self.name)

    def _loop(self, local_queue: "queue.SimpleQueue[Optional[Job]]", claimer: "_Connection",
              listener: "_Connection") -> None:
        maybe_more = True          # a claim may find work right now
        next_poll = 0.0            # claim by then even without news (monotonic)
        claim_backoff = _Backoff()
        listen_backoff = _Backoff()
        listening = False
        while not self._stopping.is_set():
            if self.listen and not listening and time.monotonic() >= listen_backoff.ready_at:
                try:
                    # the role's own channel name (any role may LISTEN on any
                    # channel, so taskq names each so only its role knows it)
                    channel = listener.execute("SELECT taskq.work_channel()")[0][0]
                    listener.execute(f'LISTEN "{channel}"')
                except psycopg.Error as e:
                    if not _transient(e):
                        raise
                    log.warning("worker %s: LISTEN failed, retrying in %.1fs: %s",
                                self.name, listen_backoff.failed(), e)
                else:
                    listening = True
                    listen_backoff.reset()
                    maybe_more = True  # work may have been announced while deaf

            free = self._room()
            now = time.monotonic()
            if free > 0 and (maybe_more or now >= next_poll) and now >= claim_backoff.ready_at:
                asked = min(free, self.max_batch)
                try:
                    jobs = self._claim(claimer, asked)
                except psycopg.Error as e:
                    if not _transient(e):
                        raise
                    log.warning("worker %s: claim failed, retrying in %.1fs: %s",
                                self.name, claim_backoff.failed(), e)
                    maybe_more = True
                else:
                    claim_backoff.reset()
                    next_poll = time.monotonic() + self.poll_interval
                    maybe_more = len(jobs) == asked  # a full batch: there may be more
                    for job in jobs:
                        with self._running_lock:
                            self._running[job.id] = job
                        local_queue.put(job)
                    if maybe_more and free > len(jobs):
                        continue

            # Sleep until a notification, a finished job, stop() or a deadline.
            deadlines = []
            if self._room() > 0:
                deadlines.append(max(claim_backoff.ready_at, 0.0 if maybe_more else next_poll))
            if self.listen and not listening:
                deadlines.append(listen_backoff.ready_at)
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            waiting = [self._wake_r] + ([listener.conn.fileno()] if listening else [])
            ready, _, _ = select.select(waiting, [], [], timeout)
            if self._wake_r in ready:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                # after the read: a wake-up asked from now on writes again
                with self._running_lock:
                    self._wake_pending = False
            if listening and any(fd != self._wake_r for fd in ready):
                try:
                    if self._drain_notifications(listener.conn):
                        maybe_more = True
                except psycopg.Error as e:
                    log.warning("worker %s: lost the LISTEN connection: %s", self.name, e)
                    listener.close()
                    listening = False

    def _local_queue_over_half(self, held: int) -> bool:
        """With held jobs running or waiting, is the local queue over half full?
        The claim loop claims nothing then (and sleeps)."""
        return held - self.concurrency > self.prefetch // 2

    def _room(self) -> int:
        """How many jobs to claim now: free threads and local-queue places, none
        while the local queue is over half full or successes pile up unrecorded."""
        with self._running_lock:
            held = len(self._running)
        with self._completions_cond:
            unrecorded = len(self._completions)
        if self._local_queue_over_half(held):
            return 0
        return max(0, self.concurrency + self.prefetch - held
                   - max(0, unrecorded - self.complete_batch))

    def _drain_notifications(self, conn: psycopg.Connection) -> bool:
        """Read the pending notifications; true if one announces work in a
        queue this worker serves (the work channel's payload is the queue's name)."""
        pgconn = conn.pgconn
        pgconn.consume_input()
        relevant = False
        while True:
            n = pgconn.notifies()
            if n is None:
                return relevant
            if self.queues is None or n.extra.decode() in self.queues:
                relevant = True

    def _claim(self, claimer: "_Connection", n: int) -> List[Job]:
        rows = claimer.execute(CLAIM_SQL, (self.queues, self.name, n,
                                           timedelta(seconds=self.lease)))
        now = time.monotonic()
        jobs = [Job(id=r[0], queue=r[1], job_type=r[2], priority=r[3], payload=r[4],
                    attempt=r[5], max_attempts=r[6], timeout=r[7], lease_expires_at=r[8],
                    worker=self.name, claimed_at=now) for r in rows]
        if jobs:
            log.debug("worker %s: claimed %s", self.name, [j.id for j in jobs])
        return jobs

    # -- running one job ------------------------------------------------

    def _thread_conn(self) -> "_Connection":
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _Connection(self.conninfo, self._conn_kwargs)
            with self._running_lock:
                self._thread_conns.append(conn)
        return conn

    def _job_thread(self, local_queue: "queue.SimpleQueue[Optional[Job]]") -> None:
        """Run the jobs of the local queue, one at a time, until a None."""
        while True:
            job = local_queue.get()
            if job is None:
                return
            self._execute(job)

    def _execute(self, job: Job) -> None:
        """Run one job in a job thread and record its outcome."""
        try:
            job.started_at = time.monotonic()
            fn = self._handlers.get(job.job_type)
            if fn is None:
                # claim cannot filter by job type: let a worker that knows it retry
                self._finish(job, "fail", f"worker {self.name} has no handler for job type "
                                          f"\"{job.job_type}\"", True)
                return
            try:
                result = fn(job.payload, job)
            except Permanent as e:
                self._finish(job, "fail", str(e) or "permanent failure", False)
                return
            except BaseException as e:  # sys.exit() in a handler ends its job, not its thread
                self._finish(job, "fail", _describe(e), True)
                return
            try:
                text = None if result is None else json.dumps(result, allow_nan=False)
            except (TypeError, ValueError) as e:
                # the handler's bug: retrying would produce the same result
                self._finish(job, "fail", f"handler result is not JSON: {e}", False)
                return
            if self.complete_batch > 1:
                self._buffer_completion(job, text)
            else:
                self._finish(job, "complete", text)
        except BaseException:  # a bug here must not kill the job thread
            log.exception("worker %s: job %d: unexpected error", self.name, job.id)
        finally:
            with self._running_lock:
                self._running.pop(job.id, None)
                held = len(self._running)
            # waking the claim loop for every job cost more than the jobs
            if not self._local_queue_over_half(held):
                self._wake()

    def _finish(self, job: Job, action: str, value: Optional[str], retryable: bool = True) -> None:
        """complete or fail job; a job this worker no longer holds is left alone."""
        with job._lock:  # the heartbeat thread skips the job meanwhile
            job._done = True
            if job.lost.is_set():
                log.warning("worker %s: job %d was lost while running; its outcome is "
                            "discarded", self.name, job.id)
                return
            self._record(self._thread_conn(), job, action, value, retryable)

    def _record(self, conn: "_Connection", job: Job, action: str, value: Optional[str],
                retryable: bool = True) -> None:
        """One taskq.complete or taskq.fail call, retried on connection trouble."""
        if action == "complete":
            sql = "SELECT taskq.complete(%s, %s::jsonb, %s)"
            params = (job.id, value, self.name)
        else:
            sql = "SELECT taskq.fail(%s, %s, %s, %s)"
            params = (job.id, (value or "")[:MAX_ERROR_CHARS], retryable, self.name)
        for attempt in range(4):
            try:
                conn.execute(sql, params)
                if action == "fail":
                    log.info("worker %s: job %d (%s) failed%s: %s", self.name, job.id,
                             job.job_type, "" if retryable else " permanently",
                             (value or "").splitlines()[0] if value else "")
                return
            except psycopg.Error as e:
                if _sqlstate(e) in FENCING_SQLSTATES:
                    job.lost.set()
                    log.warning("worker %s: job %d no longer held, outcome discarded: %s",
                                self.name, job.id, e)
                    return
                if not _transient(e) or attempt == 3:
                    if action == "complete" and not _transient(e):
                        # e.g. a result the server refuses: record why instead
                        action, sql = "fail", "SELECT taskq.fail(%s, %s, %s, %s)"
                        params = (job.id, f"could not record the result: {e}"[:MAX_ERROR_CHARS],
                                  False, self.name)
                        continue
                    log.error("worker %s: could not %s job %d (it is retried after its "
                              "lease expires): %s", self.name, action, job.id, e)
                    return
                time.sleep(0.25 * 2 ** attempt)

    # -- batched completions --------------------------------------------

    def _buffer_completion(self, job: Job, text: Optional[str]) -> None:
        """Queue a success for the completer thread (complete_many)."""
        with job._lock:
            job._done = True
            if job.lost.is_set():
                log.warning("worker %s: job %d was lost while running; its outcome is "
                            "discarded", self.name, job.id)
                return
        with self._completions_cond:
            self._completions.append((job, text, time.monotonic()))
            # the completer waits for a first success, then for a full batch
            # or the first one's complete_delay
            if len(self._completions) in (1, self.complete_batch):
                self._completions_cond.notify()

    def _complete_loop(self, stop: threading.Event) -> None:
        """Record buffered successes: a batch when full, when its oldest has
        waited complete_delay, or at stop (after the job threads are done)."""
        conn = _Connection(self.conninfo, self._conn_kwargs)
        cond = self._completions_cond
        try:
            while True:
                with cond:
                    while True:
                        buf = self._completions
                        if buf and (len(buf) >= self.complete_batch or stop.is_set()
                                    or time.monotonic() >= buf[0][2] + self.complete_delay):
                            break
                        if stop.is_set():
                            return
                        cond.wait(buf[0][2] + self.complete_delay - time.monotonic()
                                  if buf else None)
                    batch = buf[:self.complete_batch]
                    del buf[:self.complete_batch]
                self._complete_many(conn, batch)
                self._wake()  # the claim loop may have held back for unrecorded successes
        except Exception:
            log.exception("worker %s: completion thread failed; unrecorded jobs are retried "
                          "after their lease expires", self.name)
            raise
        finally:
            conn.close()

    def _complete_many(self, conn: "_Connection", batch: List[tuple]) -> None:
        """Record a batch with one taskq.complete_many; if the server refuses it
        (a job no longer held, a result it rejects), job by job instead."""
        ids = [job.id for job, _, _ in batch]
        results = [text for _, text, _ in batch]
        for attempt in range(4):
            try:
                conn.execute(COMPLETE_MANY_SQL, (ids, results, self.name))
                log.debug("worker %s: completed %s", self.name, ids)
                return
            except psycopg.Error as e:
                if _sqlstate(e) in FENCING_SQLSTATES or not _transient(e):
                    # all or nothing: find the culprit(s) by completing one at a time
                    log.info("worker %s: batch of %d completions refused (%s); recording "
                             "them one by one", self.name, len(ids), e)
                    break
                if attempt == 3:
                    log.error("worker %s: could not complete jobs %s (they are retried after "
                              "their lease expires): %s", self.name, ids, e)
                    return
                time.sleep(0.25 * 2 ** attempt)
        for job, text, _ in batch:
            self._record(conn, job, "complete", text)

    # -- heartbeats -----------------------------------------------------

    def _heartbeat_loop(self, stop: threading.Event) -> None:
        """Extend the leases of running jobs; fail those past their timeout."""
        conn = _Connection(self.conninfo, self._conn_kwargs)
        lease = timedelta(seconds=self.lease)
        try:
            while not stop.wait(self.heartbeat_interval):
                with self._running_lock:
                    jobs = list(self._running.values())
                for job in jobs:
                    if stop.is_set():
                        break
                    if not job._lock.acquire(blocking=False):
                        continue  # being completed right now
                    try:
                        if job._done or job.lost.is_set():
                            continue
                        limit = job.timeout.total_seconds() if job.timeout else None
                        if (limit is not None and job.started_at is not None
                                and time.monotonic() - job.started_at > limit):
                            job.lost.set()
                            msg = f"timed out after {limit:g} s"
                            conn.execute("SELECT taskq.fail(%s, %s, true, %s)",
                                         (job.id, msg, self.name))
                            log.warning("worker %s: job %d %s", self.name, job.id, msg)
                            continue
                        job.lease_expires_at = conn.execute(
                            "SELECT taskq.heartbeat(%s, %s, %s)", (job.id, self.name, lease))[0][0]
                    except psycopg.Error as e:
                        if _sqlstate(e) in FENCING_SQLSTATES:
                            job.lost.set()
                            log.warning("worker %s: job %d lost: %s", self.name, job.id, e)
                        else:
                            log.warning("worker %s: heartbeat of job %d failed: %s",
                                        self.name, job.id, e)
                    finally:
                        job._lock.release()
        except Exception:
            log.exception("worker %s: heartbeat thread failed", self.name)
            raise
        finally:
            conn.close()


class _Backoff:
    """Exponential delay between retries of a failing call, 0.5 s to 30 s."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.ready_at = 0.0

    def failed(self) -> float:
        self.delay = min(max(self.delay * 2, 0.5), 30.0)
        self.ready_at = time.monotonic() + self.delay
        return self.delay

    def reset(self) -> None:
        self.delay = 0.0
        self.ready_at = 0.0


def _describe(exc: BaseException) -> str:
    """The error text stored in last_error: the message, then the traceback."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    text = f"{type(exc).__name__}: {exc}\n\n{tb}"
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS // 2] + "\n...\n" + text[-MAX_ERROR_CHARS // 2:]
    return text
