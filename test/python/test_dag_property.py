#!/usr/bin/env python3
"""Randomized property test of the DAG API.

Several sessions (threads, each with its own connection) perform thousands of
random operations on one graph of jobs in a queue of this test's own:

  submit / submit_many with random parents, add_dependency between random
  jobs (cycles are expected and rejected), cancel, claim + complete or
  claim + fail(retryable => false) of handler-less jobs, retry of failed
  jobs; jobs of a type with an in-database handler run (or fail) on the
  executors meanwhile.

After every operation the invariants are checked around the jobs it touched,
every CHECK_EVERY operations over the whole graph, and at the end, after
quiescing and draining the graph (failures healed and retried, every job
worked), once more together with liveness:

  * the graph is acyclic (Kahn's algorithm on each snapshot; a recursive SQL
    check at the end);
  * no job starts before all its parents succeeded: every start of an
    attempt (the job's started_at, a failed attempt's log row) comes after
    the finished_at of each parent it had then, which has succeeded;
    a running, succeeded or failed job has only succeeded parents;
  * a live job is blocked iff it has a parent that has not succeeded, and
    unfinished_parents is the number of such parents;
  * no live job has a cancelled parent;
  * a failed or cancelled job's last log row has its status (history records
    what went wrong);
  * in-database effects happen once per success, never for a failed attempt;
  * at the end every job has succeeded or was cancelled, through its own
    cancel or one of an ancestor.

Each check reads one snapshot (one statement, or one REPEATABLE READ
transaction).  Errors other than the documented SQLSTATEs (22023 cycle,
55000 wrong state, P0002 gone, 40001/40P01 serialization/deadlock, retried)
fail the test.

Seeded: DAG_SEED (default below) seeds every session's generator; the seed is
printed.  The interleaving of the sessions is up to the scheduler, so a seed
fixes the operations each session attempts, not their outcome.  DAG_OPS and
DAG_SESSIONS change the size.  Connection settings come from the environment
(PGDATABASE, ...); taskq's executors must run in that database.
"""

import os
import sys

import testenv  # noqa: F401  (first: psycopg from the system python3)
import psycopg

import collections
import random
import threading
import time

from psycopg import sql
from psycopg.types.json import Jsonb

SEED = int(os.environ.get("DAG_SEED", "20240617"))
N_OPS = int(os.environ.get("DAG_OPS", "3000"))
N_SESSIONS = int(os.environ.get("DAG_SESSIONS", "4"))
CHECK_EVERY = 100            # full-graph check every this many operations (per session)
TIME_LIMIT = 110.0           # seconds for the whole test
OPS_DEADLINE = 75.0          # the random operations must be done by then

tag = f"{os.getpid()}_{random.SystemRandom().randrange(1 << 30):x}"
QUEUE = f"dagprop_{tag}"
EXT = f"dagprop_ext_{tag}"   # no handler: worked by the sessions themselves
AUTO = f"dagprop_auto_{tag}"  # in-database handler, run by the executors
EDGES = f"dagprop_edges_{tag}"      # when each edge was added (same transaction)
EFFECTS = f"dagprop_effects_{tag}"  # one row per successful handler run
HEAL = f"dagprop_heal_{tag}"        # once it has a row, failing jobs succeed
HANDLER = f"dagprop_handler_{tag}"

RETRYABLE_STATES = {"40001", "40P01"}
START = time.monotonic()
failures = []
fail_lock = threading.Lock()


def say(msg):
    print(f"[{time.monotonic() - START:6.1f}s] {msg}", flush=True)


def fail(msg):
    with fail_lock:
        failures.append(msg)
    print(f"  FAILED: {msg}", flush=True)


def check(cond, msg):
    if cond:
        print(f"  ok: {msg}", flush=True)
    else:
        fail(msg)
    return cond


def connect():
    return psycopg.connect("", autocommit=True)


class Expected(Exception):
    """A documented error: the operation was refused, the graph is unchanged."""

    def __init__(self, sqlstate):
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


# ---------------------------------------------------------------- invariants

def q_ident(name):
    return sql.Identifier(name)


