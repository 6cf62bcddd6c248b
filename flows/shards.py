"""Fan a stage out over its shards with the flow's task runner, skipping finished shards."""
from __future__ import annotations

from typing import Callable

import pandas as pd
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from tqdm import tqdm

from data_manifests import RunLayout, clean_temporaries
from tasks.stage import shard_done, split_shards


def run_stage_shards(run: RunLayout, stage: str, output: str, items: pd.DataFrame, key: str, num_shards: int,
                     shard_task, task_args: Callable[[int, pd.DataFrame], dict], collect: list | None = None) -> dict:
    """Submit one task per unfinished shard; returns counts of kept rows, rejects and skipped shards.

    A shard task returns (kept, rejected) or (kept, rejected, extras); extras are appended to `collect`.
    """
    clean_temporaries(run.manifest(output))
    clean_temporaries(run.rejects)
    shards = split_shards(items, key, num_shards)
    todo = [i for i in range(num_shards) if not shard_done(run, output, stage, i)]
    progress = create_progress_artifact(progress=0.0, description=f"{stage}: shards of {run.root.name}")
    futures = [shard_task.submit(**task_args(i, shards[i])) for i in todo]
    totals = {"kept": 0, "rejected": 0, "shards_done": 0, "shards_skipped": num_shards - len(todo)}
    bar = tqdm(total=len(todo), desc=stage, unit="shard", disable=not todo)
    for n, future in enumerate(futures, 1):
        kept, rejected, *extras = future.result()
        if collect is not None and extras:
            collect.extend(extras[0])
        totals["kept"] += kept
        totals["rejected"] += rejected
        totals["shards_done"] += 1
        bar.update()
        update_progress_artifact(progress, progress=100.0 * n / len(futures))
    bar.close()
    update_progress_artifact(progress, progress=100.0)
    return totals
