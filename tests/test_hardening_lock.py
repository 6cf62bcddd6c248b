"""Issue 10 item 13: one writer per run folder. A second command on a run in use is refused at once
("run RUN in use by pid N (command ...)", exit 2); the lock of a killed holder is taken over."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_manifests.run_lock import LOCK_NAME, RunBusy, run_lock

ROOT = Path(__file__).resolve().parent.parent
HOLD = ("import sys, time; from data_manifests.run_lock import run_lock\n"
        "with run_lock(sys.argv[1], 'unirain distill --run X'):\n"
        "    print('held', flush=True); time.sleep(600)\n")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, "OMP_NUM_THREADS": "1"}


def _holder(run: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        for args in (("select", "--run", run), ("distill", "--config", "configs/demo.yaml", "--run", run),
                     ("relocate", run)):
            res = _cli(*args)
            assert res.returncode == 2, res.stderr
            assert f"run {run.resolve()} in use by pid {holder.pid} (command unirain distill --run X)" in res.stderr
            assert "Traceback" not in res.stderr
        with pytest.raises(RunBusy, match=f"pid {holder.pid}"):
            with run_lock(run):
                pass
    finally:
        holder.kill()
        holder.wait()
    # the holder died by SIGKILL: its lock is free at once, and the next command takes it
    with run_lock(run, "test") as root:
        assert (root / LOCK_NAME).read_text().startswith('{"pid": %d' % os.getpid())
    assert not (run / LOCK_NAME).exists()  # released: the file goes


def test_lock_of_a_killed_holder_is_taken_over(tmp_path):
    run = tmp_path / "run"
    holder = _holder(run)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (run / LOCK_NAME).exists()  # left behind by the kill, naming a dead pid
    res = _cli("relocate", run)  # a writer (lists roots here): must not be refused
    assert "in use" not in res.stderr
    assert not (run / LOCK_NAME).exists()


def test_two_cli_commands_on_one_run(tmp_path):
    """Two real `unirain ingest` processes on one run: the second is refused while the first runs,
    and the first finishes normally."""
    from tasks.offline.synth import synthesize_paired

    src = tmp_path / "src"
    synthesize_paired(src, 1, size=(64, 64))
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "flows.cli", "ingest", "--run", str(run), "--source",
                              f"unirain={src}"], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / LOCK_NAME).is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first ingest ended before the test could race it"
        second = _cli("ingest", "--run", run, "--source", f"unirain={src}")
        assert second.returncode == 2
        assert f"in use by pid {first.pid} (command unirain ingest)" in second.stderr
        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
        assert "unirain" in out
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert not (run / LOCK_NAME).exists()


def test_a_lock_that_made_the_run_folder_removes_it_when_nothing_was_written(tmp_path):
    run = tmp_path / "a" / "b" / "run"
    with run_lock(run):
        (run / ".prefect").mkdir()  # what importing Prefect leaves: an empty folder
    assert not (tmp_path / "a").exists()
    with run_lock(run):
        (run / "run.json").write_text("{}")
    assert (run / "run.json").is_file() and not (run / LOCK_NAME).exists()


def test_torchrun_ranks_share_rank_0s_lock(tmp_path, monkeypatch):
    run = tmp_path / "run"
    with run_lock(run):
        monkeypatch.setenv("RANK", "1")
        with run_lock(run):  # another rank of the same training: not refused, takes nothing
            pass


def test_a_run_path_that_is_a_file_is_a_clear_error(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    res = _cli("relocate", afile)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"cannot use {afile}" in res.stderr
    assert afile.read_text() == "x"
