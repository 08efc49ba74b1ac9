#!/usr/bin/env python3
"""A runnable taskq worker with two job types.

    python3 example.py "dbname=app"          # then, in psql:
    SELECT taskq.submit('resize_image', '{"path": "a.png", "width": 640}', queue => 'media');
    SELECT taskq.submit('word_count', '{"text": "to be or not to be"}', queue => 'media');
    SELECT status, result, last_error FROM taskq.jobs ORDER BY id DESC LIMIT 2;

Stop it with Ctrl-C or SIGTERM: it finishes the jobs it is running, then exits.
"""

import collections
import logging
import sys
import time

from taskq_worker import Permanent, Worker

conninfo = sys.argv[1] if len(sys.argv) > 1 else ""
worker = Worker(conninfo, queues=["media"], name="example", concurrency=4, lease=30)


@worker.handler("resize_image")
def resize_image(payload, job):
    width = payload.get("width")
    if not isinstance(width, int) or width <= 0:
        # retrying cannot fix a bad payload: dead-letter it at once
        raise Permanent(f"width must be a positive integer, got {width!r}")
    time.sleep(0.5)  # the work; the worker heartbeats the lease meanwhile
    return {"path": payload["path"], "width": width, "attempt": job.attempt}


@worker.handler("word_count")
def word_count(payload, job):
    words = payload["text"].split()  # a KeyError is retried, then dead-lettered
    return {"words": len(words), "top": collections.Counter(words).most_common(3)}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    worker.run()
