"""Issue 10 items 11 and 12: a refused command leaves nothing on disk; a kill -9 of a command leaves
no Prefect API server (uvicorn) behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    """The environment a user's shell gives: no PREFECT_HOME, so a run keeps Prefect inside RUN/.prefect."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, "OMP_NUM_THREADS": "1", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"}


def _cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300)


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def _source(root: Path) -> Path:
    from tasks.offline.synth import synthesize_paired

    synthesize_paired(root, 1, size=(64, 64))
    return root


def test_refused_commands_create_nothing(tmp_path):
    src = _source(tmp_path / "src")
    (tmp_path / "old_run").mkdir()  # an existing folder that is no run: refusals must not touch it either
    before = _tree(tmp_path)
    refused = [
        ("inspect", tmp_path / "no" / "such" / "path"),
        ("inspect", tmp_path / "old_run"),
        ("ingest", "--run", tmp_path / "r1", "--source", f"nosuchadapter={src}"),
        ("ingest", "--run", tmp_path / "old_run", "--source", f"unirain={tmp_path / 'missing'}"),
        ("distill", "--config", tmp_path / "missing.yaml", "--run", tmp_path / "r2"),
        ("select", "--run", tmp_path / "r3" / "deep"),
        ("train", "--config", tmp_path / "missing.yaml", "--run", tmp_path / "r4"),
        ("relocate", tmp_path / "r5", "--root", "no-equals-sign"),
        ("ablate", "--run", tmp_path / "r6", "--variants", ","),
    ]
    for args in refused:
        res = _cli(*args, cwd=tmp_path)
        assert res.returncode == 2, (args, res.stderr)
        assert "Traceback" not in res.stderr, res.stderr
        assert _tree(tmp_path) == before, (args, _tree(tmp_path) - before)


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _mentions(pid: int, needle: str) -> bool:
    """The process's command line or environment holds `needle` (its PREFECT_HOME)."""
    for name in ("cmdline", "environ"):
        try:
            if needle.encode() in Path(f"/proc/{pid}/{name}").read_bytes():
                return True
        except OSError:
            pass
    return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_kill_9_leaves_no_prefect_server(tmp_path):
    src = _source(tmp_path / "src")
    run = tmp_path / "run"
    home = str(run / ".prefect")
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "ingest", "--run", str(run), "--source",
                             f"unirain={src}"], cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        server = []
        deadline = time.monotonic() + 240
        while not server and proc.poll() is None and time.monotonic() < deadline:
            server = [c for c in _children(proc.pid) if _mentions(c, "prefect.server.api.server:create_app")]
            time.sleep(0.2)
        assert server, "the command never started Prefect's API server"
        time.sleep(1.0)  # let the server get going
        family = set(_children(proc.pid))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 15
        survivors = [0]
        while survivors and time.monotonic() < deadline:
            survivors = [p for p in family if _alive(p)]
            survivors += [int(p.name) for p in Path("/proc").glob("[0-9]*")
                          if int(p.name) != os.getpid() and _alive(int(p.name)) and _mentions(int(p.name), home)]
            time.sleep(0.25)
        assert not survivors, f"still running after the CLI's kill -9: {sorted(set(survivors))}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_guard_wraps_only_the_uvicorn_command():
    from flows.prefect_env import _GuardedSubprocess

    calls = []

    class FakeSubprocess:
        PIPE = -1

        @staticmethod
        def Popen(args, **kwargs):  # noqa: N802
            calls.append(args)

    guarded = _GuardedSubprocess(FakeSubprocess)
    guarded.Popen([sys.executable, "-m", "uvicorn", "--port", "1"], env={})
    guarded.Popen([sys.executable, "-m", "other"])
    assert calls[0] == [sys.executable, "-m", "flows.server_guard", str(os.getpid()), "--port", "1"]
    assert calls[1] == [sys.executable, "-m", "other"]
    assert guarded.PIPE == -1
