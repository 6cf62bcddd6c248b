"""Issue 10 item 8: a truncated or corrupt checkpoint never ends in a PyTorch traceback. Training falls
back to the newest intact checkpoint with a warning naming the bad file; with none intact, a clear
error names the files; `evaluate`/`derain` of a bad checkpoint is one line naming it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from tests.test_train import TINY_MODEL, make_paper_folder, tiny_cfg
from unirain_model.checkpoint import CheckpointError, load_model, load_resume, read_latest
from unirain_model.trainer import train

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_paper_folder(tmp_path_factory.mktemp("ckdata"))


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _trained(run: Path, data: Path, iters: int = 4):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train(tiny_cfg(iters=iters), run, data, show_progress_bar=False)


@pytest.mark.parametrize("damaged", ["iter_00000004.state.pt", "iter_00000004.safetensors"])
def test_training_falls_back_to_the_newest_intact_checkpoint(tmp_path, data_dir, damaged):
    run = tmp_path / "run"
    _trained(run, data_dir)  # checkpoints at iterations 2 and 4
    _truncate(run / "checkpoints" / damaged)
    with pytest.warns(UserWarning, match=f"skipped: .*{damaged}") as record:
        warnings.simplefilter("ignore", category=DeprecationWarning)
        result = train(tiny_cfg(iters=6), run, data_dir, show_progress_bar=False)
    assert any("resuming from iter_00000002.safetensors" in str(w.message) for w in record)
    assert result.resumed_from == 2 and result.iteration == 6
    assert read_latest(run / "checkpoints")["iteration"] == 6
    # the damaged iteration was written again, intact
    resume = load_resume(run / "checkpoints")
    assert resume.meta["iteration"] == 6


def test_no_intact_checkpoint_is_one_clear_error_naming_the_files(tmp_path, data_dir):
    run = tmp_path / "run"
    _trained(run, data_dir)
    ck = run / "checkpoints"
    _truncate(ck / "iter_00000004.state.pt")
    (ck / "iter_00000002.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError) as info:
        load_resume(ck)
    message = str(info.value)
    assert "iter_00000004.state.pt" in message and "iter_00000002.safetensors" in message
    assert "\n" not in message


def test_an_unreadable_latest_json_falls_back_to_the_files(tmp_path, data_dir):
    run = tmp_path / "run"
    _trained(run, data_dir)
    (run / "checkpoints" / "latest.json").write_text("{trunc")
    with pytest.warns(UserWarning, match="latest.json: unreadable"):
        resume = load_resume(run / "checkpoints")
    assert resume.meta["iteration"] == 4


def test_latest_json_cannot_point_outside_its_folder(tmp_path, data_dir):
    run = tmp_path / "run"
    _trained(run, data_dir)
    latest = run / "checkpoints" / "latest.json"
    entry = json.loads(latest.read_text())
    latest.write_text(json.dumps({**entry, "checkpoint": "../../elsewhere.safetensors"}))
    with pytest.raises(CheckpointError, match="not a file name"):
        read_latest(run / "checkpoints")


def test_load_model_names_a_truncated_weights_file(tmp_path, data_dir):
    run = tmp_path / "run"
    _trained(run, data_dir, iters=2)
    weights = run / "checkpoints" / "iter_00000002.safetensors"
    _truncate(weights, 0.9)  # the header (and its metadata) survives, the tensors do not
    with pytest.raises(CheckpointError, match=r"iter_00000002.safetensors: (not a safetensors checkpoint|unreadable weights)"):
        load_model(weights)


# ----------------------------------------------------------------------------- CLI, as a user runs it
def _cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], cwd=cwd,
                          env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)


def _assert_one_line_error(res: subprocess.CompletedProcess, *names: str) -> None:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, res.stderr
    for name in names:
        assert name in errors[0], res.stderr


def test_cli_refuses_bad_checkpoints_in_one_line(tmp_path, data_dir):
    run = tmp_path / "run"
    _trained(run, data_dir)
    ck = run / "checkpoints"
    (tmp_path / "tiny-model.yaml").write_text(yaml.safe_dump(TINY_MODEL))
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"train": dict(
        model="tiny-model.yaml", iters=6, batch_size=4, crop=32, warmup_iters=1, eval_every=2, val_fraction=0.3,
        val_crop=32, num_workers=0, log_every=1, ckpt_every=2, reweighting={"warmup_evals": 0})}))
    weights4 = ck / "iter_00000004.safetensors"
    _truncate(weights4, 0.9)
    for cmd in (("evaluate", "--checkpoint", weights4, "--data", data_dir, "--out", tmp_path / "ev"),
                ("evaluate", "--checkpoint", run, "--data", data_dir, "--out", tmp_path / "ev"),
                ("derain", "--checkpoint", weights4, data_dir / "drs" / "input", tmp_path / "out")):
        _assert_one_line_error(_cli(*cmd, cwd=tmp_path), "iter_00000004.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    _assert_one_line_error(_cli("derain", "--checkpoint", garbage, data_dir / "drs" / "input", tmp_path / "out",
                                cwd=tmp_path), "garbage.safetensors")
    # every checkpoint damaged: train is refused before any work, naming both
    _truncate(ck / "iter_00000002.state.pt")
    res = _cli("train", "--config", tmp_path / "run.yaml", "--run", run, "--manifest", data_dir, cwd=tmp_path)
    _assert_one_line_error(res, "iter_00000004.safetensors", "iter_00000002.state.pt")
    assert not (run / ".prefect").exists()  # no flow was started


def test_cli_train_resumes_past_a_damaged_checkpoint_and_says_so(tmp_path, data_dir):
    run = tmp_path / "run"
    _trained(run, data_dir)
    (tmp_path / "tiny-model.yaml").write_text(yaml.safe_dump(TINY_MODEL))
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"train": dict(
        model="tiny-model.yaml", iters=6, batch_size=4, crop=32, warmup_iters=1, eval_every=2, val_fraction=0.3,
        val_crop=32, num_workers=0, log_every=1, ckpt_every=2, reweighting={"warmup_evals": 0})}))
    _truncate(run / "checkpoints" / "iter_00000004.state.pt")
    res = _cli("train", "--config", tmp_path / "run.yaml", "--run", run, "--manifest", data_dir, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "iter_00000004.state.pt" in res.stderr and "resuming from iter_00000002.safetensors" in res.stderr
    assert read_latest(run / "checkpoints")["iteration"] == 6
