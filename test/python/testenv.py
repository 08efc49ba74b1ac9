"""What every Python test starts with: psycopg (Debian's python3-psycopg
belongs to the system interpreter, so re-run under it when another python3
came first in PATH) and the reference client, clients/python, importable.
Import it before psycopg."""
import os
import sys

try:
    import psycopg  # noqa: F401
except ImportError:
    if os.path.exists("/usr/bin/python3") and sys.executable != "/usr/bin/python3":
        os.execv("/usr/bin/python3", ["/usr/bin/python3", *sys.argv])
    raise

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "clients", "python"))
