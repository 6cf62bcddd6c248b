"""Scale-out: a whole distill on a 2-worker local Dask cluster writes the same manifests as the
default thread runner (shard tasks get paths, ids and config sections, all picklable)."""
from __future__ import annotations

import pandas as pd
import pytest
import yaml

from data_manifests import RunLayout, read_manifest

# manifest -> the columns that identify a row
MANIFESTS = {
    "candidates": ["pair_id"], "gallery": ["image_id"], "captions": ["item_id"], "embeddings": ["item_id"],
    "retrieval": ["pair_id"], "votes": ["pair_id", "judge"], "distilled": ["pair_id"],
    "rejects": ["stage", "item_id", "reason"],
}


def _run(root, tiny_models, runner: dict):
    from flows.distill import distill_flow

    cfg = yaml.safe_load(tiny_models.config_path.read_text())
    cfg.update(sources=[f"unirain={root / 'paired'}"], gallery=[str(root / "gallery")], task_runner=runner)
    config = root / f"{runner['kind']}.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run = root / f"run-{runner['kind']}"
    distill_flow(run=str(run), config=str(config))
    return RunLayout.at(run)


def _table(layout: RunLayout, name: str) -> pd.DataFrame:
    folder = layout.rejects if name == "rejects" else layout.manifest(name)
    frame = read_manifest(folder, name)
    return frame.sort_values(MANIFESTS[name], ignore_index=True)


def test_dask_runner_gives_the_same_manifests(tmp_path, tiny_models, prefect_harness):
    from tasks.offline.synth import synthesize_gallery, synthesize_paired

    synthesize_paired(tmp_path / "paired", per_type=2, seed=3, size=(96, 96))
    synthesize_gallery(tmp_path / "gallery", n=6, seed=4, size=(96, 96))
    from flows.runners import close_local_clusters

    threads = _run(tmp_path, tiny_models, {"kind": "thread", "workers": 2})
    try:
        dask = _run(tmp_path, tiny_models, {"kind": "dask", "workers": 2})
    finally:
        close_local_clusters()  # its worker processes hold the models: free them for the tests after this one
    assert len(_table(dask, "distilled")) > 0
    for name in MANIFESTS:
        a, b = _table(threads, name), _table(dask, name)
        assert len(a) > 0 or name == "rejects", name
        # floats (embeddings, scores) may differ in the last bits: a Dask worker runs torch on one thread
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-4, atol=1e-5, obj=name)


@pytest.fixture(autouse=True, scope="module")
def _close_dask_clusters():
    """Close the local cluster while pytest's output is still open (not at interpreter exit)."""
    yield
    from flows.runners import close_local_clusters

    close_local_clusters()
