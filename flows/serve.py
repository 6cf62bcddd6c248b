"""`make serve`: everything one machine needs to run UniRain as Prefect deployments.

Starts a Prefect server on loopback (SQLite under `--home`), waits for `/api/health`, creates the
process work pool, deploys `prefect.yaml` (`prefect --no-prompt deploy --all`), starts a worker
and prints the UI's address. Ctrl-C (SIGINT) or SIGTERM stops the worker first, then the server:
a worker whose server is already gone ignores its first SIGTERM.

Each child runs in its own process group, so a terminal's Ctrl-C reaches only this process and the
shutdown order is ours. Child output goes to `HOME/logs/{server,worker,deploy}.log`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_POOL = "unirain-process"


def prefect_cmd() -> list[str]:
    """The `prefect` CLI of this interpreter's environment (works without activating the venv)."""
    exe = Path(sys.executable).with_name("prefect")
    return [str(exe)] if exe.exists() else [shutil.which("prefect") or "prefect"]


def child_env(home: Path, api_url: str | None) -> dict[str, str]:
    """Offline settings plus this server's home; results persist there so retried runs reuse them."""
    from .prefect_env import OFFLINE_DEFAULTS

    env = {**OFFLINE_DEFAULTS, "PREFECT_LOGGING_LEVEL": "INFO", **os.environ}
    env["PREFECT_HOME"] = str(home)
    env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(home / "results")
    env.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "true")
    env.setdefault("PREFECT_WORKER_QUERY_SECONDS", "5")
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def start_server(home: Path, host: str, port: int) -> subprocess.Popen:
    env = child_env(home, None)
    env["PREFECT_UI_API_URL"] = f"http://{host}:{port}/api"  # the UI's default is port 4200
    return _spawn([*prefect_cmd(), "server", "start", "--host", host, "--port", str(port)],
                  env, home / "logs" / "server.log")


def wait_healthy(api_url: str, proc: subprocess.Popen, timeout: float = 120.0) -> float:
    """Seconds until `/api/health` answers true; raises if the server exits or the time runs out."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=5) as resp:
                if resp.read().strip() == b"true":
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{api_url}/health did not answer within {timeout:.0f} s")


def _run(args: list[str], env: dict[str, str], log: Path, what: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        code = subprocess.call(args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"{what} failed (exit {code}); the end of {log}:\n{tail}")


def create_pool(env: dict[str, str], pool: str, home: Path) -> None:
    """The process work pool; `--overwrite` keeps a restart idempotent."""
    _run([*prefect_cmd(), "--no-prompt", "work-pool", "create", pool, "--type", "process", "--overwrite"],
         env, home / "logs" / "deploy.log", f"creating work pool {pool!r}")


def deploy_all(env: dict[str, str], pool: str, home: Path) -> None:
    """Every deployment in prefect.yaml, with its trigger, onto `pool`."""
    _run([*prefect_cmd(), "--no-prompt", "deploy", "--all", "--pool", pool], env, home / "logs" / "deploy.log",
         "prefect deploy --all")


def automations(path: Path = REPO / "prefect.yaml") -> list[str]:
    """`deployment: automation name` for every trigger prefect.yaml declares (what `deploy` creates)."""
    import yaml

    spec = yaml.safe_load(path.read_text()) or {}
    return [f"{d['name']}: {t.get('name') or '(unnamed trigger)'}"
            for d in spec.get("deployments") or [] for t in d.get("triggers") or []]


def start_worker(env: dict[str, str], pool: str, home: Path) -> subprocess.Popen:
    return _spawn([*prefect_cmd(), "worker", "start", "--pool", pool, "--type", "process", "--name",
                   f"unirain-{os.uname().nodename}-{os.getpid()}"], env, home / "logs" / "worker.log")


def stop(proc: subprocess.Popen | None, name: str, timeout: float = 30.0) -> None:
    """SIGTERM the child's process group, once more if ignored, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout / 2), (signal.SIGTERM, timeout / 2), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    print(f"serve: {name} stopped", flush=True)


def port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address the server binds (default: loopback only)")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--home", default=str(REPO / ".prefect-server"),
                        help="PREFECT_HOME of the server and worker: SQLite database, results, logs")
    parser.add_argument("--pool", default=DEFAULT_POOL, help="process work pool to create and serve")
    parser.add_argument("--no-deploy", action="store_true", help="skip `prefect deploy --all` (already deployed)")
    args = parser.parse_args(argv)

    home = Path(args.home).resolve()
    home.mkdir(parents=True, exist_ok=True)  # Prefect's SQLite cannot create its own folder
    if not port_free(args.host, args.port):
        print(f"serve: {args.host}:{args.port} is in use (another server?); pick one with --port", file=sys.stderr)
        return 2
    api_url = f"http://{args.host}:{args.port}/api"
    env = child_env(home, api_url)

    stopping = threading.Event()

    def on_signal(signum, _frame):
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    server = worker = None
    code = 0
    try:
        print(f"serve: starting the Prefect server (home {home}, logs {home / 'logs'})", flush=True)
        server = start_server(home, args.host, args.port)
        took = wait_healthy(api_url, server)
        print(f"serve: server healthy after {took:.0f} s", flush=True)
        if not stopping.is_set():
            create_pool(env, args.pool, home)
        if not stopping.is_set() and not args.no_deploy:
            print("serve: deploying prefect.yaml", flush=True)
            deploy_all(env, args.pool, home)
            for line in automations():
                print(f"serve: automation of {line}", flush=True)
        if not stopping.is_set():
            worker = start_worker(env, args.pool, home)
            print(f"serve: worker started on pool {args.pool!r}", flush=True)
            print(f"serve: UI: http://{args.host}:{args.port}", flush=True)
            print(f"serve: in another shell: export PREFECT_API_URL={api_url}\n"
                  f"serve: then e.g. prefect deployment run distill/distill --param run=runs/r1 "
                  f"--param config=configs/demo.yaml\nserve: Ctrl-C stops the worker, then the server", flush=True)
        while not stopping.wait(1.0):
            for proc, name in ((server, "server"), (worker, "worker")):
                if proc is not None and proc.poll() is not None:
                    print(f"serve: the {name} exited with code {proc.returncode}; see {home / 'logs' / (name + '.log')}",
                          file=sys.stderr, flush=True)
                    code = 1
                    stopping.set()
    except (RuntimeError, TimeoutError) as exc:
        print(f"serve: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        stop(worker, "worker")
        stop(server, "server")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