# One statement, one snapshot: every violation among the jobs of the queue
# (or only around the ids given), as (kind, job id, detail).
VIOLATIONS = sql.SQL("""
WITH j AS (
    SELECT id, status, unfinished_parents FROM taskq.jobs
    WHERE queue = %(q)s
      AND (%(ids)s::bigint[] IS NULL OR id = ANY (%(ids)s::bigint[])
           OR id IN (SELECT d.job_id FROM taskq.job_dependencies d WHERE d.depends_on = ANY (%(ids)s::bigint[])))
), e AS (
    SELECT d.job_id, d.depends_on, p.status AS parent_status
    FROM taskq.job_dependencies d JOIN j ON j.id = d.job_id
    JOIN taskq.jobs p ON p.id = d.depends_on
), pc AS (
    SELECT job_id, count(*) FILTER (WHERE parent_status <> 'succeeded') AS open,
           count(*) FILTER (WHERE parent_status = 'cancelled') AS cancelled
    FROM e GROUP BY job_id
)
SELECT 'blocked iff a parent has not succeeded', j.id,
       format('status %%s, unfinished_parents %%s, parents not succeeded %%s',
              j.status, j.unfinished_parents, coalesce(pc.open, 0))
FROM j LEFT JOIN pc ON pc.job_id = j.id
WHERE j.status IN ('blocked', 'pending', 'running')
  AND ((j.status = 'blocked') <> (coalesce(pc.open, 0) > 0)
       OR j.unfinished_parents <> coalesce(pc.open, 0))
UNION ALL
SELECT 'started with a parent not succeeded', j.id,
       format('status %%s, parents not succeeded %%s', j.status, pc.open)
FROM j JOIN pc ON pc.job_id = j.id
WHERE j.status IN ('running', 'succeeded', 'failed') AND pc.open > 0
UNION ALL
SELECT 'live job with a cancelled parent', j.id, format('status %%s', j.status)
FROM j JOIN pc ON pc.job_id = j.id
WHERE j.status IN ('blocked', 'pending', 'running') AND pc.cancelled > 0
UNION ALL
SELECT 'failed or cancelled without its log row', j.id,
       format('status %%s, last log %%s', j.status, l.status)
FROM j LEFT JOIN LATERAL (
    SELECT l.status FROM taskq.job_logs l WHERE l.job_id = j.id ORDER BY l.id DESC LIMIT 1) l ON true
WHERE j.status IN ('failed', 'cancelled') AND l.status IS DISTINCT FROM j.status
UNION ALL
SELECT 'ran before a parent succeeded', r.job_id,
       format('attempt started at %%s; parent %%s (edge added %%s) is %%s, finished at %%s',
              r.started, x.depends_on, x.added_at, p.status, p.finished_at)
FROM (-- every attempt's start: the job row has its last, a failed attempt's log row its own
      SELECT jj.id AS job_id, jj.started_at AS started FROM taskq.jobs jj JOIN j ON j.id = jj.id
       WHERE jj.started_at IS NOT NULL
      UNION ALL
      SELECT l.job_id, (l.details->>'started_at')::timestamptz FROM taskq.job_logs l
        JOIN j ON j.id = l.job_id WHERE l.details ? 'started_at') r
JOIN {edges} x ON x.job_id = r.job_id AND x.added_at < r.started
JOIN taskq.jobs p ON p.id = x.depends_on
WHERE NOT (p.status = 'succeeded' AND p.finished_at <= r.started)
UNION ALL
SELECT 'effects differ from successes', j.id,
       format('status %%s, effects %%s', j.status, f.n)
FROM j JOIN taskq.jobs jj ON jj.id = j.id AND jj.job_type = %(auto)s
CROSS JOIN LATERAL (SELECT count(*) AS n FROM {effects} f WHERE f.job_id = j.id) f
WHERE f.n <> CASE WHEN j.status = 'succeeded' THEN 1 ELSE 0 END
  AND j.status <> 'running'
UNION ALL
SELECT 'edge without a record of when it was added', d.job_id, format('parent %%s', d.depends_on)
FROM taskq.job_dependencies d JOIN j ON j.id = d.job_id
WHERE NOT EXISTS (SELECT 1 FROM {edges} x WHERE x.job_id = d.job_id AND x.depends_on = d.depends_on)
""").format(edges=q_ident(EDGES), effects=q_ident(EFFECTS))


def violations(conn, ids=None):
    return conn.execute(VIOLATIONS, {"q": QUEUE, "ids": ids, "auto": AUTO}).fetchall()


