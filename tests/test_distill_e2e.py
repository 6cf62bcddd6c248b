"""The whole distillation through the CLI: kill -9 during voting, rerun, compare with a clean run."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from data_manifests import RunLayout, read_manifest, shard_files

MANIFESTS = {"candidates": ["pair_id"], "gallery": ["image_id"], "captions": ["item_id", "kind"],
             "embeddings": ["item_id", "kind"], "retrieval": ["pair_id"], "votes": ["pair_id", "judge"],
             "distilled": ["pair_id"], "rejects": ["stage", "item_id", "reason"]}


@pytest.fixture(scope="module")
def distill_config(tmp_path_factory, tiny_models):
    from tasks.offline.synth import synthesize_gallery, synthesize_paired

    root = tmp_path_factory.mktemp("e2e")
    synthesize_paired(root / "paired", per_type=3, seed=11, size=(96, 96))
    synthesize_gallery(root / "gallery", n=6, seed=12, size=(96, 96))
    cfg = yaml.safe_load(tiny_models.config_path.read_text())
    cfg.update(sources=[f"unirain={root / 'paired'}"], gallery=[str(root / "gallery")])
    cfg["ingest"]["num_shards"] = 3
    cfg["vote"]["cascade"] = True
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def unirain(*args, env=None):
    # a session of its own, so a kill reaches the embedded Prefect server the CLI starts as well
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *map(str, args)], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_env(run: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(run / ".prefect")  # each CLI process: its own embedded API, as users get
    return env


def manifests(run: Path) -> dict[str, pd.DataFrame]:
    layout = RunLayout.at(run)
    out = {}
    for name, key in MANIFESTS.items():
        frame = read_manifest(layout.manifest(name), name)
        for col in frame.columns:  # list columns compare as tuples
            if frame[col].map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
                frame[col] = frame[col].map(lambda v: tuple(v.tolist() if hasattr(v, "tolist") else v))
        out[name] = frame.sort_values(key + [c for c in frame.columns if c not in key], ignore_index=True)
    return out


@pytest.mark.slow
def test_kill_during_voting_then_rerun_equals_a_clean_run(distill_config, tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    proc = unirain("distill", "--config", distill_config, "--run", clean, env=run_env(clean))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out

    proc = unirain("distill", "--config", distill_config, "--run", killed, env=run_env(killed))
    answers = killed / "cache" / "judges"
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if answers.exists() and any(answers.iterdir()):  # voting has started asking judges
            break
        time.sleep(0.05)
    was_running = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9, the CLI and its children at once
    proc.communicate(timeout=60)
    assert was_running, "the run finished before it could be killed during voting"
    assert len(shard_files(killed / "manifests" / "distilled")) == 0  # it really stopped early

    proc = unirain("distill", "--config", distill_config, "--run", killed, env=run_env(killed))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    a, b = manifests(clean), manifests(killed)
    for name in MANIFESTS:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)
    assert len(a["distilled"]) + (a["rejects"]["stage"] == "select").sum() > 0

    # a third run of the same command finds nothing to do and asks no judge
    proc = unirain("distill", "--config", distill_config, "--run", killed, env=run_env(killed))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    c = manifests(killed)
    for name in MANIFESTS:
        pd.testing.assert_frame_equal(b[name], c[name], obj=name)
