"""Prefect's offline settings (and the process's other environment defaults), in one place.
Call before Prefect or torch is imported.

Values already in the environment win, so a user's `PREFECT_API_URL` or `PREFECT_HOME`
(a real server, a shared database) is respected.
"""
from __future__ import annotations

import os
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


def configure_offline(run_dir: str | os.PathLike | None = None) -> None:
    """Set offline defaults; with a run folder and no server, keep Prefect's state inside it."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if run_dir is not None and "PREFECT_API_URL" not in os.environ:
        home = Path(run_dir).resolve() / ".prefect"
        home.mkdir(parents=True, exist_ok=True)  # Prefect's SQLite cannot create its own folder
        os.environ.setdefault("PREFECT_HOME", str(home))
        os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(home / "results"))
