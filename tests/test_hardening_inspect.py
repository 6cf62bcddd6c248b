"""Issue 10 item 7 (inspect): a truncated or corrupt manifest shard is reported by name and left out;
the rest of the funnel is still shown, with no ArrowInvalid traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def unirain(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["DO_NOT_TRACK"] = "1"
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_inspect_names_a_damaged_shard_and_shows_the_rest(tmp_path):
    from data_manifests.reader import shard_files
    from tasks.offline.synth import synthesize_paired

    synthesize_paired(tmp_path / "paired", per_type=2, seed=2, size=(64, 64))
    config = tmp_path / "config.yaml"
    config.write_text("ingest:\n  num_shards: 2\n")
    run = tmp_path / "run"
    res = unirain("ingest", "--run", run, "--config", config, "--source", f"unirain={tmp_path / 'paired'}")
    assert res.returncode == 0, res.stderr
    shards = shard_files(run / "manifests" / "candidates")
    assert len(shards) == 2
    import json

    import pyarrow.parquet as pq

    n_intact = pq.read_metadata(shards[1]).num_rows
    truncated, corrupt = shards[0], run / "manifests" / "rejects" / "part-00000.parquet"
    truncated.write_bytes(truncated.read_bytes()[:100])
    corrupt.write_bytes(b"not parquet at all" * 10)

    res = unirain("inspect", "--json", run)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and "ArrowInvalid" not in res.stderr
    assert f"damaged manifest shard {truncated}" in res.stderr
    assert f"damaged manifest shard {corrupt}" in res.stderr
    rows = [r for r in json.loads(res.stdout) if r["stage"] == "ingest" and r["source"] == "unirain"]
    assert n_intact and rows[0]["kept"] == n_intact  # the intact shard's rows are still counted
