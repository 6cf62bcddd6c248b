"""Which candidates are still in play at a stage: the screening stages (those between ingest and the
model stages, e.g. `leak_check`) reject pairs, and every later stage must neither work on them nor
reject them a second time (select's exhaustiveness invariant counts each candidate once).

`live_candidates(run, stage)` is the candidates manifest minus every pair a stage after ingest and
before `stage` (in `tasks.pipeline` order) has rejected. The model stages' inputs start from it
(caption's candidate items; embed, retrieve and vote follow from caption's output).
"""
from __future__ import annotations

import pandas as pd

from data_manifests import RunLayout, read_manifest, shard_files

from .pipeline import STAGE_ORDER, spec


def screened_out(run: RunLayout, stage: str) -> set[str]:
    """Ids rejected by the stages after ingest and before `stage`."""
    earlier = STAGE_ORDER[1:STAGE_ORDER.index(spec(stage).name)]
    if not earlier or not shard_files(run.rejects):
        return set()
    rejects = read_manifest(run.rejects, "rejects", columns=["item_id", "stage"])
    return set(rejects.loc[rejects["stage"].isin(earlier), "item_id"])


def live_candidates(run: RunLayout, stage: str, columns: list[str] | None = None) -> pd.DataFrame:
    cands = read_manifest(run.manifest("candidates"), "candidates", columns=columns)
    out = screened_out(run, stage)
    return cands[~cands["pair_id"].isin(out)].reset_index(drop=True) if out else cands
