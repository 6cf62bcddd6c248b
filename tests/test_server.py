"""Against a real Prefect server, started once for this module the way users start it (`python -m
flows.serve`, i.e. `make serve`): the deployments of prefect.yaml run on a process worker, a completed
distill triggers train on its run folder, a failed one triggers nothing and `prefect flow-run retry`
resumes it without redoing finished shards, artifacts are readable through the client, and in headless Chromium
the funnel table, the charts, the rejects and the decision gallery render in the UI (every image loaded);
flow runs are named after stage and run folder, the trainer's log lines reach the train run's log.
Ctrl-C stops the worker, then the server.

Clients are pointed at this server explicitly (temporary settings, subprocess env): the session's
ephemeral test harness, used by other modules, is left alone.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from data_manifests import RunLayout, read_manifest, shard_files

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "tests" / "output"
TINY_TRAIN = dict(
    model={"type": "unirain", "dim": 8, "num_blocks": [1, 1], "heads": [1, 1], "num_refinement_blocks": 1,
           "expert_expansion": 1.0, "num_experts": 2, "top_k": 1},
    iters=2, batch_size=4, crop=32, warmup_iters=1, eval_every=1, val_fraction=0.3, val_crop=32, num_workers=0,
    log_every=1, ckpt_every=1, reweighting={"warmup_evals": 0}, device="cpu")
EARLY_STAGES = ("candidates", "gallery", "captions", "embeddings", "retrieval")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    proc: subprocess.Popen
    api_url: str
    ui_url: str
    lines: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {**os.environ, "PREFECT_API_URL": self.api_url}

    @contextlib.contextmanager
    def client(self):
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api_url}):
            with get_client(sync_client=True) as client:
                yield client

    def stop(self, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        return self.proc.wait(timeout)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    OUTPUT.mkdir(exist_ok=True)  # screenshots of what the browser saw
    port = _free_port()
    home = tmp_path_factory.mktemp("prefect-server")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_WORKER_QUERY_SECONDS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "flows.serve", "--port", str(port), "--home", str(home)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server = Served(proc, f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}")
    ready = threading.Event()

    def read():
        for line in proc.stdout:
            server.lines.append(line.rstrip())
            if "serve: UI:" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 300
    while not ready.wait(1) and proc.poll() is None and time.monotonic() < deadline:
        pass
    if not ready.is_set():
        server.stop(60)
        logs = "\n".join(f"{p.name}:\n{p.read_text()[-3000:]}" for p in sorted((home / "logs").glob("*.log")))
        pytest.fail("make serve did not come up:\n" + "\n".join(server.lines) + "\n" + logs)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_models):
    """8 synthetic pairs (2 shards) and a stray rainy image, 6 gallery images, a good config and one whose
    judges are down."""
    from tasks.offline.synth import synthesize_gallery, synthesize_paired

    root = tmp_path_factory.mktemp("served-data")
    synthesize_paired(root / "paired", per_type=2, seed=3, size=(96, 96))
    synthesize_gallery(root / "gallery", n=6, seed=4, size=(96, 96))
    stray = root / "paired" / "drs" / "input"  # a rainy image without its clean twin: one ingest reject
    (stray / "drs_09999.png").write_bytes((stray / "drs_00000.png").read_bytes())
    cfg = yaml.safe_load(tiny_models.config_path.read_text())
    cfg.update(sources=[f"unirain={root / 'paired'}"], gallery=[str(root / "gallery")], train=TINY_TRAIN)
    good = yaml.safe_dump(cfg)
    dead = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there: the vote stage fails at once
    cfg["models"] = {**cfg["models"], "judges": [{"backend": "vllm", "name": f"judge-{c}", "options": {"base_url": dead}}
                                                 for c in "abc"]}
    (root / "good.yaml").write_text(good)
    (root / "broken.yaml").write_text(yaml.safe_dump(cfg))
    return root, good


@pytest.fixture(scope="module")
def distills(served, data):
    """Both distill runs submitted at once through the deployment (the worker runs them side by side)."""
    from prefect.deployments import run_deployment

    root, _ = data
    with served.client():
        good = run_deployment("distill/distill", parameters={"run": str(root / "good-run"), "config": str(root / "good.yaml")},
                              timeout=0)
        broken = run_deployment("distill/distill", parameters={"run": str(root / "broken-run"),
                                                               "config": str(root / "broken.yaml")}, timeout=0)
        # a stage deployment on its own: run folder + config path are all it needs
        ingest = run_deployment("stage/ingest", parameters={"run": str(root / "ingest-only"),
                                                                   "config": str(root / "good.yaml")}, timeout=0)
    return {"good": good.id, "broken": broken.id, "ingest": ingest.id}


def wait_for_run(served: Served, run_id, states: set[str], timeout: float = 240):
    deadline = time.monotonic() + timeout
    with served.client() as client:
        while True:
            run = client.read_flow_run(run_id)
            if run.state and run.state.type.value in states:
                return run
            assert time.monotonic() < deadline, f"flow run {run.name} still {run.state.name if run.state else None}"
            time.sleep(1)


def train_runs(served: Served, run_folder: Path) -> list:
    """Flow runs of the train deployment started for `run_folder`, oldest first."""
    with served.client() as client:
        deployment = client.read_deployment_by_name("train/train")
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
    return sorted((r for r in runs if r.parameters.get("run") == str(run_folder)), key=lambda r: r.created)


def wait_for_train(served: Served, run_folder: Path, timeout: float = 120) -> list:
    deadline = time.monotonic() + timeout
    while not (runs := train_runs(served, run_folder)):
        assert time.monotonic() < deadline, f"no train run was triggered for {run_folder}"
        time.sleep(1)
    return runs


def client_deployments(served: Served) -> list:
    with served.client() as client:
        return client.read_deployments()


def test_deployments_come_from_prefect_yaml(served):
    with served.client() as client:
        names = {f"{client.read_flow(d.flow_id).name}/{d.name}" for d in client.read_deployments()}
        distill = client.read_deployment_by_name("distill/distill")
    assert {"distill/distill", "stage/ingest", "stage/caption", "stage/embed", "stage/retrieve", "stage/vote",
            "stage/select", "train/train", "evaluate/evaluate"} <= names
    for deployment in client_deployments(served):  # the UI's form: every run/config field is described
        props = deployment.parameter_openapi_schema["properties"]
        assert props["run"].get("description") and props["config"].get("description"), deployment.name
    props = distill.parameter_openapi_schema["properties"]
    assert set(distill.parameter_openapi_schema["required"]) == {"run", "config"}
    assert props["until"]["default"] == "select" and "retrieve" in json.dumps(props["until"])


def test_a_stage_deployment_runs_from_a_run_folder_and_a_config(served, data, distills):
    root, _ = data
    run = wait_for_run(served, distills["ingest"], {"COMPLETED", "FAILED", "CRASHED"})
    assert run.state.type.value == "COMPLETED", run.state.message
    layout = RunLayout.at(root / "ingest-only")
    assert len(read_manifest(layout.manifest("candidates"), "candidates")) == 8
    assert len(read_manifest(layout.manifest("gallery"), "gallery")) == 6
    assert not layout.manifest("captions").exists() or not shard_files(layout.manifest("captions"))


def test_completed_distill_triggers_train_on_its_run_folder(served, data, distills):
    root, _ = data
    run = wait_for_run(served, distills["good"], {"COMPLETED", "FAILED", "CRASHED"})
    assert run.state.type.value == "COMPLETED", run.state.message
    layout = RunLayout.at(root / "good-run")
    assert len(read_manifest(layout.manifest("distilled"), "distilled")) > 0
    (train,) = wait_for_train(served, layout.root)
    assert train.parameters == {"run": str(layout.root), "config": str(root / "good.yaml"), "require_distilled": True}
    train = wait_for_run(served, train.id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=180)
    assert train.state.type.value == "COMPLETED", train.state.message
    assert json.loads((layout.root / "checkpoints" / "latest.json").read_text())  # trained inside that folder


def test_artifacts_readable_through_the_client(served, data, distills):
    from prefect.client.schemas.filters import (
        ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterParentFlowRunId,
    )

    from flows.artifacts import artifact_key

    root, _ = data
    wait_for_run(served, distills["good"], {"COMPLETED"})
    layout = RunLayout.at(root / "good-run")
    with served.client() as client:
        versions = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key(layout, "funnel")])))
        latest = {a.key: a for a in client.read_latest_artifacts(limit=200)}
    assert len(versions) >= 6  # a new version after every stage, one key
    funnel = max(versions, key=lambda a: a.created)
    rows = json.loads(funnel.data)
    by_stage = {(r["source"], r["stage"]): r for r in rows}
    n_distilled = len(read_manifest(layout.manifest("distilled"), "distilled"))
    assert by_stage[("unirain", "ingest")]["kept"] == 8 and by_stage[("unirain", "select")]["kept"] == n_distilled
    for kind in ("candidates-manifest", "retrieval-preview", "vote-tallies", "vote-agreement", "distilled-preview"):
        assert artifact_key(layout, kind) in latest, kind
    manifest = latest[artifact_key(layout, "distilled-manifest")].data  # the folder as text: browsers refuse file://
    assert str(layout.manifest("distilled")) in manifest and "file://" not in manifest
    assert not any("file://" in str(a.data) for a in latest.values() if a.key.startswith(artifact_key(layout, "")))
    with served.client() as client:  # flow runs named after the stage and the run folder
        assert client.read_flow_run(distills["good"]).name == "distill · good-run"
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[distills["good"]])))
    assert {r.name for r in children} >= {f"{s} · good-run" for s in ("ingest", "caption", "vote", "select")}


def test_funnel_table_renders_in_the_ui(served, data, distills):
    from flows.artifacts import artifact_key

    from .browser import body_text, browser, wait_for

    root, _ = data
    wait_for_run(served, distills["good"], {"COMPLETED"})
    layout = RunLayout.at(root / "good-run")
    with served.client() as client:
        (funnel,) = [a for a in client.read_latest_artifacts(limit=200) if a.key == artifact_key(layout, "funnel")]
    rows = json.loads(funnel.data)
    wanted = [str(r["source"]) for r in rows] + [r["stage"] for r in rows] + ["kept", "rejected"]
    with browser() as b:
        # the latest version of the run's funnel (a key's own page is the timeline of its versions)
        b.get(f"{served.ui_url}/artifacts/artifact/{funnel.latest_id}")
        text = wait_for(b, lambda b: (lambda t: t if all(w in t for w in wanted) else None)(body_text(b))) or body_text(b)
        b.save_screenshot(str(OUTPUT / "funnel_artifact.png"))
    assert funnel.key in text
    missing = [w for w in wanted if w not in text]
    assert not missing, f"not on the page: {missing}\n{text[:2000]}"
    select_row = next(r for r in rows if r["stage"] == "select")
    assert f"select\n{select_row['kept']}" in text or f"select {select_row['kept']}" in text


def test_charts_rejects_and_decision_gallery_render_in_the_ui(served, data, distills):
    """What the UI shows is the artifact itself: every chart and thumbnail is an <img> that has loaded
    (a blocked or broken image has natural width 0), the rejects and the gallery read as text."""
    from flows.artifacts import artifact_key
    from flows.gallery import decision_gallery, read_rejects

    from .browser import all_loaded, body_text, browser, images, wait_for

    root, _ = data
    wait_for_run(served, distills["good"], {"COMPLETED"})
    layout = RunLayout.at(root / "good-run")
    with served.client() as client:
        latest = {a.key: a for a in client.read_latest_artifacts(limit=200)}
    decisions = decision_gallery(layout)
    rejects = read_rejects(layout)
    assert len(rejects), "the data fixture makes an ingest reject"
    pages = {"select-charts": (2, ["p_real.png", "retrieval_scores.png"]),
             "decision-gallery": (2 * len(decisions), ["outcome", "real reference", "judges (p_real)", decisions[0].pair_id[:12]]),
             "rejects": (0, ["By stage and reason", *rejects["reason"].unique()])}
    seen = {}
    with browser() as b:
        for kind, (n_images, words) in pages.items():
            artifact = latest[artifact_key(layout, kind)]
            assert len(artifact.data) < 3_000_000, (kind, len(artifact.data))  # a few MB at most
            b.get(f"{served.ui_url}/artifacts/artifact/{artifact.latest_id}")
            ready = lambda b: all(w in body_text(b) for w in words) and all_loaded(images(b) and [  # noqa: E731
                i for i in images(b) if i[0].startswith("data:image/")] or [[None, True, 1]], max(n_images, 1))
            wait_for(b, ready, timeout=60)
            seen[kind] = ([i for i in images(b) if i[0].startswith("data:image/")], body_text(b))
            b.save_screenshot(str(OUTPUT / f"{kind}_artifact.png"))
    for kind, (n_images, words) in pages.items():
        imgs, text = seen[kind]
        assert len(imgs) == n_images and all(done and width > 0 for _, done, width in imgs), (kind, imgs)
        missing = [w for w in words if w not in text]
        assert not missing, f"{kind}: not on the page: {missing}\n{text[:1500]}"


def test_train_run_shows_its_log_lines_and_its_chart_in_the_ui(served, data, distills):
    """The trainer's `unirain.*` log lines are in the triggered train run's log (what the UI shows), and
    the training report renders `training_history.png` inline."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from flows.artifacts import artifact_key

    from .browser import all_loaded, body_text, browser, images, wait_for

    root, _ = data
    wait_for_run(served, distills["good"], {"COMPLETED"})
    layout = RunLayout.at(root / "good-run")
    (train,) = wait_for_train(served, layout.root)
    train = wait_for_run(served, train.id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=180)
    assert train.name == "train · good-run"
    with served.client() as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[train.id])))
        report = next(a for a in client.read_latest_artifacts(limit=200) if a.key == artifact_key(layout, "training-report"))
    ours = [log for log in logs if log.name.startswith(("unirain.", "unirain_model."))]
    assert ours, "no unirain log line in the train run's log:\n" + "\n".join(f"{l.name}: {l.message}" for l in logs)
    with browser() as b:
        b.get(f"{served.ui_url}/artifacts/artifact/{report.latest_id}")
        charts = lambda b: [i for i in images(b) if i[0].startswith("data:image/")]  # noqa: E731
        wait_for(b, lambda b: "Training" in body_text(b) and all_loaded(charts(b)), timeout=60)
        imgs = charts(b)
        b.save_screenshot(str(OUTPUT / "training-report_artifact.png"))
    assert len(imgs) == 1 and all_loaded(imgs), imgs


