"""Issue 10 item 14: a judge outage leaves pairs `undecided`; `unirain distill` says how many and that a
rerun asks again, and the training trigger (`require_distilled`) does not train on the incomplete run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
JUDGES = ("judge-a", "judge-b", "judge-c")


class _DownJudge(BaseHTTPRequestHandler):
    """Answers the start-up check (GET /models), then every question with HTTP 503: an outage."""

    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": j, "object": "model"} for j in JUDGES]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(503)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"busy")

    def log_message(self, *args):
        pass


@pytest.fixture
def down_judge():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DownJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_judge_outage_is_reported_and_blocks_the_training_trigger(tmp_path, tiny_models, down_judge):
    from tasks.offline.synth import synthesize_gallery, synthesize_paired

    synthesize_paired(tmp_path / "paired", per_type=2, seed=3, size=(64, 64))
    synthesize_gallery(tmp_path / "gallery", n=3, seed=4, size=(64, 64))
    cfg = yaml.safe_load(tiny_models.config_path.read_text())
    cfg.update(sources=[f"unirain={tmp_path / 'paired'}"], gallery=[str(tmp_path / "gallery")])
    cfg["ingest"]["num_shards"] = 1
    cfg["models"]["judges"] = [{"backend": "vllm", "name": j, "options": {"base_url": down_judge}} for j in JUDGES]
    cfg["vote"].update(retries=0, timeout_s=5)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(run / ".prefect")
    res = subprocess.run([sys.executable, "-m", "flows.cli", "distill", "--config", str(config), "--run", str(run)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    from tasks.undecided import undecided_pairs

    n = undecided_pairs(run)
    assert n > 0  # every question failed: no pair could be decided
    assert f"{n} pairs still undecided" in res.stdout and "asks the judges again" in res.stdout

    from flows.train import train_flow

    out = train_flow.fn(run=str(run), config=str(config), require_distilled=True)
    assert out == {"skipped": f"{n} undecided pairs"}
    assert not any((run / "checkpoints").glob("*"))  # nothing trained
