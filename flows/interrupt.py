"""The one line a `unirain` command prints when Ctrl-C stops it: what finished, how to resume.

Read from the run folder itself (stage state files, the latest checkpoint), never from Prefect:
after an interrupt its API may already be gone. Everything a command writes is renamed into place,
so rerunning the same command resumes where the finished work ends.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path


def finished_work(run: str | Path | None) -> str:
    """`ingest, caption done; checkpoint at iteration 40` (or '' when nothing is recorded)."""
    if not run:
        return ""
    root = Path(run)
    parts = []
    if (root / "run.json").is_file():
        try:
            from data_manifests import RunLayout
            from tasks.stage import stage_status

            done = [s["stage"] for s in stage_status(RunLayout.at(root)) if s["status"] == "done"]
            parts.append(f"stages done: {', '.join(done)}" if done else "no stage finished")
        except Exception:  # noqa: BLE001 - a half-written run must not hide the interrupt line
            pass
    try:
        latest = json.loads((root / "checkpoints" / "latest.json").read_text())
        parts.append(f"checkpoint at iteration {int(latest['iteration'])}")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return "; ".join(parts)


def interrupted_line(args, argv: list[str]) -> str:
    from .run_guard import written_run

    run = written_run(args) or getattr(args, "run", None)
    done = finished_work(run)
    again = "unirain " + " ".join(shlex.quote(a) for a in argv)
    return (f"unirain {args.command}: interrupted" + (f" ({done})" if done else "")
            + f"; rerun `{again}` to resume")


HARD_EXIT_S = 3.0  # after this, exit_now leaves whatever is still running


def exit_now(code: int) -> None:
    """After Ctrl-C: what a normal exit runs first (threads' exit hooks: Prefect drains its log and
    event workers; then the atexit handlers: Prefect stops its server), then leave without the
    interpreter's teardown of torch & co., measured at 3.5 s of a 5 s exit on 2 busy cores."""
    import atexit
    import os
    import threading
    import time

    def give_up() -> None:  # a worker thread deep in a long model call must not hold the exit
        time.sleep(HARD_EXIT_S)
        stop_embedded_server(grace=0.0)
        os._exit(code)

    threading.Thread(target=give_up, name="exit-deadline", daemon=True).start()
    getattr(threading, "_shutdown", lambda: None)()  # joins non-daemon threads, runs their exit hooks
    stop_embedded_server()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def stop_embedded_server(grace: float = 1.0) -> None:
    """Stop Prefect's embedded API server now: SIGTERM, and SIGKILL after `grace` s. Prefect's own
    stop waits 5 s, and a server still migrating its database (Ctrl-C during its start-up) ignores
    SIGTERM until done. Its SQLite database survives a kill (atomic commits)."""
    import subprocess

    module = sys.modules.get("prefect.server.api.server")
    servers = getattr(getattr(module, "SubprocessASGIServer", None), "_instances", {})
    for server in list(servers.values()):
        proc = getattr(server, "server_process", None)
        if proc is None or proc.poll() is not None:
            continue
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

