"""Task runners by config: threads on one machine, Dask for a cluster."""
from __future__ import annotations

from tasks.config import TaskRunnerConfig


def make_task_runner(cfg: TaskRunnerConfig):
    if cfg.kind == "dask":
        from prefect_dask import DaskTaskRunner

        if cfg.address:
            return DaskTaskRunner(address=cfg.address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.workers, "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": None})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=cfg.workers)
