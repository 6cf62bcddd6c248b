"""Task runners by config: threads on one machine, Dask for a cluster."""
from __future__ import annotations

import atexit
import threading

from tasks.config import TaskRunnerConfig

_LOCK = threading.Lock()
_LOCAL_CLUSTERS: dict[int, object] = {}


def make_task_runner(cfg: TaskRunnerConfig):
    if cfg.kind == "dask":
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=cfg.address or local_cluster(cfg.workers).scheduler_address)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=cfg.workers)


def local_cluster(workers: int):
    """One local Dask cluster per process and size, shared by every stage of a run: its worker
    processes import torch and load each model once (`tasks.stage.ready`), not once per shard.
    One thread per worker process: torch parallelises inside a task."""
    with _LOCK:
        cluster = _LOCAL_CLUSTERS.get(workers)
        if cluster is None or cluster.status.name in ("closing", "closed", "failed"):
            from distributed import LocalCluster

            # ":0": a free port for the dashboard (8787 may be taken by another cluster)
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
            _LOCAL_CLUSTERS[workers] = cluster
        return cluster


@atexit.register
def close_local_clusters() -> None:
    with _LOCK:
        for cluster in _LOCAL_CLUSTERS.values():
            cluster.close()
        _LOCAL_CLUSTERS.clear()
