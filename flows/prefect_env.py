"""Prefect's offline settings (and the process's other environment defaults), in one place.
Call before Prefect or torch is imported.

Values already in the environment win, so a user's `PREFECT_API_URL` or `PREFECT_HOME`
(a real server, a shared database) is respected.

Nothing is written here: `PREFECT_HOME` (the run's `.prefect/`) is created only when Prefect starts
its embedded API server, so a command refused for bad arguments leaves no trace. That start is
also where the server is tied to this process (`flows.server_guard`): a kill -9 of a `unirain`
command no longer leaves the server running.
"""
from __future__ import annotations

import atexit
import importlib.abc
import importlib.util
import logging
import os
import sys
from pathlib import Path

OFFLINE_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # A new SQLite database on 2 cores can take longer than Prefect's default 20 s.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # OpenMP threads that spin while waiting lose whole time slices when cores are shared: a
    # unirain-s training step measured 17 s with 2 spinning threads against 0.6 s passive, on a
    # 2-core machine with other work. Must be set before torch loads OpenMP.
    "OMP_WAIT_POLICY": "PASSIVE",
}

SERVER_MODULE = "prefect.server.api.server"


def configure_offline(run_dir: str | os.PathLike | None = None) -> None:
    """Set offline defaults; with a run folder and no server, keep Prefect's state inside it."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if run_dir is not None and "PREFECT_API_URL" not in os.environ:
        home = Path(run_dir).resolve() / ".prefect"
        if "PREFECT_HOME" not in os.environ and not home.exists():
            # importing Prefect makes an empty PREFECT_HOME: gone again at exit if no server used it
            atexit.register(_remove_if_empty, home)
        os.environ.setdefault("PREFECT_HOME", str(home))
        os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(home / "results"))
    guard_embedded_server()
    quiet_interrupts()


class _InterruptCrashFilter(logging.Filter):
    """Drops Prefect's "Crash detected! Execution was aborted by an interrupt signal." (the run is
    still marked Crashed in the UI): after Ctrl-C the command prints its own one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "interrupt signal" not in str(record.msg)


def quiet_interrupts() -> None:
    # Set on the (still empty) loggers before Prefect configures them: its dictConfig keeps filters.
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _InterruptCrashFilter) for f in logger.filters):
            logger.addFilter(_InterruptCrashFilter())


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def ensure_prefect_home() -> None:
    """Create PREFECT_HOME: Prefect's SQLite cannot create its own folder."""
    home = os.environ.get("PREFECT_HOME")
    if home:
        Path(home).expanduser().mkdir(parents=True, exist_ok=True)


class _GuardedSubprocess:
    """The `subprocess` module as Prefect's server module sees it while it starts uvicorn: the same,
    except that the uvicorn command runs under `flows.server_guard` with this process's pid."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def Popen(self, args, *rest, **kwargs):  # noqa: N802 (the name Prefect calls)
        args = list(args)
        if args[1:3] == ["-m", "uvicorn"]:
            args = [args[0], "-m", "flows.server_guard", str(os.getpid()), *args[3:]]
            # Its own session: Ctrl-C in a terminal signals the whole foreground process group, and
            # a server stopped by it first left the flow's crash report retrying a closed port
            # (httpx.ConnectError tracebacks, >30 s). Prefect stops it at exit, the guard on a kill.
            kwargs["start_new_session"] = True
        return self._real.Popen(args, *rest, **kwargs)


def patch_server_module(module) -> None:
    """Wrap `SubprocessASGIServer._run_uvicorn_command` (Prefect 3): make PREFECT_HOME, then start
    uvicorn under the guard. A Prefect without that method is left alone."""
    cls = getattr(module, "SubprocessASGIServer", None)
    original = getattr(cls, "_run_uvicorn_command", None)
    if original is None or getattr(original, "_unirain_guarded", False):
        return

    def _run_uvicorn_command(self):
        ensure_prefect_home()
        real = module.subprocess
        module.subprocess = _GuardedSubprocess(real)
        try:
            return original(self)
        finally:
            module.subprocess = real

    _run_uvicorn_command._unirain_guarded = True
    cls._run_uvicorn_command = _run_uvicorn_command


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches Prefect's server module when (and only if) something imports it: a command that never
    starts a flow pays nothing for the guard."""

    def find_spec(self, name, path=None, target=None):
        if name != SERVER_MODULE:
            return None
        sys.meta_path.remove(self)  # find the real spec without finding ourselves again
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            patch_server_module(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def guard_embedded_server() -> None:
    if SERVER_MODULE in sys.modules:
        patch_server_module(sys.modules[SERVER_MODULE])
    elif not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())