def test_failed_distill_triggers_nothing_and_retry_resumes(served, data, distills):
    root, good = data
    layout = RunLayout.at(root / "broken-run")
    failed = wait_for_run(served, distills["broken"], {"COMPLETED", "FAILED", "CRASHED"})
    assert failed.state.type.value == "FAILED" and "unreachable" in failed.state.message
    assert not shard_files(layout.manifest("votes"))
    finished = {p: p.stat().st_mtime_ns for stage in EARLY_STAGES for p in shard_files(layout.manifest(stage))}
    assert len(finished) == 2 * len(EARLY_STAGES)
    assert train_runs(served, layout.root) == []
    # the fix: the judges come back (here: the config now names the in-process tiny judges), then retry
    (root / "broken.yaml").write_text(good)
    retried_at = time.time()
    out = subprocess.run([sys.executable, "-m", "prefect", "flow-run", "retry", str(failed.id)], env=served.env(),
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    run = wait_for_run(served, failed.id, {"COMPLETED", "FAILED", "CRASHED"})
    assert run.state.type.value == "COMPLETED", run.state.message
    assert run.run_count >= 2  # the same flow run, run again
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # finished shards were not redone
    assert len(read_manifest(layout.manifest("votes"), "votes")) > 0
    assert shard_files(layout.manifest("distilled"))
    # the completion after the retry starts train once; the failure before it started nothing
    runs = wait_for_train(served, layout.root)
    time.sleep(3)
    runs = train_runs(served, layout.root)
    assert len(runs) == 1 and runs[0].created.timestamp() > retried_at - 1


def test_ctrl_c_stops_the_worker_then_the_server(served):
    assert served.stop() == 0
    lines = served.lines
    assert "serve: worker stopped" in lines and "serve: server stopped" in lines
    assert lines.index("serve: worker stopped") < lines.index("serve: server stopped")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(served.api_url.split(":")[2].split("/")[0])), timeout=2).close()
