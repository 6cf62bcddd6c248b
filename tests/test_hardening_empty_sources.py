"""Issue 10 item 6: a source that holds no image is warned about, naming the layout its adapter
expected; a run whose sources all hold nothing exits 1 with one line, before any stage starts."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def unirain(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["DO_NOT_TRACK"] = "1"
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def empty_layout(root: Path) -> Path:
    for sub in ("drs/input", "drs/target"):
        (root / sub).mkdir(parents=True)
    return root


def test_empty_sources_warn_and_an_empty_run_exits_1(tmp_path):
    from tasks.offline.synth import synthesize_paired

    src, gal = empty_layout(tmp_path / "src"), tmp_path / "gal"
    gal.mkdir()
    res = unirain("ingest", "--run", tmp_path / "run", "--source", f"unirain={src}", "--gallery", gal)
    assert res.returncode == 1, res.stderr
    assert f"warning: source unirain ({src}) has no images; the unirain adapter expects `{{drs,drd,nrs,nrd}}/{{input,target}}/NAME`" in res.stderr
    assert f"warning: gallery gal ({gal}) has no images" in res.stderr
    assert "nothing to ingest" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "run").exists()  # no stage started, nothing left behind

    synthesize_paired(tmp_path / "full", per_type=1, seed=1, size=(64, 64))
    res = unirain("ingest", "--run", tmp_path / "run", "--source", f"unirain={src}",
                  "--source", f"unirain.full={tmp_path / 'full'}")
    assert res.returncode == 0, res.stderr
    assert "warning: source unirain (" in res.stderr and "unirain.full" not in res.stderr


def test_distill_of_only_empty_sources_exits_1_before_any_stage(tmp_path, tiny_models):
    src, gal = empty_layout(tmp_path / "src"), tmp_path / "gal"
    gal.mkdir()
    cfg = yaml.safe_load(tiny_models.config_path.read_text())
    cfg.update(sources=[f"paired:day_streak={src / 'drs'}"], gallery=[str(gal)])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    res = unirain("distill", "--config", config, "--run", tmp_path / "run")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "the paired adapter expects Any folder with input|rainy|rain|data beside target|gt|norain|clean" in res.stderr
    assert "nothing to ingest" in res.stderr and "Traceback" not in res.stdout + res.stderr
    assert not (tmp_path / "run").exists()
