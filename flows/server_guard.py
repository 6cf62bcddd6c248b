"""`python -m flows.server_guard PARENT_PID UVICORN_ARGS...`: Prefect's embedded API server, tied to
the process that started it.

Prefect starts its ephemeral API (uvicorn, ~265 MB) as a child process and stops it at exit; a
`kill -9` of that parent skips the stop, and the server ran on for good, once per kill. This wrapper
runs the same uvicorn command with a watchdog thread that notices the parent is gone (the child is
re-parented, so `getppid()` changes) and shuts the server down: SIGTERM to itself (uvicorn's own
graceful stop), then a hard exit if that has not finished within a few seconds. Polling the parent
pid works whichever thread started the server (a Linux parent-death signal would fire when that
*thread* ends, which can be long before the process does).
"""
from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time

POLL_S = 0.5
GRACE_S = 5.0


def watch_parent(parent: int, poll: float = POLL_S, grace: float = GRACE_S) -> None:
    while os.getppid() == parent:
        time.sleep(poll)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace)
    os._exit(0)


def main() -> None:
    parent = int(sys.argv[1])
    threading.Thread(target=watch_parent, args=(parent,), name="parent-watchdog", daemon=True).start()
    sys.argv = ["uvicorn", *sys.argv[2:]]
    runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
