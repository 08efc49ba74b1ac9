"""What every Python test starts with: psycopg (Debian's python3-psycopg
belongs to the system interpreter, so re-run under it when another python3
came first in PATH) and the reference client importable: the source in
clients/python, or, with TASKQ_WORKER_INSTALLED set, only the package
installed in the running interpreter.  Import it before psycopg."""
import os
import sys

try:
    import psycopg  # noqa: F401
except ImportError:
    if os.path.exists("/usr/bin/python3") and sys.executable != "/usr/bin/python3":
        os.execv("/usr/bin/python3", ["/usr/bin/python3", *sys.argv])
    raise

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if os.environ.get("TASKQ_WORKER_INSTALLED"):
    # the installed package under test, never the source tree
    import taskq_worker

    if os.path.abspath(taskq_worker.__file__).startswith(REPO + os.sep):
        raise SystemExit("taskq_worker was imported from the source tree, not the installed package")
else:
    sys.path.insert(0, os.path.join(REPO, "clients", "python"))