def find_cycle(edges):
    """Kahn's algorithm; returns the nodes left on a cycle (empty if acyclic)."""
    children = collections.defaultdict(list)
    indeg = collections.Counter()
    nodes = set()
    for child, parent in edges:
        children[parent].append(child)
        indeg[child] += 1
        nodes.update((child, parent))
    ready = [n for n in nodes if indeg[n] == 0]
    seen = 0
    while ready:
        n = ready.pop()
        seen += 1
        for c in children[n]:
            indeg[c] -= 1
            if indeg[c] == 0:
                ready.append(c)
    return sorted(n for n in nodes if indeg[n] > 0)


def full_check(conn, where):
    """Every invariant over the whole graph, in one REPEATABLE READ snapshot."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        bad = violations(conn)
        edges = conn.execute("SELECT job_id, depends_on FROM taskq.job_dependencies").fetchall()
    cycle = find_cycle(edges)
    for kind, job, detail in bad[:10]:
        fail(f"{where}: {kind}: job {job}: {detail}")
    if cycle:
        fail(f"{where}: the dependency graph has a cycle through jobs {cycle[:20]}")
    return not bad and not cycle


# ---------------------------------------------------------------- sessions

class Session(threading.Thread):
    def __init__(self, index, n_ops, shared):
        super().__init__(name=f"session-{index}")
        self.index = index
        self.n_ops = n_ops
        self.shared = shared
        self.rng = random.Random(SEED * 1000 + index)
        self.worker = f"dagprop-{tag}-{index}"
        self.stats = collections.Counter()
        self.error = None
        self.conn = None

    # -- helpers

    def call(self, fn, *allowed):
        """Run fn(conn); documented errors in allowed raise Expected, class 40
        errors are retried, anything else fails the test."""
        for attempt in range(10):
            try:
                return fn(self.conn)
            except psycopg.Error as e:
                state = e.sqlstate
                if state in RETRYABLE_STATES:
                    self.stats[f"retried {state}"] += 1
                    time.sleep(0.01 * (attempt + 1))
                    continue
                if state in allowed:
                    if state == "22023" and "would create a cycle" not in (e.diag.message_primary or ""):
                        raise AssertionError(f"unexpected 22023: {e.diag.message_primary}")
                    raise Expected(state)
                raise AssertionError(f"unexpected error {state}: {e.diag.message_primary or e}")
        raise AssertionError("still a serialization failure or deadlock after 10 tries")

    def some_jobs(self, k):
        jobs = self.shared["jobs"]
        with self.shared["lock"]:
            n = len(jobs)
            if n == 0:
                return []
            # mostly recent jobs (still live), sometimes any
            pool = jobs[-200:] if self.rng.random() < 0.8 else jobs
            return self.rng.sample(pool, min(k, len(pool)))

    def add_jobs(self, ids):
        with self.shared["lock"]:
            self.shared["jobs"].extend(ids)

    def job_spec(self):
        if self.rng.random() < 0.4:
            return AUTO, {"fail": self.rng.random() < 0.2}
        return EXT, {}

    # -- operations

    def op_submit(self):
        parents = self.some_jobs(self.rng.choice([0, 0, 1, 1, 2, 3]))
        job_type, payload = self.job_spec()

        def go(conn):
            with conn.transaction():
                jid = conn.execute(
                    "SELECT taskq.submit(%s, %s::jsonb, queue => %s, depends_on => %s::bigint[], "
                    "max_attempts => 1)",
                    (job_type, Jsonb(payload), QUEUE, parents)).fetchone()[0]
                conn.execute(sql.SQL("INSERT INTO {} (job_id, depends_on, added_at) "
                                     "SELECT %s, p, '-infinity' FROM unnest(%s::bigint[]) p "
                                     "ON CONFLICT DO NOTHING").format(q_ident(EDGES)),
                             (jid, parents))
            return jid
        jid = self.call(go, "55000")
        self.add_jobs([jid])
        return [jid]

    def op_submit_many(self):
        n = self.rng.randint(2, 4)
        specs = []
        for i in range(n):
            job_type, payload = self.job_spec()
            spec = {"job_type": job_type, "payload": payload, "queue": QUEUE, "max_attempts": 1}
            if i > 0 and self.rng.random() < 0.6:
                spec["after"] = self.rng.sample(range(i), self.rng.randint(1, i))
            if self.rng.random() < 0.3:
                spec["depends_on"] = self.some_jobs(self.rng.randint(1, 2))
            specs.append(spec)

        def go(conn):
            with conn.transaction():
                ids = [r[0] for r in conn.execute("SELECT * FROM taskq.submit_many(%s::jsonb)",
                                                  (Jsonb(specs),))]
                for jid, spec in zip(ids, specs):
                    parents = list(spec.get("depends_on", [])) + [ids[k] for k in spec.get("after", [])]
                    conn.execute(sql.SQL("INSERT INTO {} (job_id, depends_on, added_at) "
                                         "SELECT %s, p, '-infinity' FROM unnest(%s::bigint[]) p "
                                         "ON CONFLICT DO NOTHING").format(q_ident(EDGES)),
                                 (jid, parents))
            return ids
        ids = self.call(go, "55000")
        self.add_jobs(ids)
        return ids

    def op_link(self):
        if self.rng.random() < 0.3:
            # make a job depend on one of its own descendants: a cycle
            row = self.call(lambda conn: conn.execute(
                """WITH RECURSIVE s AS (
                       SELECT id FROM taskq.jobs WHERE queue = %s AND status IN ('blocked', 'pending')
                       ORDER BY random() LIMIT 1
                   ), down(id, depth) AS (
                       SELECT id, 0 FROM s
                     UNION ALL
                       SELECT d.job_id, down.depth + 1
                       FROM down JOIN taskq.job_dependencies d ON d.depends_on = down.id
                       WHERE down.depth < 4
                   )
                   SELECT (SELECT id FROM s), id FROM down
                   WHERE depth > 0 AND id <> (SELECT id FROM s) ORDER BY random() LIMIT 1""",
                (QUEUE,)).fetchone())
            pair = list(row) if row else self.some_jobs(2)
        else:
            pair = self.some_jobs(2)
        if len(pair) < 2:
            return []
        child, parent = pair

        def go(conn):
            with conn.transaction():
                conn.execute("SELECT taskq.add_dependency(%s, %s)", (child, parent))
                conn.execute(sql.SQL("INSERT INTO {} (job_id, depends_on, added_at) "
                                     "VALUES (%s, %s, clock_timestamp()) "
                                     "ON CONFLICT DO NOTHING").format(q_ident(EDGES)),
                             (child, parent))
        self.call(go, "22023", "55000")
        return [child, parent]

    def op_cancel(self):
        job = self.some_jobs(1)
        if not job:
            return []
        self.call(lambda conn: conn.execute("SELECT taskq.cancel(%s)", (job[0],)), "55000")
        with self.shared["lock"]:
            self.shared["cancelled"].add(job[0])
        return job

    def op_work(self):
        n = self.rng.randint(1, 3)
        claimed = self.call(lambda conn: [r[0] for r in conn.execute(
            "SELECT id FROM taskq.claim(ARRAY[%s], %s, %s, '10 minutes')",
            (QUEUE, self.worker, n))])
        for jid in claimed:
            if self.rng.random() < 0.8:
                f = lambda conn: conn.execute("SELECT taskq.complete(%s, '{}', %s)", (jid, self.worker))
            else:
                f = lambda conn: conn.execute("SELECT taskq.fail(%s, 'random failure', false, %s)",
                                              (jid, self.worker))
            try:
                # 55000: the job was cancelled while this session held it
                self.call(f, "55000")
            except Expected as e:
                self.stats[f"expected {e.sqlstate}"] += 1
        return claimed

    def op_retry(self):
        row = self.call(lambda conn: conn.execute(
            "SELECT id FROM taskq.jobs WHERE queue = %s AND status = 'failed' "
            "ORDER BY random() LIMIT 1", (QUEUE,)).fetchone())
        if row is None:
            return []
        self.call(lambda conn: conn.execute("SELECT taskq.retry(%s)", (row[0],)), "55000")
        return [row[0]]

    OPS = [("submit", 30), ("submit_many", 8), ("link", 22), ("cancel", 5), ("work", 25), ("retry", 10)]

    def run(self):
        try:
            self.conn = connect()
            names = [n for n, _ in self.OPS]
            weights = [w for _, w in self.OPS]
            for i in range(self.n_ops):
                if time.monotonic() - START > OPS_DEADLINE:
                    raise AssertionError(f"operations not done after {OPS_DEADLINE:.0f} s")
                if failures:
                    return
                name = self.rng.choices(names, weights)[0]
                try:
                    touched = getattr(self, "op_" + name)()
                    self.stats[name] += 1
                except Expected as e:
                    self.stats[f"{name} refused {e.sqlstate}"] += 1
                    touched = []
                if touched:
                    bad = violations(self.conn, touched)
                    for kind, job, detail in bad[:10]:
                        fail(f"after {name} by {self.name}: {kind}: job {job}: {detail}")
                if (i + 1) % CHECK_EVERY == 0:
                    full_check(self.conn, f"{self.name} after {i + 1} operations")
                    self.stats["full checks"] += 1
        except Exception as e:  # noqa: BLE001 - reported as a test failure
            self.error = e
            fail(f"{self.name}: {type(e).__name__}: {e}")
        finally:
            if self.conn is not None:
                self.conn.close()


# ---------------------------------------------------------------- quiesce, drain

def drain(conn, deadline):
    """Heal the failing handler, then retry failed jobs and work external jobs
    until every job has succeeded or was cancelled."""
    conn.execute(sql.SQL("INSERT INTO {} VALUES (true)").format(q_ident(HEAL)))
    worker = f"dagprop-{tag}-drain"
    while True:
        left = conn.execute(
            "SELECT count(*) FILTER (WHERE status IN ('blocked', 'pending', 'running', 'failed')),"
            "       count(*) FILTER (WHERE status = 'failed') FROM taskq.jobs WHERE queue = %s",
            (QUEUE,)).fetchone()
        if left[0] == 0:
            return True
        if time.monotonic() > deadline:
            say(f"drain: {left[0]} jobs still unfinished")
            return False
        for (jid,) in conn.execute("SELECT id FROM taskq.jobs WHERE queue = %s AND status = 'failed'",
                                   (QUEUE,)).fetchall():
            conn.execute("SELECT taskq.retry(%s)", (jid,))
        for (jid,) in conn.execute("SELECT id FROM taskq.claim(ARRAY[%s], %s, 100, '10 minutes')",
                                   (QUEUE, worker)).fetchall():
            conn.execute("SELECT taskq.complete(%s, '{}', %s)", (jid, worker))
        time.sleep(0.05)


def final_checks(conn, cancelled):
    check(full_check(conn, "final"), "every invariant holds over the final graph")
    # The recursive check of the whole table: a path from a job back to itself.
    cyc = conn.execute("""
        WITH RECURSIVE depth(id, d) AS (
            SELECT DISTINCT d.job_id, 1 FROM taskq.job_dependencies d
          UNION
            SELECT c.job_id, depth.d + 1
            FROM depth JOIN taskq.job_dependencies c ON c.depends_on = depth.id
            WHERE depth.d <= (SELECT count(*) FROM taskq.job_dependencies)
        )
        SELECT count(*) FROM depth WHERE d > (SELECT count(*) FROM taskq.job_dependencies)
    """).fetchone()[0]
    check(cyc == 0, "recursive SQL check: no path in taskq.job_dependencies is longer than its "
                    "edge count (acyclic)")
    counts = dict(conn.execute("SELECT status::text, count(*) FROM taskq.jobs WHERE queue = %s "
                               "GROUP BY status", (QUEUE,)).fetchall())
    say(f"final statuses: {counts}")
    check(set(counts) <= {"succeeded", "cancelled"},
          "after draining, every job succeeded or was cancelled")
    orphans = conn.execute("""
        WITH RECURSIVE down(id) AS (
            SELECT unnest(%s::bigint[])
          UNION
            SELECT d.job_id FROM down JOIN taskq.job_dependencies d ON d.depends_on = down.id
        )
        SELECT count(*) FROM taskq.jobs j
        WHERE j.queue = %s AND j.status = 'cancelled' AND j.id NOT IN (SELECT id FROM down)
    """, (sorted(cancelled), QUEUE)).fetchone()[0]
    check(orphans == 0, "every cancelled job was cancelled itself or descends from one that was")
    n_auto = conn.execute("SELECT count(*) FROM taskq.jobs WHERE queue = %s AND job_type = %s "
                          "AND status = 'succeeded'", (QUEUE, AUTO)).fetchone()[0]
    say(f"{n_auto} in-database jobs succeeded")


# ---------------------------------------------------------------- main

def setup(conn):
    conn.execute(sql.SQL("CREATE TABLE {} (job_id bigint, depends_on bigint, added_at timestamptz NOT NULL,"
                         " PRIMARY KEY (job_id, depends_on))").format(q_ident(EDGES)))
    conn.execute(sql.SQL("CREATE TABLE {} (job_id bigint NOT NULL)").format(q_ident(EFFECTS)))
    conn.execute(sql.SQL("CREATE TABLE {} (healed boolean)").format(q_ident(HEAL)))
    conn.execute(sql.SQL("""
        CREATE FUNCTION {handler}(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {effects} VALUES (taskq.current_job_id());
            IF (payload->>'fail')::boolean AND NOT EXISTS (SELECT 1 FROM {heal}) THEN
                RAISE EXCEPTION 'planned failure';
            END IF;
            RETURN '{{}}';
        END $$""").format(handler=q_ident(HANDLER), effects=q_ident(EFFECTS), heal=q_ident(HEAL)))
    conn.execute("SELECT taskq.register_handler(%s, %s::regprocedure)", (AUTO, f"{HANDLER}(jsonb)"))


def cleanup(conn, keep_jobs):
    conn.execute("SELECT taskq.unregister_handler(%s)", (AUTO,))
    if not keep_jobs:
        conn.execute("DELETE FROM taskq.job_logs WHERE job_id IN "
                     "(SELECT id FROM taskq.jobs WHERE queue = %s)", (QUEUE,))
        conn.execute("DELETE FROM taskq.jobs WHERE queue = %s", (QUEUE,))
    for t in (EDGES, EFFECTS, HEAL):
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(q_ident(t)))
    conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}(jsonb)").format(q_ident(HANDLER)))


def main():
    say(f"DAG property test: seed {SEED} (DAG_SEED), {N_OPS} operations over "
        f"{N_SESSIONS} sessions, queue {QUEUE}")
    conn = connect()
    setup(conn)
    shared = {"lock": threading.Lock(), "jobs": [], "cancelled": set()}
    try:
        per = [N_OPS // N_SESSIONS + (1 if i < N_OPS % N_SESSIONS else 0) for i in range(N_SESSIONS)]
        sessions = [Session(i, n, shared) for i, n in enumerate(per)]
        for s in sessions:
            s.start()
        for s in sessions:
            s.join(max(1.0, START + TIME_LIMIT - time.monotonic()))
            if s.is_alive():
                fail(f"{s.name} did not finish in time")
        total = collections.Counter()
        for s in sessions:
            total.update(s.stats)
        say("operations: " + ", ".join(f"{k} {v}" for k, v in sorted(total.items())))
        n_edges = conn.execute("SELECT count(*) FROM taskq.job_dependencies d JOIN taskq.jobs j "
                               "ON j.id = d.job_id WHERE j.queue = %s", (QUEUE,)).fetchone()[0]
        say(f"{len(shared['jobs'])} jobs, {n_edges} edges")
        check(not any(s.error for s in sessions), "every session ran without an unexpected error")
        check(sum(total[n] for n, _ in Session.OPS) + sum(v for k, v in total.items() if "refused" in k)
              >= N_OPS, f"all {N_OPS} operations were performed")
        check(total["link refused 22023"] > 0, "some add_dependency calls were refused as cycles")
        check(total["link"] > 0 and total["work"] > 0 and total["retry"] > 0 and total["cancel"] > 0,
              "every kind of operation succeeded at least once")
        if not failures:
            check(full_check(conn, "after the operations"), "invariants hold once the sessions stop")
            ok = drain(conn, START + TIME_LIMIT - 10)
            check(ok, "the graph drains: healed failures retried, every runnable job worked")
            final_checks(conn, shared["cancelled"])
    except Exception as e:  # noqa: BLE001
        fail(f"{type(e).__name__}: {e}")
    finally:
        try:
            cleanup(conn, keep_jobs=bool(failures))
        finally:
            conn.close()
    say(f"{'FAILED' if failures else 'passed'}: {len(failures)} failure(s) (seed {SEED})")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
