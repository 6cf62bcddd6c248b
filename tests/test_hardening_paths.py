"""Issue 10 item 2: a path built from data (manifest values, names) never leaves its folder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_manifests.paths import PathEscapeError, check_inside, confined_join, safe_component

ROOT = Path(__file__).resolve().parent.parent
TINY_MODEL = {"type": "unirain", "dim": 8, "num_blocks": [1, 1], "heads": [1, 1], "num_refinement_blocks": 1,
              "expert_expansion": 1.0, "num_experts": 2, "top_k": 1}


@pytest.mark.parametrize("name", ["../../x", "/abs/x", "..", ".", "", "a/b\\c", ".hidden", "x\x00y", "é" * 300])
def test_safe_component_is_one_plain_name(name):
    safe = safe_component(name)
    assert safe and "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert safe not in (".", "..") and not safe.startswith(".")
    assert len(safe.encode()) <= 200
    assert Path(safe).name == safe


def test_confined_join_keeps_paths_inside(tmp_path):
    root = tmp_path / "out"
    for parts in (("../../x", "day_streak", "a.png"), ("/abs/x", "..", "b.png")):
        path = confined_join(root, *parts)
        assert root.resolve() in path.resolve().parents
    assert confined_join(root, "src", "day_drop", "img.png") == root / "src" / "day_drop" / "img.png"


def test_a_planted_link_cannot_lead_out(tmp_path):
    root, outside = tmp_path / "out", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "src").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathEscapeError, match="leads outside"):
        confined_join(root, "src", "a.png")
    with pytest.raises(PathEscapeError):
        check_inside(root, root / ".." / "elsewhere")


def _checkpoint(folder: Path) -> Path:
    import torch

    from unirain_model.archs import build_model
    from unirain_model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(folder, build_model(TINY_MODEL), TINY_MODEL, 1, ["day_streak"], {})


def _image(path: Path, seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_evaluate_save_images_never_writes_outside_its_folder(tmp_path):
    """End to end through `unirain evaluate --save-images DIR`: hostile `source` values and a hostile
    file stem land inside DIR (sanitised), and nothing is written anywhere else."""
    work = tmp_path / "work"
    abs_target = tmp_path / "abs_target"  # where `source: /abs...` would have written
    ckpt = _checkpoint(work / "ckpt")
    imgs = work / "imgs"
    rows = []
    for i, (source, stem) in enumerate([("../../escaped", "a"), (str(abs_target), "b"), ("ok", "..evil")]):
        rows.append({"pair_id": f"p{i:031d}", "source": source, "rain_type": "day_streak",
                     "rainy_path": _image(imgs / f"in{i}" / f"{stem}.png", i),
                     "clean_path": _image(imgs / f"gt{i}" / f"{stem}.png", 10 + i)})
    manifest = work / "manifest"
    manifest.mkdir()
    pd.DataFrame(rows).to_parquet(manifest / "part-0.parquet")
    save_dir = work / "deep" / "er" / "saved"  # ../../escaped from <source> would reach work/deep
    out = work / "report" / "evaluation"
    before = {p for p in tmp_path.rglob("*")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    res = subprocess.run(
        [sys.executable, "-m", "flows.cli", "evaluate", "--checkpoint", str(ckpt), "--manifest", str(manifest),
         "--save-images", str(save_dir), "--out", str(out), "--device", "cpu", "--grid-images", "1"],
        cwd=ROOT, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    new = {p for p in tmp_path.rglob("*")} - before
    outside = [p for p in new if not (p.is_relative_to(save_dir) or p.is_relative_to(out.parent))
               and p not in (save_dir.parent, save_dir.parent.parent)]
    assert outside == [], outside
    assert not abs_target.exists()
    saved = sorted(p.relative_to(save_dir).as_posix() for p in save_dir.rglob("*.png"))
    assert len(saved) == 3, saved  # every pair written, each inside DIR
    assert all(p.count("/") == 2 and not any(part.startswith(".") for part in p.split("/")) for p in saved)
    assert "ok/day_streak/_.evil.png" in saved
    grids = list((out.parent / "evaluation_grids").rglob("*.png"))
    assert len(grids) == 3 and all(g.resolve().is_relative_to(out.parent.resolve()) for g in grids)
