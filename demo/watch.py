#!/usr/bin/env python3
"""Live view of the taskq demo: one line per job status transition.

Listens on channel taskq_jobs, where taskq publishes every transition as
{"id","status","queue","job_type","attempt"} when its transaction commits,
and adds the job's priority and the logged reason from taskq.jobs and
taskq.job_logs.  Connects with the usual PG* environment variables.

    watch.py [--ready FILE]

Touches FILE once it is listening, and exits on NOTIFY taskq_demo, 'done'.
"""
import argparse
import json
import sys
import time
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

COLORS = {"blocked": "90", "pending": "36", "running": "33",
          "succeeded": "32", "failed": "31", "cancelled": "35"}

DETAILS = """
SELECT j.priority::text, j.cpu_units,
       (SELECT string_agg(key || '=' || value, ' ') FROM jsonb_each_text(j.payload)
         WHERE key <> 'day') AS args,
       extract(epoch FROM j.run_at - clock_timestamp())::float8 AS due_in,
       (SELECT string_agg('#' || d.depends_on, ',' ORDER BY d.depends_on)
          FROM taskq.job_dependencies d WHERE d.job_id = j.id) AS parents,
       l.message, l.error,
       extract(epoch FROM l.logged_at - (SELECT max(p.logged_at) FROM taskq.job_logs p
                                          WHERE p.job_id = j.id AND p.id < l.id))::float8 AS waited
FROM taskq.jobs j
LEFT JOIN LATERAL (SELECT id, logged_at, message, error FROM taskq.job_logs
                   WHERE job_id = j.id AND status = %(status)s::taskq.job_status
                     AND attempt = %(attempt)s
                   ORDER BY id DESC LIMIT 1) l ON true
WHERE j.id = %(id)s
"""


def paint(text, status, width):
    """Pad text to width, colored by status when writing to a terminal."""
    padded = text.ljust(width)
    if sys.stdout.isatty() and status in COLORS:
        return f"\033[{COLORS[status]}m{padded}\033[0m"
    return padded


def note(ev, d):
    """Why the job is in its new state, in a few words."""
    status, msg = ev["status"], d["message"] or ""
    if status == "blocked":
        return f"waits for {d['parents']}"
    if status == "pending":
        if d["error"]:
            text = f"attempt {ev['attempt']} failed: {d['error']}"
        else:
            text = msg
        if d["due_in"] > 0.05:
            text += f"; runs in {d['due_in']:.1f}s"
        if d["cpu_units"] > 1:
            text += f"; needs {d['cpu_units']} cpu units"
        return text
    if status == "running":
        text = msg.replace("claimed by executor/", "on executor pid ").split(".")[0]
        if d["waited"] and d["waited"] > 0.05:
            text += f", after {d['waited']:.2f}s in the queue"
        if d["cpu_units"] > 1:
            text += f", holding {d['cpu_units']} cpu units"
        return text
    if status == "failed":
        return f"dead-lettered: {d['error']}"
    return msg


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ready", help="file to create once listening")
    args = ap.parse_args()

    listen = psycopg.connect(autocommit=True, application_name="taskq demo watch")
    lookup = psycopg.connect(autocommit=True, application_name="taskq demo watch",
                             row_factory=dict_row)
    listen.execute("LISTEN taskq_jobs")
    listen.execute("LISTEN taskq_demo")
    if args.ready:
        open(args.ready, "w").close()

    print(f"{'time':<12} {'+s':>6}  {'job':>4}  {'type':<20} {'args':<16} "
          f"{'priority':<8}  {'status':<10} {'try':>3}  note")
    start = None
    for n in listen.notifies():
        if n.channel == "taskq_demo":
            break
        ev = json.loads(n.payload)
        now = time.time()
        start = start or now
        d = lookup.execute(DETAILS, ev).fetchone()
        if d is None:           # deleted meanwhile
            continue
        print(f"{datetime.fromtimestamp(now).strftime('%H:%M:%S.%f')[:12]} "
              f"{now - start:6.2f}  {ev['id']:>4}  {ev['job_type']:<20} "
              f"{(d['args'] or '')[:16]:<16} {d['priority']:<8}  "
              f"{paint(ev['status'], ev['status'], 10)} {ev['attempt']:>3}  {note(ev, d)}",
              flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
    except psycopg.OperationalError as e:
        sys.exit(f"watch.py: lost the connection: {e}")
