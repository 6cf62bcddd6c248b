"""Issue 10 item 10: every config and model mistake is one line naming the key (and the path), exit 2,
no traceback, nothing created, before any stage runs. A model folder's kind is judged from its
config.json (`model_type` / `architectures`) without loading weights."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_config_and_model_mistakes_fail_before_any_stage(tmp_path, tiny_models):
    from tasks.offline.synth import synthesize_gallery, synthesize_paired

    synthesize_paired(tmp_path / "paired", per_type=1, seed=1, size=(64, 64))
    synthesize_gallery(tmp_path / "gal", n=2, seed=2, size=(64, 64))
    base = yaml.safe_load(tiny_models.config_path.read_text())
    base.update(sources=[f"unirain={tmp_path / 'paired'}"], gallery=[str(tmp_path / "gal")])
    t, missing = tiny_models.dir, tmp_path / "missing"
    cases = {  # name: (edit of the config, what the one line must say)
        "missing captioner": (lambda c: c["models"]["captioner"].update(name=str(missing)),
                              f"models.captioner.name: local model not found: {missing}"),
        "missing embedder": (lambda c: c["models"]["embedder"].update(name=f"local-dir:{missing}"),
                             f"models.embedder.name: local model not found: {missing}"),
        "missing judge": (lambda c: c["models"]["judges"][1].update(name=str(missing)),
                          f"models.judges[1].name: local model not found: {missing}"),
        "captioner is a LLaVA": (lambda c: c["models"]["captioner"].update(name=str(t / "judge_a")),
                                 f"models.captioner.name: {t / 'judge_a'} is not a BLIP captioner: it has "
                                 "model_type 'llava'"),
        "judge is a BLIP": (lambda c: c["models"]["judges"][0].update(name=str(t / "blip")),
                            f"models.judges[0].name: {t / 'blip'} is not a vision-language judge"),
        "embedder is a LLaVA": (lambda c: c["models"]["embedder"].update(name=f"local-dir:{t / 'judge_b'}"),
                                f"models.embedder.name: {t / 'judge_b'} is not an OpenCLIP model folder"),
        "unknown backend": (lambda c: c["models"]["captioner"].update(backend="blipp"),
                            "models.captioner.backend: unknown captioner backend 'blipp'"),
        "judge option typo": (lambda c: c["models"]["judges"][2]["options"].update(batch_sise=8),
                              "models.judges[2].options.batch_sise: Extra inputs are not permitted"),
        "two judges": (lambda c: c["models"].update(judges=c["models"]["judges"][:2]),
                       "models.judges: majority voting needs exactly three judges, the config has 2"),
        "no sources, no candidates": (lambda c: c.update(sources=[], gallery=[]),
                                      "sources: none listed and"),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["DO_NOT_TRACK"] = "1"
    for i, (name, (edit, expected)) in enumerate(cases.items()):
        cfg = copy.deepcopy(base)
        edit(cfg)
        config, run = tmp_path / f"case{i}.yaml", tmp_path / f"run{i}"
        config.write_text(yaml.safe_dump(cfg))
        res = subprocess.run([sys.executable, "-m", "flows.cli", "distill", "--config", str(config), "--run", str(run)],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert res.returncode == 2, (name, res.stdout[-2000:], res.stderr[-2000:])
        assert len(lines) == 1 and expected in lines[0], (name, res.stderr)
        assert "Traceback" not in res.stdout + res.stderr, name
        assert not run.exists(), name  # no stage started, nothing written
