#!/usr/bin/env python3
"""Accuracy of a queue's rate limit (issue 23) under concurrent claimers.

Configures queue bench_rate with --rate jobs/s and --burst, fills it with
more jobs than the run can take, and lets --claimers external workers claim
from it as fast as they can for --seconds.  Then reads the claim times
(started_at) back and reports the jobs claimed against the bound a token
bucket promises (burst + rate x elapsed), the achieved rate, and the most
jobs claimed in any window of one second.

    python3 bench/rate_accuracy.py --dsn 'dbname=postgres' --rate 1000 --seconds 60

Needs taskq installed in the database, psycopg 3 and a superuser (or
taskq_admin member) connection; the queue and its jobs are removed after.
"""
import argparse
import threading
import time

import psycopg


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", default="dbname=postgres")
    ap.add_argument("--rate", type=float, default=100.0, help="jobs per second")
    ap.add_argument("--burst", type=int, default=None, help="default: one second's worth")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--claimers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=100, help="max_jobs per claim")
    a = ap.parse_args()
    burst = a.burst if a.burst is not None else max(1, int(-(-a.rate // 1)))
    jobs = int(burst + a.rate * a.seconds * 1.2) + 100

    with psycopg.connect(a.dsn, autocommit=True) as c:
        c.execute("SELECT taskq.configure_queue('bench_rate', rate_limit => %s, rate_burst => %s)",
                  (f"{a.rate}/s", burst))
        c.execute("""SELECT count(*) FROM taskq.submit_many(
                         (SELECT jsonb_agg(jsonb_build_object('job_type', 'bench_rate', 'queue', 'bench_rate'))
                            FROM generate_series(1, %s)))""", (jobs,))
        # the bucket starts empty (asking makes it): let it fill to its burst first
        c.execute("SELECT taskq.claim_retry_after(ARRAY['bench_rate'])")
        time.sleep(burst / a.rate + 0.05)

    stop = time.monotonic() + a.seconds
    claims = [0] * a.claimers
    throttled = [0] * a.claimers

    def claimer(i):
        with psycopg.connect(a.dsn, autocommit=True) as c:
            while time.monotonic() < stop:
                n = c.execute("SELECT count(*) FROM taskq.claim(ARRAY['bench_rate'], %s, %s, '1 hour')",
                              (f"bench-{i}", a.batch)).fetchone()[0]
                claims[i] += 1
                if n < a.batch:
                    throttled[i] += 1
                    wait = c.execute("SELECT extract(epoch FROM taskq.claim_retry_after(ARRAY['bench_rate']))"
                                     ).fetchone()[0]
                    time.sleep(min(float(wait or 0), 0.05))

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(a.claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    with psycopg.connect(a.dsn, autocommit=True) as c:
        n, first, last = c.execute("""SELECT count(*), min(started_at), max(started_at) FROM taskq.jobs
                                       WHERE queue = 'bench_rate' AND started_at IS NOT NULL""").fetchone()
        span = (last - first).total_seconds() if n else 0.0
        # most jobs claimed in any window [t, t + 1 s) starting at a claim
        peak = c.execute("""SELECT coalesce(max(w), 0) FROM (
                                SELECT count(*) OVER (ORDER BY started_at
                                                      RANGE BETWEEN CURRENT ROW AND interval '999999 microseconds'
                                                      FOLLOWING) AS w
                                  FROM taskq.jobs WHERE queue = 'bench_rate' AND started_at IS NOT NULL) s""").fetchone()[0]
        c.execute("DELETE FROM taskq.job_logs WHERE job_id IN (SELECT id FROM taskq.jobs WHERE queue = 'bench_rate')")
        c.execute("DELETE FROM taskq.jobs WHERE queue = 'bench_rate'")
        c.execute("DELETE FROM taskq.queues WHERE name = 'bench_rate'")

    bound = burst + a.rate * span
    print(f"rate {a.rate:g}/s burst {burst}, {a.claimers} claimers, {a.seconds:g} s: "
          f"{sum(claims)} claims ({sum(throttled)} throttled)")
    print(f"claimed {n} jobs over {span:.3f} s; bound burst + rate x span = {bound:.0f} "
          f"({'within' if n <= bound else 'ABOVE'} the bound)")
    if span > 0:
        print(f"achieved {(n - burst) / span:.2f} jobs/s after the burst = "
              f"{100 * (n - burst) / span / a.rate:.2f} % of the limit")
    print(f"most jobs in any 1 s window: {peak} (limit allows {burst + a.rate:.0f})")


if __name__ == "__main__":
    main()
