"""Voting benchmarks; every ratio is measured side by side in one run.

Part `http`: one judge model asked the same questions in-process (`transformers` backend) and over
HTTP through `unirain serve-judge` (`vllm` backend: base64 data URLs, JSON, one request per pair).
Reports seconds per vote and the overhead ratio HTTP / in-process. The judge is a tiny LLaVA
(32x32 vision input), so the model costs almost nothing and the ratio is close to the worst case:
the transferable number is the absolute overhead per vote (ms), which does not grow with the model.

Part `cascade` (`benchmarks/vote_cascade.py`): judge calls per candidate with the cascade vs asking
every judge, on the same demo run; the cuts must be identical.

    .venv/bin/python benchmarks/bench_vote.py [--pairs 32] [--reps 3] [--concurrency 1 4] [--threads 1]
    .venv/bin/python benchmarks/bench_vote.py --parts cascade
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_pairs(folder: Path, n_pairs: int, per_ref: int = 4, seed: int = 0):
    """Photos of gallery-like size (640x480 JPEG) cut from images that ship with scikit-image and
    scikit-learn; each reference serves `per_ref` candidates, as after retrieval."""
    from PIL import Image
    from skimage import data
    from sklearn.datasets import load_sample_images

    from tasks.vote.judges import JudgeRequest

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), *load_sample_images().images]
    rng = np.random.default_rng(seed)

    def photo(name: str) -> str:
        src = sources[int(rng.integers(len(sources)))]
        h, w = src.shape[:2]
        y, x = rng.integers(0, h // 4), rng.integers(0, w // 4)
        path = folder / f"{name}.jpg"
        Image.fromarray(src[y:y + 3 * h // 4, x:x + 3 * w // 4]).resize((640, 480)).save(path, quality=90)
        return str(path)

    pairs = []
    for r in range(-(-n_pairs // per_ref)):
        ref = photo(f"ref{r}")
        for c in range(per_ref):
            pairs.append(JudgeRequest(f"ref{r}", ref, f"cand{r}_{c}", photo(f"cand{r}_{c}")))
    return pairs[:n_pairs]


def start_server(model_dir: str, port: int, threads: int) -> subprocess.Popen:
    import httpx

    cmd = [sys.executable, "-m", "flows.cli", "serve-judge", "--model", model_dir, "--port", str(port),
           "--served-model-name", "bench-judge"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve-judge exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.terminate()
    raise TimeoutError("serve-judge did not become healthy")


def bench_http(n_pairs: int, reps: int, concurrency: list[int], threads: int) -> list[dict]:
    import socket

    import psutil
    import torch

    from tasks.config import ModelRef, VoteConfig
    from tasks.vote.judges import make_judge
    from tasks.offline.tiny_models.llava import make_judge_model

    torch.set_num_threads(threads)  # the server gets the same count through OMP_NUM_THREADS
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = str(make_judge_model(tmp / "judge", seed=0))
        pairs = write_pairs(tmp, n_pairs)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = start_server(model_dir, port, threads)
        try:
            judges = {
                f"in-process, batch {b}": make_judge(
                    ModelRef(backend="transformers", name=model_dir, options={"batch_size": b}))
                for b in (8, 1)
            }
            for conc in concurrency:
                ref = ModelRef(backend="vllm", name="bench-judge", options={"base_url": f"http://127.0.0.1:{port}/v1"})
                judges[f"HTTP serve-judge, {conc} in flight"] = make_judge(ref, VoteConfig(max_concurrency=conc))
                judges[f"HTTP serve-judge, {conc} in flight"].check()
            times: dict[str, list[float]] = {name: [] for name in judges}
            cpu: dict[str, list[float]] = {name: [] for name in judges}
            server_ps = psutil.Process(server.pid)

            def cpu_now() -> float:  # this process plus the server: all the work a vote costs
                t = server_ps.cpu_times()
                return time.process_time() + t.user + t.system

            results = {name: judge.judge(pairs) for name, judge in judges.items()}  # warm-up
            # Interleaved repetitions: load from other users of the machine hits every path alike.
            for _ in range(reps):
                for name, judge in judges.items():
                    if hasattr(judge, "_urls"):
                        judge._urls.clear()  # as in a run: each candidate encoded once, each reference reused
                    start, start_cpu = time.perf_counter(), cpu_now()
                    results[name] = judge.judge(pairs)
                    times[name].append(time.perf_counter() - start)
                    cpu[name].append(cpu_now() - start_cpu)
        finally:
            server.terminate()
            server.wait(timeout=30)

    reference = results["in-process, batch 1"]
    base = statistics.median(times["in-process, batch 1"])
    batched = statistics.median(times["in-process, batch 8"])
    rows = []
    for name, secs in times.items():
        sec = statistics.median(secs)
        cpu_ms = 1000 * statistics.median(cpu[name]) / n_pairs
        rows.append({
            "path": name, "ms_per_vote": 1000 * sec / n_pairs, "ratio": sec / base, "ratio_batched": sec / batched,
            "cpu_ms": cpu_ms, "cpu_ratio": cpu_ms / (1000 * statistics.median(cpu["in-process, batch 1"]) / n_pairs),
            "max_dp": max(abs(a.p_real - b.p_real) for a, b in zip(results[name], reference)),
        })
    return rows


def print_http(rows: list[dict], n_pairs: int) -> None:
    print(f"\n## HTTP judge vs in-process ({n_pairs} pairs, 640x480 JPEG, tiny LLaVA, "
          f"{os.cpu_count()} CPUs, torch threads {__import__('torch').get_num_threads()})")
    print("| path | wall ms / vote | wall ratio to in-process batch 1 | to batch 8 | CPU ms / vote (client + server) "
          "| CPU ratio to in-process batch 1 | max abs p_real diff |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['ms_per_vote']:.1f} | {r['ratio']:.2f} | {r['ratio_batched']:.2f} "
              f"| {r['cpu_ms']:.1f} | {r['cpu_ratio']:.2f} | {r['max_dp']:.1e} |")
    base = next(r for r in rows if r["path"] == "in-process, batch 1")
    for r in rows:
        if r["path"].startswith("HTTP"):
            print(f"overhead per vote ({r['path']}): wall {r['ms_per_vote'] - base['ms_per_vote']:+.1f} ms, "
                  f"CPU {r['cpu_ms'] - base['cpu_ms']:+.1f} ms")


def bench_rerun(server: bool) -> dict:
    """`unirain distill` on the demo config (fresh run folder), then the same command again: wall
    times of both CLI processes and the judge questions answered by the second (must be zero).
    `server`: against a running Prefect server (as deployments run), else each CLI process starts
    Prefect's embedded API (~10 s on 2 cores, paid by both runs)."""
    import socket
    import sqlite3

    from flows.demo import CONFIG, prepare
    from flows.serve import start_server, wait_healthy

    prepare(ROOT / "demo_run")
    run = Path(tempfile.mkdtemp(prefix="bench-rerun-")) / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(run.parent / ".prefect")  # a new database, as a user's first run gets
    proc = None
    if server:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = start_server(run.parent / ".server", "127.0.0.1", port)
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
        wait_healthy(env["PREFECT_API_URL"], proc)

    def distill() -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "flows.cli", "distill", "--config", str(CONFIG), "--run", str(run)],
                       env=env, check=True, capture_output=True)
        return time.perf_counter() - t

    def answers() -> int:
        with sqlite3.connect(run / "cache" / "judges" / "answers.sqlite") as db:
            return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    try:
        first = distill()
        before = answers()
        second = distill()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    return {"api": "running server" if server else "embedded (per process)", "first_s": first, "rerun_s": second,
            "ratio": second / first, "new_answers": answers() - before, "answers": before}


def print_rerun(rows: list[dict]) -> None:
    print("\n### Rerunning a completed distill (demo config, CLI processes)\n")
    print("| Prefect API | first run s | rerun s | rerun / first | judge answers after first | new answers on rerun |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['api']} | {r['first_s']:.1f} | {r['rerun_s']:.1f} | {r['ratio']:.2f} | {r['answers']} | {r['new_answers']} |")


def main(argv: list[str] | None = None) -> int:
    from flows.prefect_env import configure_offline

    configure_offline()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["http"], choices=["http", "cascade", "rerun"],
                    help="http: HTTP vs in-process judge; cascade: judge calls per candidate (benchmarks/vote_cascade.py)")
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads in each process (1: on a shared 2-core machine more threads spin-wait)")
    args = ap.parse_args(argv)
    if "http" in args.parts:
        print_http(bench_http(args.pairs, args.reps, args.concurrency, args.threads), args.pairs)
    if "cascade" in args.parts:
        from vote_cascade import bench_cascade, print_cascade  # this folder is on sys.path when run as a script

        print_cascade(*bench_cascade())
    if "rerun" in args.parts:
        print_rerun([bench_rerun(server=False), bench_rerun(server=True)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
